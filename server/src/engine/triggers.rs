//! Alert triggers: the playbooks a monitor pass fires when it opens or escalates an alert.
//!
//! Before each pass the monitor asks the engine for the enabled playbooks that have
//! `triggers` ([`Engine::alert_triggers`]: one query for the list; a version's text is read and
//! parsed only when its SHA-256 changed; the scripts of playbooks with script steps are pinned
//! at their approved versions). The store calls [`AlertTriggers::fire`] inside the pass's
//! transaction for each alert it opens or re-notifies, with the real consecutive failures,
//! when each playbook last fired for the service and which already fired for the alert; the
//! executions returned are inserted in that same transaction, so an alert and the executions
//! it starts commit together or not at all. A playbook fires at most once per alert
//! (incident), also across replicas: the pass holds the service's row, and a unique index on
//! `(playbook_id, alert_id)` backs it. The circuit breaker counts these starts like any other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{Engine, ExecutionContext, FirstState, PinnedScript, StartNotices, ms, notices, runs};
use crate::domain::AlertKind as StoreKind;
use crate::playbook::Plan;
use crate::playbook::breaker;
use crate::playbook::document::AlertKind;
use crate::playbook::plan::StepKind;
use crate::playbook::trigger::{AlertFacts, TriggerDecision, decide};
use crate::store::{
    AGENT_SERVICE_PREFIX, AlertTriggers, ExecutionTrigger, NewExecution, PageRequest,
    PinnedVersion, PlaybookFilter, StoreError, TriggeredStart, TriggeringAlert,
};

/// A playbook with triggers, ready to fire.
struct Armed {
    pinned: PinnedVersion,
    plan: Arc<Plan>,
    /// The inputs' defaults (alert executions have no variables).
    inputs: BTreeMap<String, String>,
    scripts: BTreeMap<String, PinnedScript>,
}

/// The alert triggers for one monitor pass.
pub struct ArmedTriggers {
    armed: Vec<Armed>,
    settings: super::EngineSettings,
    /// Every team and enabled notification target, read before the pass: where the started /
    /// awaiting-approval notices of the executions it fires go (routed like a manual start's).
    routing: crate::store::MonitorContext,
    /// What each start this pass built recorded (playbook name, note), counted in the metrics
    /// only once the pass committed ([`ArmedTriggers::committed`]).
    notes: Mutex<Vec<(String, Arc<super::StartNote>)>>,
}

impl ArmedTriggers {
    /// The pass that used these triggers committed: counts the starts it recorded (first
    /// status, skips, circuit breaker openings) like the API's starts are counted. Returns
    /// whether one of them waits for approval.
    pub fn committed(&self) -> bool {
        let notes = std::mem::take(
            &mut *self
                .notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut pending = false;
        for (name, note) in notes {
            note.count(&name);
            pending |= note.status()
                == Some(crate::playbook::machine::ExecutionStatus::PendingApproval.as_str());
        }
        pending
    }
}

/// Parsed versions with triggers by playbook id, with the SHA-256 they were read at
/// (`None`: that version has no triggers, or cannot fire).
#[derive(Default)]
pub(super) struct TriggerCache(Mutex<HashMap<i64, Cached>>);

/// A playbook's version as last read: its SHA-256, its plan when it has triggers, the version.
type Cached = (String, Option<Arc<Plan>>, PinnedVersion);

/// The kind a trigger matches: a missing heartbeat on an agent's service is `agent_down`.
fn kind_of(kind: StoreKind, heartbeat_name: &str) -> AlertKind {
    match kind {
        StoreKind::HeartbeatMissing if heartbeat_name.starts_with(AGENT_SERVICE_PREFIX) => {
            AlertKind::AgentDown
        }
        StoreKind::HeartbeatMissing => AlertKind::HeartbeatMissing,
        StoreKind::JobFailed => AlertKind::JobFailed,
        StoreKind::JobOverdue => AlertKind::JobOverdue,
        StoreKind::RunRefused => AlertKind::RunRefused,
    }
}

impl Engine {
    /// The enabled playbooks with alert triggers, for the next monitor pass.
    ///
    /// # Errors
    /// The store; the pass should then wait (a pass without its triggers would open alerts
    /// that never fire them).
    pub async fn alert_triggers(&self) -> Result<ArmedTriggers, StoreError> {
        let store = &self.0.store;
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            let page = store
                .list_playbooks(
                    &PlaybookFilter {
                        name_contains: None,
                        enabled: Some(true),
                    },
                    PageRequest { limit: 250, offset },
                )
                .await?;
            let n = page.entries.len();
            records.extend(page.entries);
            if n < 250 {
                break;
            }
            offset += 250;
        }
        let mut armed = Vec::new();
        for r in records {
            let cached = {
                let cache = self
                    .0
                    .triggers
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                cache
                    .get(&r.id.0)
                    .filter(|(sha, _, _)| *sha == r.sha256)
                    .map(|(_, plan, pinned)| (plan.clone(), pinned.clone()))
            };
            let (plan, pinned) = match cached {
                Some(c) => c,
                None => {
                    let Some(v) = store.current_playbook_version(r.id).await? else {
                        continue;
                    };
                    let pinned = PinnedVersion {
                        playbook_id: v.playbook_id.0,
                        name: v.name.clone(),
                        version: i64::from(v.version),
                        sha256: v.sha256.clone(),
                        source: v.source.clone(),
                    };
                    let plan = match self.plan(&pinned) {
                        Ok(p) if !p.triggers.is_empty() => Some(p),
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(playbook = r.id.0, error = %e,
                                "a stored playbook version does not parse; its triggers are off");
                            None
                        }
                    };
                    self.0
                        .triggers
                        .0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(r.id.0, (v.sha256, plan.clone(), pinned.clone()));
                    (plan, pinned)
                }
            };
            let Some(plan) = plan else { continue };
            let inputs = match plan.resolve_inputs(&serde_json::Map::new()) {
                Ok(i) => i,
                Err(_) => {
                    tracing::warn!(playbook = %pinned.name,
                        "a playbook with triggers has required inputs without defaults; \
                         alerts cannot start it");
                    continue;
                }
            };
            let mut scripts = BTreeMap::new();
            let mut ready = true;
            for step in &plan.steps {
                if let StepKind::Script(sc) = &step.kind
                    && !scripts.contains_key(&sc.script)
                {
                    match runs::approved_version(&**store, &sc.script).await {
                        Ok(pin) => {
                            scripts.insert(sc.script.clone(), pin);
                        }
                        Err(e) => {
                            tracing::warn!(playbook = %pinned.name, error = %e,
                                "an alert cannot start this playbook now");
                            ready = false;
                        }
                    }
                }
            }
            if ready {
                armed.push(Armed {
                    pinned,
                    plan,
                    inputs,
                    scripts,
                });
            }
        }
        // Routing for the start notices, read only when something can fire.
        let routing = if armed.is_empty() {
            crate::store::MonitorContext::default()
        } else {
            let mut targets = store
                .list_targets(&crate::store::TargetFilter::default())
                .await?;
            targets.retain(|t| t.enabled);
            crate::store::MonitorContext {
                teams: store.list_teams().await?,
                targets,
                ..crate::store::MonitorContext::default()
            }
        };
        Ok(ArmedTriggers {
            armed,
            settings: self.0.settings.clone(),
            routing,
            notes: Mutex::new(Vec::new()),
        })
    }
}

impl AlertTriggers for ArmedTriggers {
    fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    fn fire(&self, alert: &TriggeringAlert<'_>) -> Vec<TriggeredStart> {
        let service = alert.service;
        let facts = AlertFacts {
            service_name: &service.service_name,
            heartbeat_name: &service.heartbeat_name,
            team: Some(&service.team),
            kind: kind_of(alert.kind, &service.heartbeat_name),
            consecutive_failures: alert.consecutive_failures,
        };
        let mut out = Vec::new();
        for a in &self.armed {
            let id = a.pinned.playbook_id;
            if alert.fired_for_alert.contains(&id) {
                continue;
            }
            let last = alert.last_fired.get(&id).copied();
            let fires = a.plan.triggers.iter().any(|t| {
                let d = decide(t, &facts, last, alert.now);
                if d != TriggerDecision::Fire && d != TriggerDecision::NoMatch {
                    tracing::debug!(playbook = %a.pinned.name, alert = alert.alert_id,
                        decision = ?d, "alert trigger held back");
                }
                d == TriggerDecision::Fire
            });
            if !fires {
                continue;
            }
            let context = ExecutionContext {
                service_name: Some(service.service_name.clone()),
                heartbeat_name: Some(service.heartbeat_name.clone()),
                inputs: a.inputs.clone(),
                scripts: a.scripts.clone(),
                requester_key: None,
            };
            let first = FirstState {
                plan: Arc::clone(&a.plan),
                settings: self.settings.clone(),
                requested_by: None,
                actor: crate::store::Actor::new("alert"),
                requester_key: None,
                trigger: ExecutionTrigger::Alert,
                service_id: Some(service.id),
                now: alert.now,
                notify: Some(StartNotices {
                    audience: notices::audience_in(
                        Some(service),
                        &self.routing,
                        alert.now,
                        &self.settings.notify_defaults,
                    ),
                    subject: notices::Subject {
                        id: 0,
                        playbook_id: a.pinned.playbook_id,
                        playbook_name: a.pinned.name.clone(),
                        playbook_version: a.pinned.version,
                        trigger: ExecutionTrigger::Alert.as_str().to_owned(),
                        alert_id: Some(alert.alert_id),
                        requested_by: None,
                    },
                }),
                note: Arc::default(),
            };
            self.notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((a.pinned.name.clone(), Arc::clone(&first.note)));
            tracing::info!(playbook = %a.pinned.name, alert = alert.alert_id,
                service = %service.service_name, "alert trigger fired");
            out.push(TriggeredStart {
                new: NewExecution {
                    pinned: a.pinned.clone(),
                    service_id: Some(service.id),
                    alert_id: Some(alert.alert_id),
                    trigger: ExecutionTrigger::Alert,
                    requested_by: None,
                    context: serde_json::to_value(&context).unwrap_or_else(|_| json!({})),
                    at: alert.now,
                },
                window_from: alert.now.plus_millis(-ms(breaker::WINDOW)),
                build: Box::new(move |id, recent| first.write(id, recent)),
            });
        }
        out
    }
}
