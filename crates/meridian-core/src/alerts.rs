//! Alerts: which conditions a node's judged state implies, and a book that raises each
//! condition once, updates it while it holds and resolves it when it clears.
//!
//! [`node_conditions`] is a pure function of one node's [`NodeHealth`] and [`Lag`]: the
//! conditions that hold *now*. [`AlertBook::reconcile_node`] turns those into events by
//! comparing them with the alerts already active, so a condition that holds for an hour is one
//! `Raised`, a few `Updated` and one `Resolved`, not one alert per probe.
//!
//! # Rules (defaults from the original service; all thresholds in [`AlertPolicy`])
//!
//! | kind                 | condition                                                  | severity                    | value                | threshold            |
//! |----------------------|------------------------------------------------------------|-----------------------------|----------------------|----------------------|
//! | `endpoint_down`      | health Down (`failures_to_down` = 3 consecutive failures)   | critical (primary), high (replica) | consecutive failures | `failures_to_down` |
//! | `endpoint_down`      | health Degraded, error rate > `error_rate_critical` (20 %)  | high                        | error rate (0..1)    | `error_rate_critical` |
//! | `endpoint_down`      | health Degraded, error rate > `error_rate_warning` (5 %)    | medium                      | error rate (0..1)    | `error_rate_warning` |
//! | `endpoint_slow`      | health Degraded, sustained slowness Critical (>= 5 s)       | high                        | seconds              | `slow_critical` (s)  |
//! | `endpoint_slow`      | health Degraded, sustained slowness Warning (>= 1 s)        | medium                      | seconds              | `slow_warning` (s)   |
//! | `replication_lag`    | replica, not Down, lag >= `lag_critical` (5 min)            | high                        | seconds              | `lag_critical` (s)   |
//! | `replication_lag`    | replica, not Down, lag >= `lag_warning` (30 s)              | medium                      | seconds              | `lag_warning` (s)    |
//! | `failover_triggered` | raised by the failover machine                             | high                        | caller's             | caller's             |
//! | `failover_completed` | raised by the failover machine                             | low                         | caller's             | caller's             |
//! | `failover_failed`    | raised by the failover machine                             | critical                    | caller's             | caller's             |
//! | `archiving_off`      | WAL archive configured, the primary does not archive (see [`crate::archiving`]) | high   | 0                    | 0                    |
//! | `archiving_failing`  | the primary's `archive_command` fails                      | high                        | failures counted     | 0                    |
//! | `archiving_behind`   | unarchived writes older than `backup.max_rpo`              | high                        | RPO (s)              | `max_rpo` (s)        |
//!
//! Why these shapes:
//! - Endpoint conditions follow the *hysteresis* state of [`crate::health`], never one probe: a
//!   node judged Healthy or Unknown has no endpoint alert, so one slow or failed probe raises
//!   nothing. `endpoint_slow` uses the sustained [`Slowness`] level, whose value is the highest
//!   latency among the probes that sustain it.
//! - A flaky endpoint is "partly down": the issue lists no separate error-rate type, so a high
//!   error rate is a lower-severity `endpoint_down`. The same alert then escalates to critical
//!   if the node goes Down, and falls back to medium while the failures age out of the window
//!   after it recovers.
//! - Lag is not judged for a Down replica: its replay position is stale, and `endpoint_down`
//!   already says what is wrong.
//!
//! # The book
//!
//! - At most one active alert per `(kind, node)`; `node` is `None` for cluster-level alerts.
//! - [`AlertBook::reconcile_node`] owns the node-state kinds (`endpoint_down`,
//!   `endpoint_slow`, `replication_lag`) of one node: it raises the missing ones, updates the
//!   changed ones and resolves the absent ones. It never touches `failover_*` alerts, which
//!   are raised and resolved explicitly ([`AlertBook::raise`], [`AlertBook::resolve`]).
//! - An active alert is updated when its severity or threshold changes, or its value moves by
//!   10 % or more of the value last reported; smaller moves are not events, so a lag that
//!   creeps up does not produce an `Updated` per probe. Alert values always describe the last
//!   event.
//! - Within an alert, `raised_at <= updated_at <= resolved_at` even if `now` goes backwards
//!   (times are clamped forward).
//! - Events come in a fixed order: by kind, in the declaration order of [`AlertKind`].
//! - Ids increase by one per raised alert and are never reused, also across a restart:
//!   [`AlertBook::new`] takes the next id and [`AlertBook::restore`] moves it past every
//!   restored id.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::health::{HealthPolicy, NodeHealth, Slowness};
use crate::lag::Lag;
use crate::observation::{ProbeError, Timestamp};
use crate::topology::{Health, NodeId};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// A node does not answer, or fails too many probes.
    EndpointDown,
    /// A node answers slowly.
    EndpointSlow,
    /// A replica is behind its primary.
    ReplicationLag,
    /// A failover started.
    FailoverTriggered,
    /// A failover finished: a new primary takes writes.
    FailoverCompleted,
    /// A failover gave up.
    FailoverFailed,
    /// The primary does not answer Meridian but a replica still receives WAL from it: it is
    /// alive, cut off from Meridian only, and not failed over.
    PrimaryUnreachable,
    /// This instance lost its etcd session (several instances coordinated through etcd):
    /// no failover can be decided with it, and its proxy's writes are fenced unless etcd is
    /// down for everyone.
    CoordinationLost,
    /// A WAL archive is configured but the primary does not archive (`archive_mode` off or
    /// waiting for a restart, no `archive_command`).
    ArchivingOff,
    /// The primary's `archive_command` fails: archiving is stuck on one segment.
    ArchivingFailing,
    /// Writes older than the RPO ceiling (`backup.max_rpo`) are not archived.
    ArchivingBehind,
}

impl AlertKind {
    /// Every kind, in order.
    pub const ALL: [AlertKind; 11] = [
        AlertKind::EndpointDown,
        AlertKind::EndpointSlow,
        AlertKind::ReplicationLag,
        AlertKind::FailoverTriggered,
        AlertKind::FailoverCompleted,
        AlertKind::FailoverFailed,
        AlertKind::PrimaryUnreachable,
        AlertKind::CoordinationLost,
        AlertKind::ArchivingOff,
        AlertKind::ArchivingFailing,
        AlertKind::ArchivingBehind,
    ];

    /// The stable name used in the API, the store and metrics: `endpoint_down`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::EndpointDown => "endpoint_down",
            AlertKind::EndpointSlow => "endpoint_slow",
            AlertKind::ReplicationLag => "replication_lag",
            AlertKind::FailoverTriggered => "failover_triggered",
            AlertKind::FailoverCompleted => "failover_completed",
            AlertKind::FailoverFailed => "failover_failed",
            AlertKind::PrimaryUnreachable => "primary_unreachable",
            AlertKind::CoordinationLost => "coordination_lost",
            AlertKind::ArchivingOff => "archiving_off",
            AlertKind::ArchivingFailing => "archiving_failing",
            AlertKind::ArchivingBehind => "archiving_behind",
        }
    }

    /// Whether the kind is derived from a node's state by [`node_conditions`] (and so owned by
    /// [`AlertBook::reconcile_node`]).
    pub fn is_node_state(self) -> bool {
        matches!(
            self,
            AlertKind::EndpointDown | AlertKind::EndpointSlow | AlertKind::ReplicationLag
        )
    }

    /// The fixed severity of a kind raised explicitly (by the failover machine, the
    /// coordinator or the archive watch); `None` for node-state kinds, whose severity depends
    /// on the condition.
    pub fn failover_severity(self) -> Option<Severity> {
        match self {
            AlertKind::FailoverTriggered => Some(Severity::High),
            AlertKind::FailoverCompleted => Some(Severity::Low),
            AlertKind::FailoverFailed | AlertKind::PrimaryUnreachable => Some(Severity::Critical),
            AlertKind::CoordinationLost => Some(Severity::High),
            // Raised and resolved by the archive watch (see `crate::archiving`).
            AlertKind::ArchivingOff | AlertKind::ArchivingFailing | AlertKind::ArchivingBehind => {
                Some(Severity::High)
            }
            AlertKind::EndpointDown | AlertKind::EndpointSlow | AlertKind::ReplicationLag => None,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an alert kind or severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert {what} {text:?}")]
pub struct ParseAlertError {
    what: &'static str,
    text: String,
}

impl FromStr for AlertKind {
    type Err = ParseAlertError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AlertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| ParseAlertError {
                what: "kind",
                text: text.to_owned(),
            })
    }
}

/// How urgent an alert is, ordered from `Low` to `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// For the record.
    Low,
    /// Look at it soon.
    Medium,
    /// Look at it now.
    High,
    /// Service is affected.
    Critical,
}

impl Severity {
    /// Every severity, in order.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The stable name: `low`, `medium`, `high`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseAlertError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == text)
            .ok_or_else(|| ParseAlertError {
                what: "severity",
                text: text.to_owned(),
            })
    }
}

/// Thresholds of the alert rules.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    /// Slowness and error-rate thresholds, shared with the health judgement.
    pub health: HealthPolicy,
    /// Lag from which `replication_lag` is medium (default 30 s).
    pub lag_warning: Duration,
    /// Lag from which `replication_lag` is high (default 5 min).
    pub lag_critical: Duration,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            health: HealthPolicy::default(),
            lag_warning: Duration::from_secs(30),
            lag_critical: Duration::from_secs(5 * 60),
        }
    }
}

/// A condition that currently holds (input of the book).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What it is about.
    pub kind: AlertKind,
    /// The node concerned; `None` for the cluster.
    pub node: Option<NodeId>,
    /// How urgent.
    pub severity: Severity,
    /// The measured value (unit per kind, see the module table).
    pub value: f64,
    /// The threshold `value` crossed.
    pub threshold: f64,
    /// For people.
    pub message: String,
}

impl Condition {
    /// A failover alert with its fixed severity; `None` if `kind` is not a failover kind.
    pub fn failover(
        kind: AlertKind,
        node: Option<NodeId>,
        value: f64,
        message: impl Into<String>,
    ) -> Option<Condition> {
        Some(Condition {
            kind,
            node,
            severity: kind.failover_severity()?,
            value,
            threshold: 0.0,
            message: message.into(),
        })
    }
}

/// An alert as raised, updated and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique, increasing.
    pub id: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// The node's name; `None` for the cluster.
    pub node: Option<String>,
    /// The node's region.
    pub region: Option<String>,
    /// How urgent, as of the last event.
    pub severity: Severity,
    /// The measured value, as of the last event.
    pub value: f64,
    /// The threshold crossed, as of the last event.
    pub threshold: f64,
    /// For people.
    pub message: String,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// When it last changed (its raising time if it never did).
    pub updated_at: Timestamp,
    /// When it was resolved; `None` while active.
    pub resolved_at: Option<Timestamp>,
}

/// A change of the book.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertEvent {
    /// A new alert.
    Raised(Alert),
    /// An active alert changed.
    Updated(Alert),
    /// An alert no longer holds.
    Resolved(Alert),
}

impl AlertEvent {
    /// The alert as of this event.
    pub fn alert(&self) -> &Alert {
        match self {
            AlertEvent::Raised(alert)
            | AlertEvent::Updated(alert)
            | AlertEvent::Resolved(alert) => alert,
        }
    }

    /// The alert as of this event, owned.
    pub fn into_alert(self) -> Alert {
        match self {
            AlertEvent::Raised(alert)
            | AlertEvent::Updated(alert)
            | AlertEvent::Resolved(alert) => alert,
        }
    }
}

/// The conditions one node's state implies (see the module table).
pub fn node_conditions(
    policy: &AlertPolicy,
    node: NodeId,
    is_primary: bool,
    health: &NodeHealth,
    lag: Option<Lag>,
) -> Vec<Condition> {
    let mut conditions = Vec::new();
    let role = if is_primary { "primary" } else { "replica" };
    let limits = &policy.health;
    let condition = |kind, severity, value, threshold, message| Condition {
        kind,
        node: Some(node),
        severity,
        value,
        threshold,
        message,
    };

    match health.health() {
        Health::Down => {
            let failures = health.consecutive_failures();
            let last = health.last_error().map(describe).unwrap_or("failed");
            conditions.push(condition(
                AlertKind::EndpointDown,
                if is_primary {
                    Severity::Critical
                } else {
                    Severity::High
                },
                f64::from(failures),
                f64::from(limits.failures_to_down),
                format!(
                    "{role} not answering: {failures} consecutive probes failed (last: {last})"
                ),
            ));
        }
        Health::Degraded => {
            let rate = health.error_rate();
            let crossed = if rate > limits.error_rate_critical {
                Some((Severity::High, limits.error_rate_critical))
            } else if rate > limits.error_rate_warning {
                Some((Severity::Medium, limits.error_rate_warning))
            } else {
                None
            };
            if let Some((severity, threshold)) = crossed {
                conditions.push(condition(
                    AlertKind::EndpointDown,
                    severity,
                    rate,
                    threshold,
                    format!(
                        "{role} partly down: {:.0} % of the last {} probes failed",
                        rate * 100.0,
                        health.probes_in_window()
                    ),
                ));
            }
            let slow = match health.slowness() {
                Slowness::Normal => None,
                Slowness::Warning => Some((Severity::Medium, limits.slow_warning)),
                Slowness::Critical => Some((Severity::High, limits.slow_critical)),
            };
            if let (Some((severity, threshold)), Some(latency)) = (slow, health.slow_latency()) {
                conditions.push(condition(
                    AlertKind::EndpointSlow,
                    severity,
                    latency.as_secs_f64(),
                    threshold.as_secs_f64(),
                    format!(
                        "{role} slow: probes take up to {:.2} s (threshold {:.2} s)",
                        latency.as_secs_f64(),
                        threshold.as_secs_f64()
                    ),
                ));
            }
        }
        Health::Healthy | Health::Unknown => {}
    }

    if !is_primary
        && health.health() != Health::Down
        && let Some(lag) = lag
    {
        let crossed = if lag.seconds >= policy.lag_critical {
            Some((Severity::High, policy.lag_critical))
        } else if lag.seconds >= policy.lag_warning {
            Some((Severity::Medium, policy.lag_warning))
        } else {
            None
        };
        if let Some((severity, threshold)) = crossed {
            conditions.push(condition(
                AlertKind::ReplicationLag,
                severity,
                lag.seconds.as_secs_f64(),
                threshold.as_secs_f64(),
                format!(
                    "replica {:.1} s behind the primary ({} bytes of WAL not replayed)",
                    lag.seconds.as_secs_f64(),
                    lag.bytes
                ),
            ));
        }
    }
    conditions
}

fn describe(error: &ProbeError) -> &str {
    match error {
        ProbeError::Refused => "connection refused",
        ProbeError::Timeout => "timed out",
        ProbeError::Rejected { sqlstate } => sqlstate,
        ProbeError::Other(text) => text,
    }
}

/// Active alerts keyed by `(kind, node)`, and the next alert id.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertBook {
    active: BTreeMap<(AlertKind, Option<NodeId>), Alert>,
    next_id: u64,
}

impl AlertBook {
    /// An empty book whose first alert gets `next_id`, so a restarted process continues
    /// numbering after stored alerts.
    pub fn new(next_id: u64) -> Self {
        AlertBook {
            active: BTreeMap::new(),
            next_id,
        }
    }

    /// Reloads active alerts from the store after a restart. Alerts already resolved, and
    /// alerts whose node `node_ids` does not know (removed from the configuration), are
    /// skipped; their ids are still never reused. If two alerts share a `(kind, node)`, the
    /// newer (higher id) is kept.
    pub fn restore(&mut self, active: Vec<Alert>, node_ids: impl Fn(&str) -> Option<NodeId>) {
        for alert in active {
            self.next_id = self.next_id.max(alert.id.saturating_add(1));
            if alert.resolved_at.is_some() {
                continue;
            }
            let node = match &alert.node {
                None => None,
                Some(name) => match node_ids(name) {
                    Some(id) => Some(id),
                    None => continue,
                },
            };
            let key = (alert.kind, node);
            match self.active.get(&key) {
                Some(existing) if existing.id > alert.id => {}
                _ => {
                    self.active.insert(key, alert);
                }
            }
        }
    }

    /// Makes the active node-state alerts of `node` match `conditions` (all conditions of that
    /// node): raises new ones, updates changed ones, resolves absent ones. Every condition is
    /// taken as `node`'s whatever its `node` field says; conditions of failover kinds are
    /// ignored (use [`AlertBook::raise`]); if a kind appears twice, the more severe (then the
    /// higher value) wins. Events come ordered by kind.
    pub fn reconcile_node(
        &mut self,
        node: NodeId,
        node_name: &str,
        region: &str,
        conditions: &[Condition],
        now: Timestamp,
    ) -> Vec<AlertEvent> {
        let mut wanted: BTreeMap<AlertKind, &Condition> = BTreeMap::new();
        for condition in conditions.iter().filter(|c| c.kind.is_node_state()) {
            let entry = wanted.entry(condition.kind).or_insert(condition);
            if (condition.severity, condition.value) > (entry.severity, entry.value) {
                *entry = condition;
            }
        }

        let mut events = Vec::new();
        for kind in AlertKind::ALL.into_iter().filter(|k| k.is_node_state()) {
            let key = (kind, Some(node));
            match (wanted.get(&kind), self.active.get_mut(&key)) {
                (Some(condition), Some(alert)) => {
                    if is_significant_change(alert, condition) {
                        apply(alert, condition, Some(node_name), Some(region), now);
                        events.push(AlertEvent::Updated(alert.clone()));
                    }
                }
                (Some(condition), None) => {
                    let alert = self.open(key, condition, Some(node_name), Some(region), now);
                    events.push(AlertEvent::Raised(alert));
                }
                (None, Some(_)) => {
                    if let Some(event) = self.close(key, now) {
                        events.push(event);
                    }
                }
                (None, None) => {}
            }
        }
        events
    }

    /// Raises a one-off or cluster-level alert (`failover_*`), deduplicated by
    /// `(kind, node)`: raising an already active one updates it.
    pub fn raise(
        &mut self,
        condition: Condition,
        node_name: Option<&str>,
        region: Option<&str>,
        now: Timestamp,
    ) -> AlertEvent {
        let key = (condition.kind, condition.node);
        match self.active.get_mut(&key) {
            Some(alert) => {
                apply(alert, &condition, node_name, region, now);
                AlertEvent::Updated(alert.clone())
            }
            None => AlertEvent::Raised(self.open(key, &condition, node_name, region, now)),
        }
    }

    /// Resolves the active alert `(kind, node)`; `None` if there is none.
    pub fn resolve(
        &mut self,
        kind: AlertKind,
        node: Option<NodeId>,
        now: Timestamp,
    ) -> Option<AlertEvent> {
        self.close((kind, node), now)
    }

    /// Active alerts, ordered by kind then node.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// The active alert `(kind, node)`.
    pub fn get(&self, kind: AlertKind, node: Option<NodeId>) -> Option<&Alert> {
        self.active.get(&(kind, node))
    }

    /// The id the next raised alert will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    fn open(
        &mut self,
        key: (AlertKind, Option<NodeId>),
        condition: &Condition,
        node_name: Option<&str>,
        region: Option<&str>,
        now: Timestamp,
    ) -> Alert {
        let alert = Alert {
            id: self.next_id,
            kind: key.0,
            node: node_name.map(str::to_owned),
            region: region.map(str::to_owned),
            severity: condition.severity,
            value: condition.value,
            threshold: condition.threshold,
            message: condition.message.clone(),
            raised_at: now,
            updated_at: now,
            resolved_at: None,
        };
        self.next_id = self.next_id.saturating_add(1);
        self.active.insert(key, alert.clone());
        alert
    }

    fn close(&mut self, key: (AlertKind, Option<NodeId>), now: Timestamp) -> Option<AlertEvent> {
        let mut alert = self.active.remove(&key)?;
        alert.resolved_at = Some(now.max(alert.updated_at));
        Some(AlertEvent::Resolved(alert))
    }
}

/// Whether `condition` differs enough from what `alert` last reported to be an event.
fn is_significant_change(alert: &Alert, condition: &Condition) -> bool {
    if condition.severity != alert.severity || condition.threshold != alert.threshold {
        return true;
    }
    condition.value != alert.value
        && (condition.value - alert.value).abs() >= 0.1 * alert.value.abs()
}

fn apply(
    alert: &mut Alert,
    condition: &Condition,
    node_name: Option<&str>,
    region: Option<&str>,
    now: Timestamp,
) {
    alert.node = node_name.map(str::to_owned);
    alert.region = region.map(str::to_owned);
    alert.severity = condition.severity;
    alert.value = condition.value;
    alert.threshold = condition.threshold;
    alert.message.clone_from(&condition.message);
    alert.updated_at = now.max(alert.updated_at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::success;
    use crate::observation::NodeStatus;

    const NODE: NodeId = NodeId(1);

    fn at(s: u64) -> Timestamp {
        Timestamp(1_700_000_000_000 + s * 1_000)
    }

    /// `F` fast, `S` 2 s, `V` 6 s, `T` timeout, `R` refused; a digit repeats the next letter
    /// that many times ten (`2F` = 20 fast probes).
    fn judged(probes: &str) -> NodeHealth {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        let mut repeat = 1;
        for c in probes.chars().filter(|c| !c.is_whitespace()) {
            if let Some(tens) = c.to_digit(10) {
                repeat = tens as usize * 10;
                continue;
            }
            let outcome: Result<NodeStatus, ProbeError> = match c {
                'F' => success(10),
                'S' => success(2_000),
                'V' => success(6_000),
                'T' => Err(ProbeError::Timeout),
                'R' => Err(ProbeError::Refused),
                other => panic!("unknown probe {other:?}"),
            };
            for _ in 0..repeat {
                node.observe(&policy, &outcome);
            }
            repeat = 1;
        }
        node
    }

    fn lag_of(seconds: u64) -> Option<Lag> {
        Some(Lag {
            bytes: seconds * 1_000,
            seconds: Duration::from_secs(seconds),
        })
    }

    fn condition(kind: AlertKind, severity: Severity, value: f64) -> Condition {
        Condition {
            kind,
            node: Some(NODE),
            severity,
            value,
            threshold: 1.0,
            message: format!("{kind} {value}"),
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse::<AlertKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>(), Ok(severity));
            assert_eq!(severity.to_string(), severity.as_str());
        }
        assert_eq!(AlertKind::EndpointDown.as_str(), "endpoint_down");
        assert_eq!(AlertKind::FailoverFailed.as_str(), "failover_failed");
        assert!("Endpoint_Down".parse::<AlertKind>().is_err());
        assert!("urgent".parse::<Severity>().is_err());
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
    }

    #[test]
    fn default_policy_is_the_original_thresholds() {
        let policy = AlertPolicy::default();
        assert_eq!(policy.lag_warning, Duration::from_secs(30));
        assert_eq!(policy.lag_critical, Duration::from_secs(300));
        assert_eq!(policy.health, HealthPolicy::default());
    }

    #[test]
    fn failover_conditions_have_fixed_severities() {
        let table = [
            (AlertKind::FailoverTriggered, Some(Severity::High)),
            (AlertKind::FailoverCompleted, Some(Severity::Low)),
            (AlertKind::FailoverFailed, Some(Severity::Critical)),
            (AlertKind::EndpointDown, None),
            (AlertKind::EndpointSlow, None),
            (AlertKind::ReplicationLag, None),
        ];
        for (kind, severity) in table {
            let condition = Condition::failover(kind, None, 2.0, "x");
            assert_eq!(condition.map(|c| c.severity), severity, "{kind}");
        }
    }

    #[test]
    fn rules_table() {
        use AlertKind::{EndpointDown as Down, EndpointSlow as Slow, ReplicationLag as LagK};
        use Severity::{Critical, High, Medium};
        // (what, primary?, probes, lag, expected (kind, severity, value, threshold))
        type Expected = &'static [(AlertKind, Severity, f64, f64)];
        let table: &[(&str, bool, &str, Option<Lag>, Expected)] = &[
            ("healthy", true, "FFF", None, &[]),
            ("one slow probe", true, "FFS", None, &[]),
            (
                "sustained slow",
                true,
                "FSS",
                None,
                &[(Slow, Medium, 2.0, 1.0)],
            ),
            (
                "sustained very slow",
                true,
                "FVV",
                None,
                &[(Slow, High, 6.0, 5.0)],
            ),
            (
                "slow then one fast",
                true,
                "FSSF",
                None,
                &[(Slow, Medium, 2.0, 1.0)],
            ),
            ("slow then two fast", true, "FSSFF", None, &[]),
            (
                "primary down",
                true,
                "FTTT",
                None,
                &[(Down, Critical, 3.0, 3.0)],
            ),
            (
                "replica down",
                false,
                "FRRRR",
                None,
                &[(Down, High, 4.0, 3.0)],
            ),
            ("unknown, two failures", true, "TT", None, &[]),
            ("healthy after one failure", true, "5F T", None, &[]),
            ("one lost probe in 20 is noise", true, "2F T F", None, &[]),
            (
                "10 % error rate",
                true,
                "2F TT F",
                None,
                &[(Down, Medium, 0.1, 0.05)],
            ),
            (
                "exactly 20 % is still medium",
                true,
                "FFFFFFFFFFFF TFTFTFTF",
                None,
                &[(Down, Medium, 0.2, 0.05)],
            ),
            (
                "25 % error rate",
                true,
                "FFFFFFFFFF TFTFTFTFTF",
                None,
                &[(Down, High, 0.25, 0.2)],
            ),
            // The outage was reported as down; back, the node starts a fresh error window.
            ("recovering from down", false, "FTTTF", None, &[]),
            ("replica lag under warning", false, "FF", lag_of(29), &[]),
            (
                "replica lag warning",
                false,
                "FF",
                lag_of(30),
                &[(LagK, Medium, 30.0, 30.0)],
            ),
            (
                "replica lag critical",
                false,
                "FF",
                lag_of(300),
                &[(LagK, High, 300.0, 300.0)],
            ),
            ("primary has no lag rule", true, "FF", lag_of(400), &[]),
            (
                "down replica: no lag rule",
                false,
                "TTT",
                lag_of(400),
                &[(Down, High, 3.0, 3.0)],
            ),
            (
                "slow and lagging",
                false,
                "SS",
                lag_of(31),
                &[(Slow, Medium, 2.0, 1.0), (LagK, Medium, 31.0, 30.0)],
            ),
        ];
        for (what, primary, probes, lag, expected) in table {
            let health = judged(probes);
            let got: Vec<_> =
                node_conditions(&AlertPolicy::default(), NODE, *primary, &health, *lag)
                    .into_iter()
                    .map(|c| {
                        assert_eq!(c.node, Some(NODE), "{what}");
                        (c.kind, c.severity, c.value, c.threshold)
                    })
                    .collect();
            assert_eq!(got, expected.to_vec(), "{what}: {probes}");
        }
    }

    #[test]
    fn down_message_names_the_last_error() {
        let health = judged("FRRR");
        let conditions = node_conditions(&AlertPolicy::default(), NODE, true, &health, None);
        assert!(
            conditions[0].message.contains("connection refused"),
            "{conditions:?}"
        );
    }

    #[test]
    fn raised_once_updated_on_change_resolved_when_clear() {
        let mut book = AlertBook::new(7);
        let raise = book.reconcile_node(
            NODE,
            "pg1",
            "eu",
            &[condition(AlertKind::ReplicationLag, Severity::Medium, 40.0)],
            at(0),
        );
        let [AlertEvent::Raised(alert)] = raise.as_slice() else {
            panic!("{raise:?}")
        };
        assert_eq!(alert.id, 7);
        assert_eq!(alert.node.as_deref(), Some("pg1"));
        assert_eq!(alert.region.as_deref(), Some("eu"));
        assert_eq!((alert.raised_at, alert.updated_at), (at(0), at(0)));

        // Same condition, creeping value: no event.
        for (s, value) in [(1, 40.0), (2, 42.0), (3, 43.9)] {
            let cond = condition(AlertKind::ReplicationLag, Severity::Medium, value);
            assert_eq!(book.reconcile_node(NODE, "pg1", "eu", &[cond], at(s)), []);
        }
        assert_eq!(
            book.get(AlertKind::ReplicationLag, Some(NODE))
                .unwrap()
                .value,
            40.0
        );

        // A 10 % move is an update.
        let cond = condition(AlertKind::ReplicationLag, Severity::Medium, 44.0);
        let update = book.reconcile_node(NODE, "pg1", "eu", &[cond], at(4));
        let [AlertEvent::Updated(alert)] = update.as_slice() else {
            panic!("{update:?}")
        };
        assert_eq!((alert.id, alert.value, alert.updated_at), (7, 44.0, at(4)));

        // A severity change is an update, whatever the value.
        let cond = condition(AlertKind::ReplicationLag, Severity::High, 44.0);
        let update = book.reconcile_node(NODE, "pg1", "eu", &[cond], at(5));
        assert!(
            matches!(update.as_slice(), [AlertEvent::Updated(a)] if a.severity == Severity::High)
        );

        // Gone: resolved, once.
        let resolve = book.reconcile_node(NODE, "pg1", "eu", &[], at(6));
        let [AlertEvent::Resolved(alert)] = resolve.as_slice() else {
            panic!("{resolve:?}")
        };
        assert_eq!((alert.id, alert.resolved_at), (7, Some(at(6))));
        assert_eq!(book.reconcile_node(NODE, "pg1", "eu", &[], at(7)), []);
        assert_eq!(book.active().count(), 0);

        // Back again: a new alert with the next id.
        let cond = condition(AlertKind::ReplicationLag, Severity::Medium, 40.0);
        let again = book.reconcile_node(NODE, "pg1", "eu", &[cond], at(8));
        assert!(matches!(again.as_slice(), [AlertEvent::Raised(a)] if a.id == 8));
        assert_eq!(book.next_id(), 9);
    }

    #[test]
    fn a_value_from_zero_is_significant() {
        let mut book = AlertBook::new(1);
        let cond = condition(AlertKind::EndpointDown, Severity::Medium, 0.0);
        book.reconcile_node(NODE, "pg1", "eu", &[cond], at(0));
        let cond = condition(AlertKind::EndpointDown, Severity::Medium, 0.01);
        assert_eq!(
            book.reconcile_node(NODE, "pg1", "eu", &[cond], at(1)).len(),
            1
        );
    }

    #[test]
    fn events_are_ordered_by_kind() {
        let mut book = AlertBook::new(1);
        let conditions = [
            condition(AlertKind::ReplicationLag, Severity::Medium, 40.0),
            condition(AlertKind::EndpointDown, Severity::High, 3.0),
            condition(AlertKind::EndpointSlow, Severity::Medium, 2.0),
        ];
        let events = book.reconcile_node(NODE, "pg1", "eu", &conditions, at(0));
        let kinds: Vec<_> = events.iter().map(|e| e.alert().kind).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::EndpointDown,
                AlertKind::EndpointSlow,
                AlertKind::ReplicationLag
            ]
        );
        let ids: Vec<_> = events.iter().map(|e| e.alert().id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn the_most_severe_duplicate_wins() {
        let mut book = AlertBook::new(1);
        let conditions = [
            condition(AlertKind::EndpointDown, Severity::Medium, 0.1),
            condition(AlertKind::EndpointDown, Severity::Critical, 3.0),
            condition(AlertKind::EndpointDown, Severity::High, 9.0),
        ];
        let events = book.reconcile_node(NODE, "pg1", "eu", &conditions, at(0));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].alert().severity, Severity::Critical);
    }

    #[test]
    fn reconcile_leaves_failover_alerts_and_other_nodes_alone() {
        let mut book = AlertBook::new(1);
        let failover = Condition::failover(
            AlertKind::FailoverTriggered,
            Some(NODE),
            0.0,
            "primary lost",
        )
        .unwrap();
        book.raise(failover.clone(), Some("pg1"), Some("eu"), at(0));
        let other = condition(AlertKind::EndpointDown, Severity::High, 3.0);
        book.reconcile_node(NodeId(2), "pg2", "us", &[other], at(0));
        // Node 1 with no conditions, and a failover condition passed by mistake.
        assert_eq!(
            book.reconcile_node(NODE, "pg1", "eu", &[failover], at(1)),
            []
        );
        assert!(book.get(AlertKind::FailoverTriggered, Some(NODE)).is_some());
        assert!(book.get(AlertKind::EndpointDown, Some(NodeId(2))).is_some());
    }

    #[test]
    fn raise_deduplicates_and_resolve_closes() {
        let mut book = AlertBook::new(1);
        let triggered = Condition::failover(AlertKind::FailoverTriggered, None, 1.0, "a").unwrap();
        let first = book.raise(triggered.clone(), None, None, at(0));
        assert!(matches!(&first, AlertEvent::Raised(a) if a.id == 1 && a.node.is_none()));
        let second = book.raise(triggered, None, None, at(5));
        assert!(matches!(&second, AlertEvent::Updated(a) if a.id == 1 && a.updated_at == at(5)));
        assert_eq!(book.active().count(), 1);

        let resolved = book
            .resolve(AlertKind::FailoverTriggered, None, at(9))
            .unwrap();
        assert!(matches!(&resolved, AlertEvent::Resolved(a) if a.resolved_at == Some(at(9))));
        assert_eq!(
            book.resolve(AlertKind::FailoverTriggered, None, at(10)),
            None
        );
        assert_eq!(book.active().count(), 0);
    }

    #[test]
    fn times_never_go_backwards_within_an_alert() {
        let mut book = AlertBook::new(1);
        let cond = condition(AlertKind::EndpointSlow, Severity::Medium, 2.0);
        book.reconcile_node(NODE, "pg1", "eu", &[cond], at(10));
        let cond = condition(AlertKind::EndpointSlow, Severity::High, 6.0);
        let update = book.reconcile_node(NODE, "pg1", "eu", &[cond], at(5));
        assert_eq!(update[0].alert().updated_at, at(10));
        let resolve = book.reconcile_node(NODE, "pg1", "eu", &[], at(3));
        assert_eq!(resolve[0].alert().resolved_at, Some(at(10)));
    }

    fn stored(id: u64, kind: AlertKind, node: Option<&str>, resolved: bool) -> Alert {
        Alert {
            id,
            kind,
            node: node.map(str::to_owned),
            region: Some("eu".into()),
            severity: Severity::High,
            value: 3.0,
            threshold: 3.0,
            message: "stored".into(),
            raised_at: at(0),
            updated_at: at(0),
            resolved_at: resolved.then_some(at(1)),
        }
    }

    #[test]
    fn restore_continues_after_stored_alerts() {
        let mut book = AlertBook::new(1);
        let names = |name: &str| match name {
            "pg1" => Some(NODE),
            _ => None,
        };
        book.restore(
            vec![
                stored(10, AlertKind::EndpointDown, Some("pg1"), false),
                stored(12, AlertKind::EndpointDown, Some("gone"), false),
                stored(11, AlertKind::FailoverFailed, None, false),
                stored(14, AlertKind::EndpointSlow, Some("pg1"), true),
                stored(9, AlertKind::EndpointDown, Some("pg1"), false),
            ],
            names,
        );
        let ids: Vec<_> = book.active().map(|a| a.id).collect();
        assert_eq!(ids, [10, 11]);
        assert_eq!(book.next_id(), 15);

        // The restored alert is the same alert: updated, then resolved, not raised again.
        let cond = condition(AlertKind::EndpointDown, Severity::Critical, 3.0);
        let events = book.reconcile_node(NODE, "pg1", "eu", &[cond], at(2));
        assert!(matches!(events.as_slice(), [AlertEvent::Updated(a)] if a.id == 10));
        let events = book.reconcile_node(NODE, "pg1", "eu", &[], at(3));
        assert!(matches!(events.as_slice(), [AlertEvent::Resolved(a)] if a.id == 10));
        // The cluster-level alert is untouched by node reconciliation.
        assert!(book.get(AlertKind::FailoverFailed, None).is_some());
    }
}
