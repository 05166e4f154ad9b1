//! Teams, notification targets and maintenance windows, and [`TeamStore`]. SQL in
//! `shared/teams.rs`.

use super::*;
use crate::domain::monitor::PagingPeriod;
use crate::domain::schedule::{MaintenanceWindow, WorkingHours};
use crate::domain::{ServiceId, TargetId, TeamId, Timestamp, WindowId};

/// A team: who is paged for the services whose `team` matches its name (case-insensitively).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    /// `None`: the team has no working hours (every moment counts as inside them).
    pub working_hours: Option<WorkingHours>,
    pub slack_channel: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTeam {
    pub name: String,
    pub working_hours: Option<WorkingHours>,
    pub slack_channel: Option<String>,
    pub at: Timestamp,
}

/// Fields to change; `None` leaves a field as it is, `Some(None)` clears an optional one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TeamPatch {
    pub name: Option<String>,
    pub working_hours: Option<Option<WorkingHours>>,
    pub slack_channel: Option<Option<String>>,
}

impl TeamPatch {
    /// Applies the patch to a copy of `t` (the stores persist the result).
    pub fn apply(&self, t: &Team, at: Timestamp) -> Team {
        let mut out = t.clone();
        if let Some(n) = &self.name {
            out.name.clone_from(n);
        }
        if let Some(h) = &self.working_hours {
            out.working_hours.clone_from(h);
        }
        if let Some(c) = &self.slack_channel {
            out.slack_channel.clone_from(c);
        }
        out.updated_at = at;
        out
    }
}

/// What a notification target belongs to: exactly one team or one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOwner {
    Team(TeamId),
    Service(ServiceId),
}

/// Where and how a target is notified. Stored (tagged by `kind`, `records.rs`) in the `config`
/// column; secrets are stored as given and masked by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetConfig {
    Slack { channel: String },
    Pagerduty { routing_key: String },
    Webhook { url: String, secret: String },
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Pagerduty { .. } => "pagerduty",
            Self::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationTarget {
    pub id: TargetId,
    pub owner: TargetOwner,
    pub config: TargetConfig,
    /// Lower numbers are notified first.
    pub priority: i32,
    pub period: PagingPeriod,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTarget {
    pub owner: TargetOwner,
    pub config: TargetConfig,
    pub priority: i32,
    pub period: PagingPeriod,
    pub enabled: bool,
    pub at: Timestamp,
}

/// Fields to change; the owner never changes. A new `config` must keep the target's kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetPatch {
    pub config: Option<TargetConfig>,
    pub priority: Option<i32>,
    pub period: Option<PagingPeriod>,
    pub enabled: Option<bool>,
}

impl TargetPatch {
    /// Applies the patch to a copy of `t` (the stores persist the result).
    pub fn apply(&self, t: &NotificationTarget, at: Timestamp) -> NotificationTarget {
        let mut out = t.clone();
        if let Some(c) = &self.config {
            out.config = c.clone();
        }
        if let Some(p) = self.priority {
            out.priority = p;
        }
        if let Some(p) = self.period {
            out.period = p;
        }
        if let Some(e) = self.enabled {
            out.enabled = e;
        }
        out.updated_at = at;
        out
    }
}

/// Which targets to list: `None` for both lists every target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TargetFilter {
    pub team: Option<TeamId>,
    pub service: Option<ServiceId>,
}

/// What a maintenance window silences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowScope {
    Service(ServiceId),
    Team(TeamId),
    Global,
}

impl WindowScope {
    pub fn kind(self) -> ScopeKind {
        match self {
            Self::Service(_) => ScopeKind::Service,
            Self::Team(_) => ScopeKind::Team,
            Self::Global => ScopeKind::Global,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service(_) => "service",
            Self::Team(_) => "team",
            Self::Global => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindowRecord {
    pub id: WindowId,
    pub scope: WindowScope,
    pub window: MaintenanceWindow,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewWindow {
    pub scope: WindowScope,
    pub window: MaintenanceWindow,
    pub reason: Option<String>,
    pub created_by: String,
    pub at: Timestamp,
}

/// Which scope kind a window listing is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Service,
    Team,
    Global,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Team => "team",
            Self::Global => "global",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(Self::Service),
            "team" => Some(Self::Team),
            "global" => Some(Self::Global),
            _ => None,
        }
    }
}

/// Filters combine with AND. Results are ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowFilter {
    pub scope: Option<ScopeKind>,
    pub service: Option<ServiceId>,
    pub team: Option<TeamId>,
    /// Only windows active at this instant.
    pub active_at: Option<Timestamp>,
}

impl WindowFilter {
    /// Whether `w` passes the filter (the stores narrow in SQL first, then apply this, since a
    /// recurring window's activity needs its cron schedule).
    pub fn matches(&self, w: &MaintenanceWindowRecord) -> bool {
        let scope_ok = self.scope.is_none_or(|k| w.scope.kind() == k);
        let service_ok = self
            .service
            .is_none_or(|s| w.scope == WindowScope::Service(s));
        let team_ok = self.team.is_none_or(|t| w.scope == WindowScope::Team(t));
        let active_ok = self.active_at.is_none_or(|t| w.window.is_active(t));
        scope_ok && service_ok && team_ok && active_ok
    }
}

/// The bounds stored beside a window's spec: `Some` for one-time windows only.
pub fn one_time_bounds(w: &MaintenanceWindow) -> Option<(Timestamp, Timestamp)> {
    match w {
        MaintenanceWindow::OneTime { starts_at, ends_at } => Some((*starts_at, *ends_at)),
        MaintenanceWindow::Recurring { .. } => None,
    }
}

/// Teams, notification targets and maintenance windows.
#[async_trait::async_trait]
pub trait TeamStore: Send + Sync {
    // ---- teams ------------------------------------------------------------------------------

    /// Creates a team. A name already taken (case-insensitively) is a [`StoreError::Conflict`].
    /// With `audit`, the entry it builds from the new team commits with it (likewise below for
    /// every change of teams, targets and windows).
    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team>;
    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>>;
    /// The team whose case-folded name is `name_key` (how a service's `team` finds its team).
    async fn find_team(&self, name_key: &str) -> StoreResult<Option<Team>>;
    /// Every team, ordered by id.
    async fn list_teams(&self) -> StoreResult<Vec<Team>>;
    /// `None` when the team does not exist; a rename onto a taken name is a Conflict.
    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>>;
    /// Deletes a team together with its notification targets and team-scoped maintenance
    /// windows (they mean nothing without it). `false` when no such team exists.
    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool>;

    // ---- notification targets ---------------------------------------------------------------

    /// The owning team or service must exist (callers check; a dangling owner is refused by the
    /// database).
    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget>;
    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>>;
    /// Ordered by priority, then id (the order in which targets are notified).
    async fn list_targets(&self, filter: &TargetFilter) -> StoreResult<Vec<NotificationTarget>>;
    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>>;
    async fn delete_target(&self, id: TargetId, audit: Option<&NewAuditEntry>)
    -> StoreResult<bool>;

    // ---- maintenance windows ----------------------------------------------------------------

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord>;
    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>>;
    /// Ordered by id.
    async fn list_windows(
        &self,
        filter: &WindowFilter,
    ) -> StoreResult<Vec<MaintenanceWindowRecord>>;
    async fn delete_window(&self, id: WindowId, audit: Option<&NewAuditEntry>)
    -> StoreResult<bool>;
}

/// A `notification_targets` row.
#[derive(sqlx::FromRow)]
pub(super) struct TargetRow {
    id: TargetId,
    team_id: Option<TeamId>,
    service_id: Option<ServiceId>,
    config: TargetConfig,
    priority: i32,
    period: PagingPeriod,
    enabled: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl TryFrom<TargetRow> for NotificationTarget {
    type Error = &'static str;

    fn try_from(r: TargetRow) -> Result<Self, Self::Error> {
        let owner = match (r.team_id, r.service_id) {
            (Some(t), None) => TargetOwner::Team(t),
            (None, Some(s)) => TargetOwner::Service(s),
            _ => return Err("target owner in database"),
        };
        Ok(Self {
            id: r.id,
            owner,
            config: r.config,
            priority: r.priority,
            period: r.period,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
sql::from_row_via!(NotificationTarget, TargetRow);

/// A `maintenance_windows` row.
#[derive(sqlx::FromRow)]
pub(super) struct WindowRow {
    id: WindowId,
    scope: String,
    service_id: Option<ServiceId>,
    team_id: Option<TeamId>,
    spec: MaintenanceWindow,
    reason: Option<String>,
    created_by: String,
    created_at: Timestamp,
}

impl TryFrom<WindowRow> for MaintenanceWindowRecord {
    type Error = &'static str;

    fn try_from(r: WindowRow) -> Result<Self, Self::Error> {
        let scope = match (r.scope.as_str(), r.service_id, r.team_id) {
            ("service", Some(s), _) => WindowScope::Service(s),
            ("team", _, Some(t)) => WindowScope::Team(t),
            ("global", _, _) => WindowScope::Global,
            _ => return Err("window scope in database"),
        };
        Ok(Self {
            id: r.id,
            scope,
            window: r.spec,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
        })
    }
}
sql::from_row_via!(MaintenanceWindowRecord, WindowRow);
