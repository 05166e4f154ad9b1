//! The playbook engine: the driver of the pure state machine in [`crate::playbook::machine`].
//!
//! An execution lives in the store (`ExecutionStore`): the machine's state as JSON, its
//! `version`, `due_at` (when a worker should look at it next) and a lease. The worker
//! ([`Engine::run`]) claims due executions a batch at a time with a lease, feeds each the event
//! it is due for (`Timer` when its durable timer passed, otherwise `Recover`, which re-derives
//! what was left to do), and for every decision: writes the new state over the version it
//! read, together with its audit entries, before performing any of the decision's actions that
//! leave a trace outside the execution, and feeds their results back. Decisions whose actions
//! only read (a condition checked against the store) are written with the next one, and the
//! last write of a drive frees the execution too: a wait that ends and a condition decided at
//! once cost one write.
//! A webhook step is marked in flight (`Sending`) and committed **before** the request leaves,
//! so a worker that dies mid-request leaves a step that `Recover` resolves by its kind — it is
//! never sent twice unless the step says `idempotent: true`.
//!
//! Operators' decisions (approve, reject, cancel — [`Engine::decide`]) are the same conditional
//! write: of two racing decisions exactly one commits, the other is refused.
//!
//! Durable timers: the worker sleeps until the earliest `due_at` in the store, or until woken
//! ([`Engine::wake`], fired when this process starts or changes an execution), or until a
//! manual clock moves. With nothing due it issues no query. On PostgreSQL, where another
//! replica may start an execution this process was not told about, it also looks again every
//! `recheck` (5 s by default).
//!
//! - [`audit`] — the audit entries of a transition.
//! - [`steps`] — the step drivers: webhooks (through the SSRF guard) and conditions.
//! - [`runs`] — script steps on agents, through the agent runs machinery.
//! - [`triggers`] — alert triggers, fired inside the monitor pass that opens the alert.

pub mod audit;
pub mod local;
pub mod notices;
pub mod runs;
pub mod secrets;
pub mod steps;
pub mod triggers;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::domain::{ServiceId, Timestamp};
use crate::playbook::breaker::{self, Breaker, Limits, Recent};
use crate::playbook::machine::{
    self, Action, Decision, Event, Execution, ExecutionStatus, Notice, OwnerId,
};
use crate::playbook::plan::InputProblems;
use crate::playbook::vars::{ContextVar, Scope};
use crate::playbook::{Catalog, DocumentError, Plan};
use crate::store::{
    Backend, ExecutionRecord, ExecutionTrigger, ExecutionWrite, NewExecution, PinnedVersion, Store,
    StoreError,
};

/// Who the worker's own transitions are recorded as.
pub const ENGINE_ACTOR: &str = "engine";

/// The engine's settings (`MEDIC_PLAYBOOK_*`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a claim holds an execution before another worker may take it over.
    pub lease: Duration,
    /// Executions claimed per query; also the most claimed executions waiting for a free
    /// driver.
    pub batch: u32,
    /// Steps run at once by one process (`MEDIC_PLAYBOOK_CONCURRENCY`): an execution runs one
    /// step at a time, so also the executions it drives at once.
    pub concurrency: usize,
    /// PostgreSQL only: how often to look for executions other replicas made due.
    pub recheck: Duration,
    /// How often the runs of a step with runs in flight are read back in case their ending
    /// was not announced (the sweep's `expired` and `lost`): an ending stored by a session
    /// makes the execution due at once ([`Engine::run_ended`]).
    pub run_poll: Duration,
    pub machine: machine::Settings,
    pub limits: Limits,
    /// The SSRF guard's settings for webhook steps and `http_ok` conditions.
    pub allowed_hosts: Vec<String>,
    pub allow_private_targets: bool,
    /// Where notices go for an execution without a service, or whose service and team have
    /// nothing configured (the deployment's default Slack channel and PagerDuty key).
    pub notify_defaults: Vec<crate::domain::Destination>,
    /// The keys that open stored secrets (`MEDIC_SECRETS_KEY`), for `${secrets.NAME}`.
    pub secrets: Option<crate::playbook::secrets::Keyring>,
    /// What the operator allowed to run on the server itself (`MEDIC_SERVER_SCRIPTS*`).
    pub server_scripts: Option<local::ServerScriptSettings>,
    /// The executor of those scripts, made when the server starts.
    pub server_executor: Option<local::ServerScripts>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            batch: 32,
            concurrency: 32,
            recheck: Duration::from_secs(5),
            run_poll: runs::RUN_POLL,
            machine: machine::Settings::default(),
            limits: Limits::default(),
            allowed_hosts: Vec::new(),
            allow_private_targets: false,
            notify_defaults: Vec::new(),
            secrets: None,
            server_scripts: None,
            server_executor: None,
        }
    }
}

/// What an execution is about, kept with it: the service and alert it concerns and its inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_name: Option<String>,
    /// The validated inputs, as substitution text.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The approved version of each script the playbook runs, pinned when it started.
    #[serde(default)]
    pub scripts: std::collections::BTreeMap<String, PinnedScript>,
    /// The API key that requested it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_key: Option<String>,
}

/// A script version an execution runs: approved when the execution started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedScript {
    pub script_id: i64,
    pub version: i32,
    pub sha256: String,
}

/// A request to start an execution of a pinned playbook version.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub pinned: PinnedVersion,
    pub service_id: Option<ServiceId>,
    pub alert_id: Option<i64>,
    pub trigger: ExecutionTrigger,
    /// Who asked, for the four-eyes rule: `owner:<key owner>` for an API key, `slack:<user
    /// id>` for a Slack user. They may not approve it.
    pub requested_by: Option<String>,
    /// The API key that asked (recorded with the execution and in its audit entry).
    pub requester_key: Option<String>,
    /// Who the start is recorded as in the audit log (defaults to `requested_by`).
    pub actor: Option<crate::store::Actor>,
    /// The variables given, checked against the playbook's `inputs`.
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// What a new execution's first state is built from, inside the transaction that inserts it
/// (the API's start, or a monitor pass that fires an alert trigger).
pub(crate) struct FirstState {
    pub plan: Arc<Plan>,
    pub settings: EngineSettings,
    pub requested_by: Option<OwnerId>,
    pub actor: crate::store::Actor,
    pub requester_key: Option<String>,
    pub trigger: ExecutionTrigger,
    pub service_id: Option<ServiceId>,
    pub now: Timestamp,
    /// Who hears of the start (and of a breaker opening); `None` queues no notice.
    pub notify: Option<StartNotices>,
    /// What the insert recorded, for the metrics once it committed.
    pub note: Arc<StartNote>,
}

/// What a start recorded: its first status and whether it opened the circuit breaker. Filled
/// in by [`FirstState::write`] inside the transaction and counted only once that committed
/// ([`StartNote::count`]), whatever started the execution (the API, the webhook, an alert).
#[derive(Debug, Default)]
pub(crate) struct StartNote(Mutex<Option<(&'static str, bool)>>);

impl StartNote {
    fn set(&self, status: &'static str, tripped: bool) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((status, tripped));
    }

    /// The first status recorded, if the build ran.
    pub fn status(&self) -> Option<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|(s, _)| s)
    }

    /// Counts a committed start: `medic_playbook_executions_started_total{status}`, a skip in
    /// `medic_playbook_executions_total{playbook, status="skipped"}`, and an opening of the
    /// circuit breaker in `medic_circuit_breaker_trips_total`.
    pub fn count(&self, playbook_name: &str) {
        let Some((status, tripped)) = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        else {
            return;
        };
        if tripped {
            metrics::counter!("medic_circuit_breaker_trips_total").increment(1);
        }
        if status == ExecutionStatus::Skipped.as_str() {
            metrics::counter!("medic_playbook_executions_total",
                "playbook" => crate::telemetry::playbook_label(playbook_name),
                "status" => "skipped")
            .increment(1);
        }
        metrics::counter!("medic_playbook_executions_started_total", "status" => status)
            .increment(1);
    }
}

/// The notices a start queues with its first state.
pub(crate) struct StartNotices {
    pub audience: notices::Audience,
    /// The execution's subject; its `id` is filled in by [`FirstState::write`].
    pub subject: notices::Subject,
}

impl FirstState {
    /// The first state of execution `id`, the circuit breaker counting `recent`.
    pub fn write(&self, id: i64, recent: &crate::store::RecentStarts) -> ExecutionWrite {
        let Self {
            plan,
            settings,
            requested_by,
            actor,
            requester_key,
            trigger,
            service_id,
            now,
            notify,
            note,
        } = self;
        let (now, service_id, trigger) = (*now, *service_id, *trigger);
        let breaker = breaker::check(
            now,
            settings.limits,
            plan.max_per_hour,
            Recent {
                playbook: &recent.playbook,
                service: &recent.service,
                global: &recent.global,
            },
            None,
        );
        match breaker {
            Breaker::Open { scope, .. } => {
                metrics::gauge!("medic_circuit_breaker_open", "scope" => scope.as_str()).set(1.0);
            }
            Breaker::Closed => {
                for scope in ["playbook", "service", "global"] {
                    metrics::gauge!("medic_circuit_breaker_open", "scope" => scope).set(0.0);
                }
            }
        }
        let Decision { execution, actions } = machine::start(
            plan,
            &id.to_string(),
            requested_by.clone(),
            now,
            settings.machine,
            breaker,
        );
        let mut entries = audit::entries(None, &execution, &actor.name, service_id, now);
        for e in &mut entries {
            e.on_behalf_of.clone_from(&actor.on_behalf_of);
            if let Some(d) = e.details.as_object_mut() {
                d.insert("trigger".into(), json!(trigger.as_str()));
                if let Some(k) = &requester_key {
                    d.insert("requester_key".into(), json!(k));
                }
            }
        }
        // Work to do at once (step 0 of an execution without approval): due now.
        let due = if has_work(&actions) {
            Some(now)
        } else {
            execution.wake_at
        };
        let mut write = to_write(&execution, due, None, now, entries);
        let mut tripped = false;
        if let Some(StartNotices { audience, subject }) = notify {
            let subject = notices::Subject {
                id,
                ..subject.clone()
            };
            write.notices = notices::notices(
                plan,
                &subject,
                None,
                &execution,
                &actions,
                None,
                audience,
                &Scope::new().masker(),
                now,
            );
            if let Breaker::Open {
                scope,
                count,
                limit,
                closes_at,
            } = breaker
            {
                let (starts, skipped) = match scope {
                    breaker::Scope::Playbook => (&recent.playbook, &recent.skipped_playbook),
                    breaker::Scope::Service => (&recent.service, &recent.skipped_service),
                    breaker::Scope::Global => (&recent.global, &recent.skipped_global),
                };
                if breaker::first_of_opening(starts, skipped) {
                    tripped = true;
                    write.notices.extend(notices::breaker_notice(
                        &subject,
                        scope.as_str(),
                        count,
                        limit,
                        closes_at,
                        audience,
                        now,
                    ));
                }
            }
        }
        note.set(execution.status.as_str(), tripped);
        write
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the playbook version is not valid: {0}")]
    Invalid(DocumentError),
    #[error("the variables do not fit the playbook's inputs")]
    Inputs(InputProblems),
    #[error("service {0} does not exist")]
    UnknownService(i64),
    /// A script step's script is not registered or has no approved version.
    #[error("{0}")]
    Script(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("execution not found")]
    NotFound,
    /// The machine refused the event (already decided, self-approval, terminal…).
    #[error("{0}")]
    Refused(machine::Refusal),
    /// Another decision committed first.
    #[error("the execution changed while deciding; another decision came first")]
    Lost,
    #[error("the stored execution cannot be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The catalog a stored version is re-read with: it was checked against the real one when it
/// was saved, and scripts and secrets are resolved again when a step uses them.
struct Pinned;

impl Catalog for Pinned {
    fn script_exists(&self, _: &str) -> bool {
        true
    }
    fn secret_exists(&self, _: &str) -> bool {
        true
    }
    fn server_scripts_enabled(&self) -> bool {
        true
    }
}

/// Parsed plans by content hash; versions never change, so entries never go stale.
#[derive(Default)]
struct Plans(Mutex<HashMap<String, Arc<Plan>>>);

/// Most plans kept parsed; the cache starts over when full.
const MAX_CACHED_PLANS: usize = 512;

impl Plans {
    fn get(&self, pinned: &PinnedVersion) -> Result<Arc<Plan>, DocumentError> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = map.get(&pinned.sha256) {
            return Ok(Arc::clone(p));
        }
        let plan = Arc::new(crate::playbook::validate(&pinned.source, &Pinned)?);
        if map.len() >= MAX_CACHED_PLANS {
            map.clear();
        }
        map.insert(pinned.sha256.clone(), Arc::clone(&plan));
        Ok(plan)
    }
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Clock,
    settings: EngineSettings,
    wake: Notify,
    /// This process's lease owner name.
    owner: String,
    plans: Plans,
    triggers: triggers::TriggerCache,
    /// Poked when notices were queued (the notice dispatcher waits on it).
    notices: Arc<Notify>,
    /// The executions this process is driving, each with whether a run of theirs ended
    /// meanwhile (their worker then makes them due again once it lets them go).
    driving: Mutex<HashMap<i64, bool>>,
    /// Executions a run of theirs ended for, to make due at the worker's next turn.
    hastened: Mutex<Vec<i64>>,
    /// What stops the script each execution runs on this server, while it runs: dropped when
    /// the execution is decided (cancelled), which kills the script's process group.
    stoppers: Mutex<HashMap<i64, medic_agent::exec::Stopper>>,
    /// Turns for starts ([`START_TURNS`]): a burst of starts waits here without a database
    /// connection, instead of holding the pool while the store runs them one at a time.
    starts: Semaphore,
    /// Told the agent of each run this engine queued, once it is stored (the gateway then
    /// sends it to that agent's session here at once instead of at its next queue poll).
    runs_queued: OnceLock<RunsQueued>,
}

/// Who is told of the agent of a run this engine queued ([`Engine::on_runs_queued`]).
type RunsQueued = Box<dyn Fn(&str) + Send + Sync>;

/// How many starts of this process may be in the store at once. Starts are serialized in the
/// store (the breaker counts what it decides on), so more would only queue there, each
/// holding a pool connection that the engine's own claims and writes then wait for; a few
/// keep the parts of a start outside its turn overlapping.
const START_TURNS: usize = 4;

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("owner", &self.0.owner)
            .finish_non_exhaustive()
    }
}

/// An execution read back: its record, its state and its plan.
struct Loaded {
    record: ExecutionRecord,
    exec: Execution,
    plan: Arc<Plan>,
    context: ExecutionContext,
    /// Who hears about it, read when it first has something to say.
    audience: Option<notices::Audience>,
    /// The secrets its plan uses, opened when it was loaded (never stored).
    secrets: std::collections::BTreeMap<String, crate::playbook::secrets::SecretValue>,
    /// The state as last written (`exec` may be ahead of it by staged decisions).
    committed: Execution,
    /// Decisions made since the last write, written together by the next one.
    staged: Staged,
    /// Until when this worker holds it (its claim or its last write).
    held_until: Option<Timestamp>,
}

/// What decisions made since an execution's last write add to the next one: their audit
/// entries and notices, and the actions that only report (logs and metrics), which run once
/// the write has committed.
#[derive(Default)]
struct Staged {
    decisions: usize,
    audit: Vec<crate::store::NewAuditEntry>,
    notices: Vec<crate::store::NewNotice>,
    reports: Vec<Action>,
}

/// How a write leaves the execution: still held by this worker (until when), or released
/// (due when).
#[derive(Clone, Copy)]
enum After {
    Held(Timestamp),
    Released(Option<Timestamp>),
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// What the operator allowed to run on the server itself, if anything.
    pub fn server_scripts(&self) -> Option<&local::ServerScriptSettings> {
        self.0.settings.server_scripts.as_ref()
    }

    pub fn new(store: Arc<dyn Store>, clock: Clock, settings: EngineSettings) -> Self {
        let owner = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        Self(Arc::new(Inner {
            store,
            clock,
            settings,
            wake: Notify::new(),
            owner,
            plans: Plans::default(),
            triggers: triggers::TriggerCache::default(),
            notices: Arc::new(Notify::new()),
            driving: Mutex::default(),
            hastened: Mutex::default(),
            stoppers: Mutex::default(),
            starts: Semaphore::new(START_TURNS),
            runs_queued: OnceLock::new(),
        }))
    }

    /// Run `run_id` ended and its ending is stored (on this replica): if it is a playbook
    /// step's run (`<execution>.<step>.<n>`), its execution is made due now and the worker
    /// woken, instead of waiting for the next look at its runs ([`EngineSettings::run_poll`],
    /// which remains for endings this replica is not told of: another replica's sessions
    /// tell their own engine, which makes the execution due in the shared store; the sweep
    /// of expired and lost runs tells nobody).
    pub fn run_ended(&self, run_id: &str) {
        let Some(id) = execution_of_run(run_id) else {
            return;
        };
        {
            let mut driving = lock(&self.0.driving);
            if let Some(ended) = driving.get_mut(&id) {
                // Its worker makes it due once it has let it go.
                *ended = true;
                return;
            }
        }
        lock(&self.0.hastened).push(id);
        self.wake();
    }

    /// Sets who is told of the agent of each run a script step queued (once; later calls are
    /// ignored): the gateway, which sends the run to that agent's session on this replica.
    pub fn on_runs_queued(&self, listener: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.0.runs_queued.set(Box::new(listener));
    }

    /// Makes the worker look at the store again (an execution was started or changed here).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Executions (and their start notices) were inserted outside the engine (a monitor pass
    /// that fired alert triggers): wakes the worker and the notice dispatcher.
    pub fn started_elsewhere(&self) {
        self.wake();
        self.0.notices.notify_one();
    }

    /// What the notice dispatcher waits on: poked when this process queued notices.
    pub fn notice_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.0.notices)
    }

    /// Sets `medic_playbook_executions_pending_approval` from the store.
    pub async fn count_pending(&self) {
        let filter = crate::store::ExecutionFilter {
            status: Some(ExecutionStatus::PendingApproval.as_str().to_owned()),
            ..crate::store::ExecutionFilter::default()
        };
        let page = crate::store::PageRequest {
            limit: 1,
            offset: 0,
        };
        match self.0.store.list_executions(&filter, page).await {
            Ok(p) => metrics::gauge!("medic_playbook_executions_pending_approval")
                .set(p.total_count as f64),
            Err(e) => tracing::warn!(error = %e, "cannot count executions awaiting approval"),
        }
    }

    /// The audience of `loaded`, read once.
    async fn audience_of(&self, loaded: &mut Loaded) -> notices::Audience {
        if let Some(a) = &loaded.audience {
            return a.clone();
        }
        let a = notices::audience(
            &*self.0.store,
            loaded.record.service_id,
            self.0.clock.now(),
            &self.0.settings.notify_defaults,
        )
        .await;
        loaded.audience = Some(a.clone());
        a
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.0.settings
    }

    /// The plan of a pinned version, parsed once per content hash.
    ///
    /// # Errors
    /// The version's text is not a valid playbook.
    pub fn plan(&self, pinned: &PinnedVersion) -> Result<Arc<Plan>, DocumentError> {
        self.0.plans.get(pinned)
    }

    /// Starts an execution: checks the inputs, counts recent starts for the circuit breaker
    /// and records the execution (`skipped` when the breaker is open) with its audit entry, in
    /// one transaction; the worker takes it from there.
    ///
    /// # Errors
    /// Invalid version or inputs, an unknown service, the store.
    pub async fn start(&self, req: StartRequest) -> Result<ExecutionRecord, StartError> {
        let plan = self.plan(&req.pinned).map_err(StartError::Invalid)?;
        let inputs = plan
            .resolve_inputs(&req.variables)
            .map_err(StartError::Inputs)?;
        let mut context = ExecutionContext {
            inputs,
            requester_key: req.requester_key.clone(),
            ..ExecutionContext::default()
        };
        if let Some(sid) = req.service_id {
            let service = self
                .0
                .store
                .get_service(sid)
                .await?
                .ok_or(StartError::UnknownService(sid.0))?;
            context.service_name = Some(service.service_name);
            context.heartbeat_name = Some(service.heartbeat_name);
        }
        for step in &plan.steps {
            if let crate::playbook::plan::StepKind::Script(sc) = &step.kind
                && !context.scripts.contains_key(&sc.script)
            {
                let pin = runs::approved_version(&*self.0.store, &sc.script)
                    .await
                    .map_err(StartError::Script)?;
                context.scripts.insert(sc.script.clone(), pin);
            }
        }
        let now = self.0.clock.now();
        let new = NewExecution {
            pinned: req.pinned.clone(),
            service_id: req.service_id,
            alert_id: req.alert_id,
            trigger: req.trigger,
            requested_by: req.requested_by.clone(),
            context: serde_json::to_value(&context).unwrap_or_else(|_| json!({})),
            at: now,
        };
        let settings = &self.0.settings;
        let from = now.plus_millis(-ms(breaker::WINDOW));
        let requested_by = req.requested_by.clone().map(OwnerId);
        let actor = req.actor.clone().unwrap_or_else(|| {
            crate::store::Actor::new(
                req.requested_by
                    .clone()
                    .unwrap_or_else(|| req.trigger.as_str().to_owned()),
            )
        });
        let requester_key = req.requester_key.clone();
        let trigger = req.trigger;
        let service_id = req.service_id;
        let audience = notices::audience(
            &*self.0.store,
            req.service_id,
            now,
            &settings.notify_defaults,
        )
        .await;
        let first = FirstState {
            plan: Arc::clone(&plan),
            settings: settings.clone(),
            requested_by,
            actor,
            requester_key,
            trigger,
            service_id,
            now,
            notify: Some(StartNotices {
                audience,
                subject: notices::Subject {
                    id: 0,
                    playbook_id: req.pinned.playbook_id,
                    playbook_name: req.pinned.name.clone(),
                    playbook_version: req.pinned.version,
                    trigger: req.trigger.as_str().to_owned(),
                    alert_id: req.alert_id,
                    requested_by: req.requested_by.clone(),
                },
            }),
            note: Arc::default(),
        };
        let build = |id: i64, recent: &crate::store::RecentStarts| first.write(id, recent);
        let record = {
            let _turn = self.0.starts.acquire().await;
            self.0.store.create_execution(&new, from, &build).await?
        };
        first.note.count(&record.playbook_name);
        if record.status == ExecutionStatus::PendingApproval.as_str() {
            self.count_pending().await;
        }
        self.0.notices.notify_one();
        self.wake();
        Ok(record)
    }

    /// Applies an operator's decision (approve, reject, cancel) as one conditional write.
    ///
    /// # Errors
    /// Unknown execution, refused by the machine, lost to another decision, the store.
    pub async fn decide(
        &self,
        id: i64,
        event: Event,
        actor: &str,
    ) -> Result<(ExecutionRecord, Execution), DecideError> {
        let record = self
            .0
            .store
            .get_execution(id)
            .await?
            .ok_or(DecideError::NotFound)?;
        let mut loaded = self.load(record).map_err(DecideError::Corrupt)?;
        self.open_secrets(&mut loaded).await?;
        // A reason is kept in the state, the audit log and the notices: masked like any text.
        let event = match event {
            Event::Reject { by, reason } => Event::Reject {
                by,
                reason: Self::scope(&loaded, &loaded.exec).masker().mask(&reason),
            },
            Event::Cancel { by, reason } => Event::Cancel {
                by,
                reason: Self::scope(&loaded, &loaded.exec).masker().mask(&reason),
            },
            other => other,
        };
        if let (Event::Approve { by }, Some(requester)) = (&event, &loaded.exec.requested_by) {
            // Four-eyes by owner: the requester and the approver are compared as owners (a key's
            // owner, a Slack user), never as keys.
            let requester = crate::domain::apikey::OwnerId(requester.0.clone());
            if !crate::domain::apikey::second_pair_of_eyes(
                &requester,
                &crate::domain::apikey::OwnerId(by.0.clone()),
            ) {
                return Err(DecideError::Refused(machine::Refusal::SelfApproval));
            }
        }
        let now = self.0.clock.now();
        let decision = machine::decide(&loaded.plan, &loaded.exec, now, event)
            .map_err(DecideError::Refused)?;
        let queued = if notices::has_notices(&decision.actions) {
            let audience = self.audience_of(&mut loaded).await;
            let masker = Self::scope(&loaded, &decision.execution).masker();
            notices::notices(
                &loaded.plan,
                &notices::Subject::from(&loaded.record),
                Some(&loaded.exec),
                &decision.execution,
                &decision.actions,
                Some(actor),
                &audience,
                &masker,
                now,
            )
        } else {
            Vec::new()
        };
        let entries = audit::entries(
            Some(&loaded.exec),
            &decision.execution,
            actor,
            loaded.record.service_id,
            now,
        );
        // The worker re-derives the actions (`Recover`) when it claims the execution.
        let due = if decision.execution.status.is_terminal() {
            None
        } else if has_work(&decision.actions) {
            Some(now)
        } else {
            decision.execution.wake_at
        };
        let mut write = to_write(&decision.execution, due, None, now, entries);
        write.notices = queued;
        let won = self
            .0
            .store
            .update_execution(id, loaded.record.version, &write)
            .await?;
        if !won {
            return Err(DecideError::Lost);
        }
        if decision.execution.status.is_terminal() {
            // A script it runs on this server stops now (its process group is killed).
            lock(&self.0.stoppers).remove(&id);
        }
        if !write.notices.is_empty() {
            self.0.notices.notify_one();
        }
        self.count_pending().await;
        note_steps(&loaded.exec, &decision.execution);
        for a in &decision.actions {
            match a {
                Action::Notify(n) => notice(&loaded.record, &decision.execution, *n),
                // A cancelled execution's queued runs are never sent.
                Action::CancelRuns { run_ids } => self.cancel_runs(run_ids).await,
                _ => {}
            }
        }
        self.wake();
        let record = self
            .0
            .store
            .get_execution(id)
            .await?
            .ok_or(DecideError::NotFound)?;
        Ok((record, decision.execution))
    }

    /// Queued runs of a step that no longer needs them expire now and are never sent; runs an
    /// agent already has go on to their end (their results are ignored).
    async fn cancel_runs(&self, run_ids: &[String]) {
        let now = self.0.clock.now();
        if let Err(e) = self.0.store.expire_queued_agent_runs(run_ids, now).await {
            tracing::warn!(error = %e, "cannot cancel queued runs");
        }
    }

    fn load(&self, record: ExecutionRecord) -> Result<Loaded, String> {
        let exec: Execution = serde_json::from_value(record.state.clone())
            .map_err(|e| format!("execution {}: state: {e}", record.id))?;
        let plan = self
            .plan(&record.pinned())
            .map_err(|e| format!("execution {}: playbook version: {e}", record.id))?;
        let context: ExecutionContext =
            serde_json::from_value(record.context.clone()).unwrap_or_default();
        let held_until = record.lease_until;
        Ok(Loaded {
            record,
            committed: exec.clone(),
            exec,
            plan,
            context,
            audience: None,
            secrets: std::collections::BTreeMap::new(),
            staged: Staged::default(),
            held_until,
        })
    }

    /// Opens the secrets `loaded`'s plan uses (none are read for a plan that uses none).
    async fn open_secrets(&self, loaded: &mut Loaded) -> Result<(), StoreError> {
        if loaded.plan.secrets.is_empty() || loaded.exec.status.is_terminal() {
            return Ok(());
        }
        loaded.secrets = secrets::open(
            &*self.0.store,
            self.0.settings.secrets.as_ref(),
            loaded.plan.secrets.iter().map(String::as_str),
        )
        .await?;
        Ok(())
    }

    /// The substitution scope of `loaded` as it stands.
    fn scope(loaded: &Loaded, exec: &Execution) -> Scope {
        let r = &loaded.record;
        let c = &loaded.context;
        let mut scope = Scope::new()
            .context(ContextVar::ExecutionId, r.id.to_string())
            .context(ContextVar::PlaybookName, r.playbook_name.clone())
            .context(ContextVar::PlaybookVersion, r.playbook_version.to_string())
            .context(ContextVar::Trigger, r.trigger.clone())
            .inputs(c.inputs.clone())
            .secrets(loaded.secrets.clone());
        if let Some(s) = r.service_id {
            scope = scope.context(ContextVar::ServiceId, s.0.to_string());
        }
        if let Some(n) = &c.service_name {
            scope = scope.context(ContextVar::ServiceName, n.clone());
        }
        if let Some(n) = &c.heartbeat_name {
            scope = scope.context(ContextVar::HeartbeatName, n.clone());
        }
        if let Some(a) = r.alert_id {
            scope = scope.context(ContextVar::AlertId, a.to_string());
        }
        exec.scope_steps(scope)
    }

    /// Runs the worker until `stop`: claims due executions and drives each on its own task.
    pub async fn run(self, stop: CancellationToken) {
        let store = Arc::clone(&self.0.store);
        let clock = self.0.clock.clone();
        let settings = self.0.settings.clone();
        let lease = ms(settings.lease);
        if store.backend() == Backend::Sqlite {
            // One process per SQLite database: leases in it belong to a process that is gone.
            match store.release_all_execution_leases(clock.now()).await {
                Ok(n) if n > 0 => tracing::info!(executions = n, "resuming executions"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "could not resume executions"),
            }
        }
        let recheck = (store.backend() == Backend::Postgres).then_some(settings.recheck);
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let tasks = TaskTracker::new();
        let mut ticks = clock.ticks();
        tracing::info!(owner = %self.0.owner, "playbook engine started");
        self.count_pending().await;
        // Claimed executions waiting for a free slot. Claims are made a batch at a time, and
        // only once half a batch fits in this line: under load a finishing execution does not
        // cost a claim of its own.
        let batch = settings.batch.max(1);
        let mut ready: VecDeque<ExecutionRecord> = VecDeque::new();
        loop {
            let now = clock.now();
            let hastened = std::mem::take(&mut *lock(&self.0.hastened));
            if let Err(e) = store.hasten_executions(&hastened, now).await {
                // Their next look at their runs finds the endings.
                tracing::warn!(error = %e, "cannot make executions due after their runs ended");
            }
            while !ready.is_empty() {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    break;
                };
                let Some(record) = ready.pop_front() else {
                    break;
                };
                // A claim that waited in line for half its lease is handed back, its timer
                // unchanged, rather than driven with little of its lease left.
                if record
                    .lease_until
                    .is_some_and(|u| u.millis() - now.millis() < lease / 2)
                {
                    drop(permit);
                    self.hand_back(&record).await;
                    continue;
                }
                let engine = self.clone();
                tasks.spawn(async move {
                    engine.drive(record).await;
                    drop(permit);
                    engine.wake();
                });
            }
            let room = batch.saturating_sub(u32::try_from(ready.len()).unwrap_or(u32::MAX));
            let pause = if room < batch.div_ceil(2) {
                // The line is full: a finishing task wakes us.
                Duration::from_secs(3600)
            } else {
                match store
                    .claim_executions(&self.0.owner, now, now.plus_millis(lease), room)
                    .await
                {
                    Ok(claimed) if !claimed.is_empty() => {
                        ready.extend(claimed);
                        Duration::ZERO
                    }
                    Ok(_) => match store.next_execution_due().await {
                        Ok(next) => {
                            let wait = next.map_or(Duration::MAX, |t| {
                                Duration::from_millis(
                                    u64::try_from((t.millis() - clock.now().millis()).max(0))
                                        .unwrap_or(0),
                                )
                            });
                            let wait = recheck.map_or(wait, |r| wait.min(r));
                            wait.min(Duration::from_secs(24 * 3600))
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reading the next execution timer failed");
                            Duration::from_secs(1)
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "claiming executions failed");
                        Duration::from_secs(1)
                    }
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.0.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = ticks.advanced() => {}
            }
        }
        for record in ready {
            self.hand_back(&record).await;
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!("playbook engine stopped");
    }

    /// Frees a claimed execution that was not driven, due when it was.
    async fn hand_back(&self, record: &ExecutionRecord) {
        if let Err(e) = self
            .0
            .store
            .release_execution(record.id, &self.0.owner, record.due_at)
            .await
        {
            tracing::warn!(execution = record.id, error = %e, "could not release an execution");
        }
    }

    /// Drives one claimed execution until it has nothing to do at once, then frees it.
    async fn drive(&self, record: ExecutionRecord) {
        let id = record.id;
        lock(&self.0.driving).insert(id, false);
        self.drive_and_release(record).await;
        if lock(&self.0.driving).remove(&id) == Some(true) {
            // A run ended while it was driven: due again now, not at its next look.
            lock(&self.0.hastened).push(id);
            self.wake();
        }
    }

    async fn drive_and_release(&self, record: ExecutionRecord) {
        let id = record.id;
        let ending = match self.load(record) {
            Ok(mut loaded) => match self.open_secrets(&mut loaded).await {
                Ok(()) => self.drive_loaded(loaded).await,
                // Looked at again shortly (the store is having trouble).
                Err(e) => {
                    tracing::warn!(execution = id, error = %e, "cannot read the secrets");
                    Ending::Release(Some(self.0.clock.now().plus_millis(1000)))
                }
            },
            Err(e) => {
                tracing::error!(execution = id, error = %e, "cannot drive execution");
                Ending::Release(None)
            }
        };
        let Ending::Release(due) = ending else { return };
        if let Err(e) = self.0.store.release_execution(id, &self.0.owner, due).await {
            tracing::warn!(execution = id, error = %e, "could not release an execution");
        }
    }

    /// Feeds events until nothing is left to do at once, then writes what is staged and frees
    /// the execution in the same write, due at its durable timer. When driving stopped early
    /// (a store error, or another change came first) the caller releases it due now, so that
    /// the next claim recovers it (after another change the release writes nothing).
    ///
    /// Decisions are written before any action that leaves a trace outside the execution (a
    /// webhook or server script marked in flight first, runs queued, runs cancelled); the ones
    /// in between — a timer that ends a wait and begins the next step, a condition checked
    /// against the store — are staged and written with the next, each with its own audit
    /// entries, in one transaction. A worker that dies before that write loses only decisions
    /// the next claim makes again.
    async fn drive_loaded(&self, mut loaded: Loaded) -> Ending {
        let now = self.0.clock.now();
        let first = if loaded.exec.wake_at.is_some_and(|w| w <= now) {
            Event::Timer
        } else {
            Event::Recover
        };
        let mut events = VecDeque::from([first]);
        while let Some(event) = events.pop_front() {
            let now = self.0.clock.now();
            let was_timer = event == Event::Timer;
            let decision = match machine::decide(&loaded.plan, &loaded.exec, now, event) {
                Ok(d) => d,
                Err(machine::Refusal::Stale(_) | machine::Refusal::NotDue) if was_timer => {
                    events.push_back(Event::Recover);
                    continue;
                }
                Err(r) => {
                    tracing::debug!(execution = loaded.record.id, refusal = %r, "event refused");
                    continue;
                }
            };
            let actions = self.stage(&mut loaded, decision, now).await;
            for action in actions {
                match self.perform(&mut loaded, action).await {
                    Ok(more) => events.extend(more),
                    Err(Lost) => return Ending::Release(Some(self.0.clock.now())),
                }
            }
        }
        let now = self.0.clock.now();
        let runs_in_flight = loaded
            .exec
            .current()
            .is_some_and(|s| s.runs.iter().any(|r| r.dispatched && r.outcome.is_none()));
        let due = if loaded.exec.status.is_terminal() {
            None
        } else if runs_in_flight {
            // Look at the runs again soon (`Recover` re-reads them).
            let poll = now.plus_millis(ms(self.0.settings.run_poll));
            Some(loaded.exec.wake_at.map_or(poll, |w| w.min(poll)))
        } else {
            loaded.exec.wake_at
        };
        if loaded.staged.decisions == 0 {
            return Ending::Release(due);
        }
        if self.write(&mut loaded, now, After::Released(due)).await {
            Ending::Released
        } else {
            Ending::Release(Some(self.0.clock.now()))
        }
    }

    /// Takes `decision` as `loaded`'s state, staging its audit entries and notices for the
    /// next write; answers the actions to perform (the ones that only report wait for the
    /// write).
    async fn stage(&self, loaded: &mut Loaded, decision: Decision, now: Timestamp) -> Vec<Action> {
        let Decision {
            mut execution,
            actions,
        } = decision;
        execution.version = loaded.exec.version;
        if execution == loaded.exec {
            // Nothing changed (a `Recover` that only re-derives its actions): nothing to write.
            return actions;
        }
        execution.version += 1;
        if notices::has_notices(&actions) {
            let audience = self.audience_of(loaded).await;
            let masker = Self::scope(loaded, &execution).masker();
            let queued = notices::notices(
                &loaded.plan,
                &notices::Subject::from(&loaded.record),
                Some(&loaded.exec),
                &execution,
                &actions,
                None,
                &audience,
                &masker,
                now,
            );
            loaded.staged.notices.extend(queued);
        }
        let entries = audit::entries(
            Some(&loaded.exec),
            &execution,
            ENGINE_ACTOR,
            loaded.record.service_id,
            now,
        );
        loaded.staged.audit.extend(entries);
        loaded.staged.decisions += 1;
        loaded.exec = execution;
        let (reports, work): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Notify(_) | Action::Escalate { .. }));
        loaded.staged.reports.extend(reports);
        work
    }

    /// Writes what is staged over the version `loaded` last wrote, leaving the execution as
    /// `after` says; `false` when another change came first (the execution is then someone
    /// else's) or the store failed.
    async fn write(&self, loaded: &mut Loaded, now: Timestamp, after: After) -> bool {
        let staged = std::mem::take(&mut loaded.staged);
        let (due, lease) = match after {
            // While held, due now: if this worker dies, the next claim after the lease
            // recovers it. Releasing sets the real timer.
            After::Held(until) => (
                (!loaded.exec.status.is_terminal()).then_some(now),
                Some((self.0.owner.clone(), until)),
            ),
            After::Released(due) => (due, None),
        };
        let mut write = to_write(&loaded.exec, due, lease, now, staged.audit);
        write.notices = staged.notices;
        match self
            .0
            .store
            .update_execution(loaded.record.id, loaded.record.version, &write)
            .await
        {
            Ok(true) => {
                if !write.notices.is_empty() {
                    self.0.notices.notify_one();
                }
                loaded.record.version = write.version;
                let pending = ExecutionStatus::PendingApproval;
                if (loaded.committed.status == pending) != (loaded.exec.status == pending) {
                    self.count_pending().await;
                }
                note_steps(&loaded.committed, &loaded.exec);
                loaded.record.status.clone_from(&write.status);
                loaded.committed = loaded.exec.clone();
                loaded.held_until = match after {
                    After::Held(until) => Some(until),
                    After::Released(_) => None,
                };
                for report in staged.reports {
                    match report {
                        Action::Notify(n) => notice(&loaded.record, &loaded.exec, n),
                        Action::Escalate { step, reason } => {
                            tracing::warn!(execution = loaded.record.id, step, reason = %reason,
                                "execution escalated");
                            metrics::counter!("medic_playbook_escalations_total").increment(1);
                        }
                        _ => {}
                    }
                }
                true
            }
            Ok(false) => {
                tracing::info!(execution = loaded.record.id, "execution changed elsewhere");
                false
            }
            Err(e) => {
                tracing::error!(execution = loaded.record.id, error = %e, "cannot save execution");
                false
            }
        }
    }

    /// Writes what is staged, still holding the execution for a lease, before an action that
    /// leaves a trace outside it.
    async fn settle(&self, loaded: &mut Loaded) -> Result<(), Lost> {
        if loaded.staged.decisions == 0 {
            return Ok(());
        }
        let now = self.0.clock.now();
        let until = now.plus_millis(ms(self.0.settings.lease));
        if self.write(loaded, now, After::Held(until)).await {
            Ok(())
        } else {
            Err(Lost)
        }
    }

    /// Stages `decision` and writes it at once, holding the execution until `hold` (a step
    /// marked in flight before its request or script starts).
    async fn commit_in_flight(
        &self,
        loaded: &mut Loaded,
        decision: Decision,
        now: Timestamp,
        hold: Timestamp,
    ) -> Result<(), Lost> {
        let rest = self.stage(loaded, decision, now).await;
        debug_assert!(rest.is_empty(), "marking a step in flight has no actions");
        if self.write(loaded, now, After::Held(hold)).await {
            Ok(())
        } else {
            Err(Lost)
        }
    }

    /// Awaits `run` (a script on the server), reading execution `id` again every
    /// [`local::CANCEL_RECHECK`]: once it is no longer at `version` (another replica decided
    /// it), the script is stopped. A decision on this replica stops it at once
    /// ([`Engine::decide`]).
    async fn until_decided_elsewhere<F>(&self, id: i64, version: i64, run: F) -> F::Output
    where
        F: Future,
    {
        let mut run = std::pin::pin!(run);
        loop {
            tokio::select! {
                out = &mut run => return out,
                () = tokio::time::sleep(local::CANCEL_RECHECK) => {}
            }
            match self.0.store.get_execution(id).await {
                Ok(Some(r)) if r.version == version => {}
                Ok(_) => {
                    lock(&self.0.stoppers).remove(&id);
                }
                Err(e) => tracing::warn!(execution = id, error = %e, "cannot read the execution"),
            }
        }
    }

    /// Performs one action; the events its results are.
    async fn perform(&self, loaded: &mut Loaded, action: Action) -> Result<Vec<Event>, Lost> {
        let id = loaded.record.id;
        match action {
            Action::SendWebhook {
                step,
                idempotency_key,
                attempt,
            } => {
                let now = self.0.clock.now();
                let decision =
                    match machine::decide(&loaded.plan, &loaded.exec, now, Event::Sending { step })
                    {
                        Ok(d) => d,
                        Err(r) => {
                            tracing::warn!(execution = id, refusal = %r, "not sending");
                            return Ok(Vec::new());
                        }
                    };
                let timeout = match &loaded.plan.steps[step].kind {
                    crate::playbook::plan::StepKind::Webhook(w) => w.timeout,
                    _ => Duration::from_secs(30),
                };
                // Hold the execution for the whole request, so no other worker recovers it
                // while it is in flight.
                let hold = now.plus_millis(ms(timeout) + ms(self.0.settings.lease));
                self.commit_in_flight(loaded, decision, now, hold).await?;
                let scope = Self::scope(loaded, &loaded.exec);
                let outcome = steps::send_webhook(
                    &loaded.plan,
                    step,
                    &scope,
                    &idempotency_key,
                    attempt,
                    &self.0.settings,
                )
                .await;
                Ok(vec![Event::StepDone { step, outcome }])
            }
            Action::CheckCondition { step } => {
                // A request to another host may take its whole timeout: the step is written
                // running first. A check against the store is staged with its result.
                if matches!(&loaded.plan.steps[step].kind,
                    crate::playbook::plan::StepKind::Condition(c)
                        if matches!(c.check, crate::playbook::plan::Check::HttpOk { .. }))
                {
                    self.settle(loaded).await?;
                }
                let scope = Self::scope(loaded, &loaded.exec);
                let started = loaded.exec.steps.get(step).map(|s| s.started_at);
                let (met, detail) = steps::check_condition(
                    &*self.0.store,
                    &loaded.plan,
                    step,
                    &scope,
                    loaded.record.service_id,
                    loaded.record.alert_id,
                    started,
                    &self.0.settings,
                )
                .await;
                Ok(vec![Event::ConditionChecked { step, met, detail }])
            }
            Action::RunOnServer { step } => {
                let now = self.0.clock.now();
                let Ok(d) =
                    machine::decide(&loaded.plan, &loaded.exec, now, Event::Sending { step })
                else {
                    return Ok(Vec::new());
                };
                let timeout = match &loaded.plan.steps[step].kind {
                    crate::playbook::plan::StepKind::Script(s) => s.timeout,
                    _ => Duration::from_secs(30),
                };
                // Marked in flight (and held for the whole run) before the script starts, so it
                // never runs twice: after a crash the step ends `interrupted` instead.
                let hold = now.plus_millis(ms(timeout) + ms(self.0.settings.lease));
                self.commit_in_flight(loaded, d, now, hold).await?;
                let scope = Self::scope(loaded, &loaded.exec);
                let stop = match medic_agent::exec::stopper() {
                    Ok((stopper, stop)) => {
                        lock(&self.0.stoppers).insert(id, stopper);
                        Some(stop)
                    }
                    Err(e) => {
                        tracing::warn!(execution = id, error = %e,
                            "the script cannot be stopped early if the execution is cancelled");
                        None
                    }
                };
                let run = local::run_step(
                    self.0.settings.server_executor.as_ref(),
                    &*self.0.store,
                    &loaded.plan,
                    step,
                    id,
                    &scope,
                    &loaded.context.scripts,
                    stop,
                );
                let outcome = self
                    .until_decided_elsewhere(id, loaded.record.version, run)
                    .await;
                lock(&self.0.stoppers).remove(&id);
                Ok(vec![Event::StepDone { step, outcome }])
            }
            Action::ResolveTargets { step } => {
                match runs::resolve(&*self.0.store, &loaded.plan, step).await {
                    Ok(agents) => Ok(vec![Event::TargetsResolved { step, agents }]),
                    // Tried again at the next look (the execution stays due).
                    Err(e) => {
                        tracing::warn!(execution = id, error = %e, "cannot resolve targets");
                        Err(Lost)
                    }
                }
            }
            Action::DispatchRuns { step, runs } => {
                // The run ids are written before the runs are queued, so a restart queues
                // the same ones (queueing is idempotent by id), never others.
                self.settle(loaded).await?;
                let scope = Self::scope(loaded, &loaded.exec);
                let exec = runs::ForExecution {
                    id,
                    service_id: loaded.record.service_id,
                    scope: &scope,
                    now: self.0.clock.now(),
                    scripts: &loaded.context.scripts,
                };
                let agents: Vec<String> = runs.iter().map(|(agent, _)| agent.clone()).collect();
                let events = runs::dispatch(&*self.0.store, &loaded.plan, step, runs, &exec).await;
                if let Some(tell) = self.0.runs_queued.get() {
                    for agent in &agents {
                        tell(agent);
                    }
                }
                Ok(events)
            }
            Action::CancelRuns { run_ids } => {
                self.settle(loaded).await?;
                self.cancel_runs(&run_ids).await;
                Ok(Vec::new())
            }
            // Reported once the decision that asked for them is written (`write`).
            Action::Escalate { .. } | Action::Notify(_) => Ok(Vec::new()),
        }
    }
}

/// How a drive ended: the execution already freed by its last write, or still to free, due
/// when given.
enum Ending {
    Released,
    Release(Option<Timestamp>),
}

/// The execution a playbook step's run id (`<execution>.<step>.<n>`) belongs to.
fn execution_of_run(run_id: &str) -> Option<i64> {
    let mut parts = run_id.split('.');
    let id = parts.next()?.parse().ok()?;
    parts.next()?.parse::<usize>().ok()?;
    parts.next()?.parse::<usize>().ok()?;
    parts.next().is_none().then_some(id)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Another change committed first: the execution is no longer this worker's to drive.
struct Lost;

/// Whether `actions` hold work the worker must do at once (not just notices).
fn has_work(actions: &[Action]) -> bool {
    actions.iter().any(|a| !matches!(a, Action::Notify(_)))
}

fn to_write(
    exec: &Execution,
    due: Option<Timestamp>,
    lease: Option<(String, Timestamp)>,
    now: Timestamp,
    audit: Vec<crate::store::NewAuditEntry>,
) -> ExecutionWrite {
    ExecutionWrite {
        status: exec.status.as_str().to_owned(),
        version: i64::try_from(exec.version).unwrap_or(i64::MAX),
        state: serde_json::to_value(exec).unwrap_or_else(|_| json!({})),
        due_at: due,
        lease,
        finished_at: exec.finished_at,
        at: now,
        audit,
        notices: Vec::new(),
    }
}

/// A transition notice: logged and counted; an ending records the execution's duration. (The
/// Slack and webhook notices were queued with the transition: [`notices`].)
fn notice(record: &ExecutionRecord, exec: &Execution, n: Notice) {
    let name = match n {
        Notice::AwaitingApproval => "awaiting_approval",
        Notice::Started => "started",
        Notice::Completed => "completed",
        Notice::Failed => "failed",
        Notice::Cancelled => "cancelled",
        Notice::Expired => "expired",
        Notice::Skipped => "skipped",
    };
    if !matches!(n, Notice::AwaitingApproval | Notice::Started) {
        metrics::counter!("medic_playbook_executions_total",
            "playbook" => crate::telemetry::playbook_label(&record.playbook_name), "status" => name)
        .increment(1);
        if let Some(end) = exec.finished_at {
            let secs = (end.millis() - exec.created_at.millis()).max(0) as f64 / 1000.0;
            metrics::histogram!(crate::telemetry::PLAYBOOK_EXECUTION_SECONDS, "status" => name)
                .record(secs);
        }
    }
    tracing::info!(execution = record.id, playbook = %record.playbook_name, notice = name,
        "playbook execution");
}

/// Records the duration of every step that ended between `prev` and `next`.
fn note_steps(prev: &Execution, next: &Execution) {
    for s in &next.steps {
        let Some(end) = s.finished_at else { continue };
        let was_done = prev
            .steps
            .get(s.index)
            .is_some_and(|p| p.finished_at.is_some());
        if !was_done {
            let secs = (end.millis() - s.started_at.millis()).max(0) as f64 / 1000.0;
            metrics::histogram!(crate::telemetry::PLAYBOOK_STEP_SECONDS,
                "kind" => step_kind_label(&s.kind), "status" => s.status.as_str())
            .record(secs);
        }
    }
}

/// Step kinds are a fixed set; anything else is `other`.
fn step_kind_label(kind: &str) -> &'static str {
    match kind {
        "webhook" => "webhook",
        "script" => "script",
        "wait" => "wait",
        "condition" => "condition",
        _ => "other",
    }
}
