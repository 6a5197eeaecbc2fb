//! Prepared statements in transaction pooling: one server-side statement per distinct
//! (SQL, parameter types), shared by every client that prepares it.
//!
//! A client's named statement lives on whichever server connection ran its Parse, but in
//! transaction pooling its next Bind may run on another. So the proxy keeps each client's
//! statements by the client's name, prepares them on the servers under names of its own
//! (`__meridian_<n>`), and prepares a statement again on a server that lacks it just before
//! the Bind or Describe that needs it. Two clients preparing the same text share one server
//! statement: a pool of ten connections serving a hundred pgbench clients holds one
//! statement per connection, not a hundred.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meridian_core::classify::Classifier;
use meridian_core::routing::{Statement, commands};

/// Identity of a distinct (SQL, parameter types) across the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatementId(pub u64);

/// A statement as the proxy prepares it on servers.
#[derive(Debug)]
pub struct StatementDef {
    /// Its identity.
    pub id: StatementId,
    /// The SQL text (in the client's encoding).
    pub sql: Bytes,
    /// Parameter type OIDs as the client gave them.
    pub param_types: Vec<u32>,
    /// The name used on servers.
    pub server_name: Bytes,
    /// Whether running it may change session state that must not outlive the transaction
    /// (see [`crate::session_state`]).
    pub changes_session: bool,
    /// What routing needs to know of it: its classification and hint, found once.
    pub route: Statement,
}

/// The classification and hint of a statement's text.
pub fn route_of(classifier: &Classifier, sql: &[u8]) -> Statement {
    Statement {
        classification: classifier.classify(sql),
        hint: commands::leading_hint(sql),
    }
}

impl StatementDef {
    /// A client's unnamed statement: prepared under the empty name, never shared.
    pub fn unnamed(sql: Bytes, param_types: Vec<u32>, classifier: &Classifier) -> StatementDef {
        StatementDef {
            id: StatementId(u64::MAX),
            changes_session: crate::session_state::sql_changes_session(&sql),
            route: route_of(classifier, &sql),
            server_name: Bytes::new(),
            sql,
            param_types,
        }
    }
}

/// Past this many distinct statements, the registry forgets the ones no client holds.
const PRUNE_ABOVE: usize = 10_000;

/// What makes two statements the same: their text and parameter types.
type StatementText = (Bytes, Vec<u32>);

/// Every distinct statement clients have prepared, by text.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    by_text: Mutex<HashMap<StatementText, Arc<StatementDef>>>,
    next: AtomicU64,
}

impl StatementRegistry {
    /// The statement for this text and these types, created on first use.
    pub fn intern(
        &self,
        sql: Bytes,
        param_types: Vec<u32>,
        classifier: &Classifier,
    ) -> Arc<StatementDef> {
        let mut by_text = self.by_text.lock().unwrap_or_else(|e| e.into_inner());
        let key = (sql, param_types);
        if let Some(def) = by_text.get(&key) {
            return def.clone();
        }
        if by_text.len() >= PRUNE_ABOVE {
            // Only the registry holds these: no client refers to them any more. Servers may
            // still have them prepared; a later statement with the same text gets a new id,
            // which is harmless.
            by_text.retain(|_, def| Arc::strong_count(def) > 1);
        }
        let id = StatementId(self.next.fetch_add(1, Ordering::Relaxed));
        let def = Arc::new(StatementDef {
            id,
            changes_session: crate::session_state::sql_changes_session(&key.0),
            route: route_of(classifier, &key.0),
            server_name: Bytes::from(format!("__meridian_{}", id.0)),
            sql: key.0.clone(),
            param_types: key.1.clone(),
        });
        by_text.insert(key, def.clone());
        def
    }
}

/// Clients' run-time parameter sets, one shared copy per distinct set.
///
/// Sessions with the same parameters (all clients of one application, typically) hold the
/// same `Arc`, so the check on every checkout, "does this server connection already have
/// my parameters?", is a pointer comparison.
#[derive(Debug, Default)]
pub struct ParameterSets {
    sets: Mutex<HashSet<Arc<BTreeMap<String, String>>>>,
}

impl ParameterSets {
    /// The shared copy of `params`.
    pub fn intern(&self, params: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = sets.get(&params) {
            return shared.clone();
        }
        if sets.len() >= PRUNE_ABOVE {
            sets.retain(|set| Arc::strong_count(set) > 1);
        }
        let shared = Arc::new(params);
        sets.insert(shared.clone());
        shared
    }
}

/// One client's statements: its names, and its unnamed statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    named: HashMap<Bytes, Arc<StatementDef>>,
    /// The last unnamed Parse and its sequence number in this session.
    unnamed: Option<(Arc<StatementDef>, u64)>,
    parses: u64,
}

impl ClientStatements {
    /// The client's statement of that name.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        self.named.get(name)
    }

    /// Records a named Parse; the caller must check the name is free.
    pub fn insert(&mut self, name: Bytes, def: Arc<StatementDef>) {
        self.named.insert(name, def);
    }

    /// Forgets a named statement (Close, or a Parse that failed).
    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        self.named.remove(name)
    }

    /// Records an unnamed Parse; returns its sequence number.
    pub fn set_unnamed(&mut self, def: Arc<StatementDef>) -> u64 {
        self.parses += 1;
        self.unnamed = Some((def, self.parses));
        self.parses
    }

    /// The current unnamed statement and its sequence number.
    pub fn unnamed(&self) -> Option<&(Arc<StatementDef>, u64)> {
        self.unnamed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_one_statement() {
        let registry = StatementRegistry::default();
        let classifier = Classifier::default();
        let a = registry.intern(Bytes::from_static(b"SELECT $1"), vec![23], &classifier);
        let b = registry.intern(Bytes::from_static(b"SELECT $1"), vec![23], &classifier);
        let c = registry.intern(Bytes::from_static(b"SELECT $1"), vec![25], &classifier);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(
            &a.server_name[..],
            format!("__meridian_{}", a.id.0).as_bytes()
        );
    }

    #[test]
    fn a_statement_is_classified_once_with_its_hint() {
        let registry = StatementRegistry::default();
        let classifier = Classifier::default();
        let read = registry.intern(Bytes::from_static(b"SELECT $1"), vec![], &classifier);
        assert!(read.route.classification.is_read_only());
        let hinted = registry.intern(
            Bytes::from_static(b"/* meridian:primary */ SELECT nextval('s')"),
            vec![],
            &classifier,
        );
        assert!(hinted.route.classification.is_write());
        assert_eq!(hinted.route.hint, meridian_core::routing::Target::Primary);
    }

    #[test]
    fn statements_nobody_holds_are_pruned_past_the_limit() {
        let registry = StatementRegistry::default();
        let classifier = Classifier::default();
        let kept = registry.intern(Bytes::from_static(b"kept"), vec![], &classifier);
        for i in 0..PRUNE_ABOVE + 10 {
            registry.intern(Bytes::from(format!("SELECT {i}")), vec![], &classifier);
        }
        let size = registry.by_text.lock().unwrap().len();
        assert!(size < PRUNE_ABOVE, "{size}");
        assert_eq!(
            registry
                .intern(Bytes::from_static(b"kept"), vec![], &classifier)
                .id,
            kept.id
        );
    }

    #[test]
    fn equal_parameter_sets_are_one_allocation() {
        let sets = ParameterSets::default();
        let params: BTreeMap<String, String> =
            [("application_name".to_owned(), "app".to_owned())].into();
        let a = sets.intern(params.clone());
        let b = sets.intern(params);
        assert!(Arc::ptr_eq(&a, &b));
        let c = sets.intern(BTreeMap::new());
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn client_statements_track_names_and_unnamed_sequence() {
        let registry = StatementRegistry::default();
        let classifier = Classifier::default();
        let mut client = ClientStatements::default();
        let def = registry.intern(Bytes::from_static(b"SELECT 1"), vec![], &classifier);
        client.insert(Bytes::from_static(b"s1"), def.clone());
        assert_eq!(client.get(b"s1").map(|d| d.id), Some(def.id));
        assert_eq!(client.set_unnamed(def.clone()), 1);
        assert_eq!(client.set_unnamed(def), 2);
        assert!(client.remove(b"s1").is_some());
        assert!(client.get(b"s1").is_none());
    }
}
