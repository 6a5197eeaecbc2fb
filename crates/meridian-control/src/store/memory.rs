//! [`MemoryStore`]: the [`Store`] semantics without a file, for tests of the control loop.
//!
//! Writes take a mutex for the time of a map insert, so "never blocks" holds in the sense that
//! matters (no I/O, no waiting on a writer); everything is visible at once, so `flush` has nothing
//! to wait for. Probe samples are bounded by `Retention::probe_samples_max` (oldest evicted, not
//! counted as dropped); age-based retention is not applied: a test process does not live a day.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    AlertChange, AlertQuery, AlertRecord, FailoverRecord, ProbeSample, Retention, Store, StoreError,
};

/// A [`Store`] held in memory; nothing survives the process.
#[derive(Debug)]
pub struct MemoryStore {
    samples_max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    alerts: BTreeMap<u64, AlertRecord>,
    alert_high: u64,
    failovers: BTreeMap<u64, FailoverRecord>,
    failover_high: u64,
    /// Oldest first, as recorded.
    samples: VecDeque<ProbeSample>,
}

impl MemoryStore {
    /// An empty store keeping at most `retention.probe_samples_max` samples.
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            samples_max: retention.probe_samples_max,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Retention::default())
    }
}

/// Applies `change` to `existing` (or stores it whole) with the semantics of [`AlertChange`].
fn apply_alert(alerts: &mut BTreeMap<u64, AlertRecord>, change: AlertChange) {
    match change {
        AlertChange::Raised(record) => {
            alerts.insert(record.id, record);
        }
        AlertChange::Updated(record) => match alerts.get_mut(&record.id) {
            Some(alert) => {
                alert.severity = record.severity;
                alert.value = record.value;
                alert.threshold = record.threshold;
                alert.message = record.message;
                alert.updated_at_ms = record.updated_at_ms;
            }
            None => {
                alerts.insert(record.id, record);
            }
        },
        AlertChange::Resolved(mut record) => {
            let resolved = record.resolved_at_ms.unwrap_or(record.updated_at_ms);
            match alerts.get_mut(&record.id) {
                Some(alert) => {
                    alert.resolved_at_ms = Some(resolved);
                    alert.updated_at_ms = record.updated_at_ms;
                }
                None => {
                    record.resolved_at_ms = Some(resolved);
                    alerts.insert(record.id, record);
                }
            }
        }
    }
}

impl Store for MemoryStore {
    fn record_alert(&self, change: AlertChange) {
        let mut inner = self.inner();
        inner.alert_high = inner.alert_high.max(change.record().id);
        apply_alert(&mut inner.alerts, change);
    }

    fn record_probe(&self, sample: ProbeSample) {
        let mut inner = self.inner();
        inner.samples.push_back(sample);
        while inner.samples.len() > self.samples_max {
            inner.samples.pop_front();
        }
    }

    fn record_failover(&self, record: FailoverRecord) {
        let mut inner = self.inner();
        inner.failover_high = inner.failover_high.max(record.id);
        inner.failovers.insert(record.id, record);
    }

    fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let severities = query.accepted_severities()?;
        let inner = self.inner();
        let mut alerts: Vec<AlertRecord> = inner
            .alerts
            .values()
            .filter(|a| query.matches(a, severities))
            .cloned()
            .collect();
        alerts.sort_by_key(|a| Reverse((a.raised_at_ms, a.id)));
        alerts.truncate(query.limit);
        Ok(alerts)
    }

    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alerts(&AlertQuery {
            limit: usize::MAX,
            active: Some(true),
            ..AlertQuery::default()
        })
    }

    fn next_alert_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner().alert_high + 1)
    }

    fn probe_history(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProbeSample>, StoreError> {
        let inner = self.inner();
        // Recording order breaks ties between equal probe times, newest first.
        let mut samples: Vec<(usize, &ProbeSample)> = inner
            .samples
            .iter()
            .enumerate()
            .filter(|(_, s)| node.is_none_or(|n| s.node == n))
            .collect();
        samples.sort_by(|(ia, a), (ib, b)| (b.at_ms, ib).cmp(&(a.at_ms, ia)));
        Ok(samples
            .into_iter()
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect())
    }

    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRecord>, StoreError> {
        let inner = self.inner();
        let mut failovers: Vec<FailoverRecord> = inner.failovers.values().cloned().collect();
        failovers.sort_by_key(|f| Reverse((f.started_at_ms, f.id)));
        failovers.truncate(limit);
        Ok(failovers)
    }

    fn next_failover_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner().failover_high + 1)
    }

    fn flush(&self) {}

    fn dropped_samples(&self) -> u64 {
        0
    }
}
