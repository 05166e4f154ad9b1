//! The playbook engine: the driver of the pure state machine in [`crate::playbook::machine`].
//!
//! An execution lives in the store (`ExecutionStore`): the machine's state as JSON, its
//! `version`, `due_at` (when a worker should look at it next) and a lease. The worker
//! ([`Engine::run`]) claims due executions with a lease, feeds each the event it is due for
//! (`Timer` when its durable timer passed, otherwise `Recover`, which re-derives what was left
//! to do), and for every decision: writes the new state over the version it read, together
//! with its audit entries, then performs the decision's actions and feeds their results back.
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
use std::sync::{Arc, Mutex};
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
    /// Executions claimed per query.
    pub batch: u32,
    /// Steps run at once by one process (`MEDIC_PLAYBOOK_CONCURRENCY`): an execution runs one
    /// step at a time, so also the executions it drives at once.
    pub concurrency: usize,
    /// PostgreSQL only: how often to look for executions other replicas made due.
    pub recheck: Duration,
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
}

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
        }))
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
        let record = self.0.store.create_execution(&new, from, &build).await?;
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
        Ok(Loaded {
            record,
            exec,
            plan,
            context,
            audience: None,
            secrets: std::collections::BTreeMap::new(),
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
        loop {
            let now = clock.now();
            let available = u32::try_from(permits.available_permits())
                .unwrap_or(u32::MAX)
                .min(settings.batch);
            let pause = if available == 0 {
                // Every slot busy: a finishing task wakes us.
                Duration::from_secs(3600)
            } else {
                match store
                    .claim_executions(&self.0.owner, now, now.plus_millis(lease), available)
                    .await
                {
                    Ok(batch) if !batch.is_empty() => {
                        for record in batch {
                            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                                break;
                            };
                            let engine = self.clone();
                            tasks.spawn(async move {
                                engine.drive(record).await;
                                drop(permit);
                                engine.wake();
                            });
                        }
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
        tasks.close();
        tasks.wait().await;
        tracing::info!("playbook engine stopped");
    }

    /// Drives one claimed execution until it has nothing to do at once, then frees it.
    async fn drive(&self, record: ExecutionRecord) {
        let id = record.id;
        let due = match self.load(record) {
            Ok(mut loaded) => match self.open_secrets(&mut loaded).await {
                Ok(()) => self.drive_loaded(loaded).await,
                // Looked at again shortly (the store is having trouble).
                Err(e) => {
                    tracing::warn!(execution = id, error = %e, "cannot read the secrets");
                    Some(self.0.clock.now().plus_millis(1000))
                }
            },
            Err(e) => {
                tracing::error!(execution = id, error = %e, "cannot drive execution");
                None
            }
        };
        if let Err(e) = self.0.store.release_execution(id, &self.0.owner, due).await {
            tracing::warn!(execution = id, error = %e, "could not release an execution");
        }
    }

    /// Feeds events until nothing is left to do at once; returns when the execution is due
    /// next: its durable timer, or now when driving stopped early (a store error) so that the
    /// next claim recovers it. (When another change came first, the release writes nothing.)
    async fn drive_loaded(&self, mut loaded: Loaded) -> Option<Timestamp> {
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
            let Some(actions) = self.commit(&mut loaded, decision, now, None).await else {
                return Some(self.0.clock.now());
            };
            for action in actions {
                match self.perform(&mut loaded, action).await {
                    Ok(more) => events.extend(more),
                    Err(Lost) => return Some(self.0.clock.now()),
                }
            }
        }
        if loaded.exec.status.is_terminal() {
            return None;
        }
        let runs_in_flight = loaded
            .exec
            .current()
            .is_some_and(|s| s.runs.iter().any(|r| r.dispatched && r.outcome.is_none()));
        if runs_in_flight {
            // Look at the runs again soon (`Recover` re-reads them).
            let poll = self.0.clock.now().plus_millis(ms(runs::RUN_POLL));
            return Some(loaded.exec.wake_at.map_or(poll, |w| w.min(poll)));
        }
        loaded.exec.wake_at
    }

    /// Writes `decision` over the version `loaded` holds; returns its actions, or `None` when
    /// another change came first (the execution is then someone else's).
    async fn commit(
        &self,
        loaded: &mut Loaded,
        decision: Decision,
        now: Timestamp,
        hold_until: Option<Timestamp>,
    ) -> Option<Vec<Action>> {
        let Decision { execution, actions } = decision;
        let queued = if notices::has_notices(&actions) {
            let audience = self.audience_of(loaded).await;
            let masker = Self::scope(loaded, &execution).masker();
            notices::notices(
                &loaded.plan,
                &notices::Subject::from(&loaded.record),
                Some(&loaded.exec),
                &execution,
                &actions,
                None,
                &audience,
                &masker,
                now,
            )
        } else {
            Vec::new()
        };
        let entries = audit::entries(
            Some(&loaded.exec),
            &execution,
            ENGINE_ACTOR,
            loaded.record.service_id,
            now,
        );
        // While held, due now: if this worker dies, the next claim after the lease recovers it.
        // Releasing sets the real timer.
        let due = (!execution.status.is_terminal()).then_some(now);
        let until = hold_until.unwrap_or_else(|| now.plus_millis(ms(self.0.settings.lease)));
        let lease = Some((self.0.owner.clone(), until));
        let mut write = to_write(&execution, due, lease, now, entries);
        write.notices = queued;
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
                if (loaded.exec.status == pending) != (execution.status == pending) {
                    self.count_pending().await;
                }
                note_steps(&loaded.exec, &execution);
                loaded.record.status.clone_from(&write.status);
                loaded.exec = execution;
                Some(actions)
            }
            Ok(false) => {
                tracing::info!(execution = loaded.record.id, "execution changed elsewhere");
                None
            }
            Err(e) => {
                tracing::error!(execution = loaded.record.id, error = %e, "cannot save execution");
                None
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
                self.commit(loaded, decision, now, Some(hold))
                    .await
                    .ok_or(Lost)?;
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
                self.commit(loaded, d, now, Some(hold)).await.ok_or(Lost)?;
                let scope = Self::scope(loaded, &loaded.exec);
                let outcome = local::run_step(
                    self.0.settings.server_executor.as_ref(),
                    &*self.0.store,
                    &loaded.plan,
                    step,
                    id,
                    &scope,
                    &loaded.context.scripts,
                )
                .await;
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
                let scope = Self::scope(loaded, &loaded.exec);
                let exec = runs::ForExecution {
                    id,
                    service_id: loaded.record.service_id,
                    scope: &scope,
                    now: self.0.clock.now(),
                    scripts: &loaded.context.scripts,
                };
                Ok(runs::dispatch(&*self.0.store, &loaded.plan, step, runs, &exec).await)
            }
            Action::CancelRuns { run_ids } => {
                self.cancel_runs(&run_ids).await;
                Ok(Vec::new())
            }
            Action::Escalate { step, reason } => {
                tracing::warn!(execution = id, step, reason = %reason, "execution escalated");
                metrics::counter!("medic_playbook_escalations_total").increment(1);
                Ok(Vec::new())
            }
            Action::Notify(n) => {
                notice(&loaded.record, &loaded.exec, n);
                Ok(Vec::new())
            }
        }
    }
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
