//! `meridian analyze-query "SQL"`: what Meridian makes of a statement — its class, the
//! statements of a batch, a session pin, and where the routing policy sends it and why.
//!
//! The route is the one taken in a healthy cluster (a primary and caught-up replicas); the
//! text says what would change it (no replica qualifying, a read-your-writes wait). The
//! policy is the configured one (`-c FILE` or the environment), or the defaults when there
//! is no configuration.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use meridian_admin::model::{QueryAnalysis, QueryRoute, StatementClass};
use meridian_config::{Config, ConfigError, Environment, ReadYourWrites, RoutingConfig};
use meridian_core::classify::{Classification, Classifier, shape};
use meridian_core::routing::commands::{self, SessionCommand};
use meridian_core::routing::{
    Loads, NoRoute, NodeLoad, PrimaryReads, RouteDecision, RoutePolicy, SessionRoute, Statement,
    Target,
};
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, Role};

/// Prints the analysis of `sql`; exit code 2 when the configuration is not valid.
pub fn main(config_path: Option<&Path>, route: Target, sql: &str) -> ExitCode {
    let (routing, source) = match load_routing(config_path) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("meridian: {message}");
            return ExitCode::from(2);
        }
    };
    let classifier = match meridian_proxy::classifier(&routing) {
        Ok(classifier) => classifier,
        Err(e) => {
            eprintln!("meridian: {e}");
            return ExitCode::from(2);
        }
    };
    print!(
        "{}",
        analyze(&classifier, &routing, &source, route, sql.as_bytes())
    );
    ExitCode::SUCCESS
}

/// The `[routing]` configuration and where it came from.
fn load_routing(path: Option<&Path>) -> Result<(RoutingConfig, String), String> {
    let env = Environment::from_process();
    match Config::load(path, &env) {
        Ok(config) => {
            let source = match path {
                Some(path) => format!("from {}", path.display()),
                None => "from the environment".to_owned(),
            };
            Ok((config.routing, source))
        }
        Err(errors) => {
            // With neither a file nor a cluster in the environment there is nothing to read
            // the policy from: the defaults apply. Any other error is the user's to fix.
            let nothing_configured = path.is_none()
                && errors
                    .0
                    .iter()
                    .all(|e| matches!(e, ConfigError::NoDatabase));
            if nothing_configured {
                Ok((
                    RoutingConfig::default(),
                    "defaults: no configuration given".to_owned(),
                ))
            } else {
                Err(format!("the configuration is not valid:\n{errors}"))
            }
        }
    }
}

/// What the classifier and the routing policy make of a statement (not a `meridian.*`
/// command), shared by the printed report and the API's document.
struct Verdict {
    classification: Classification,
    /// Each statement of a batch with its class (empty for a single statement).
    statements: Vec<(String, Classification)>,
    pin: Option<String>,
    decision: RouteDecision,
}

fn verdict(
    classifier: &Classifier,
    policy: &RoutePolicy,
    view: &ClusterView,
    route: Target,
    sql: &[u8],
) -> Verdict {
    let statement = Statement {
        classification: classifier.classify(sql),
        hint: commands::leading_hint(sql),
    };
    let statements: Vec<_> = classifier.statements(sql).collect();
    let statements = if statements.len() > 1 {
        statements
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&sql[s.span.clone()]).into_owned(),
                    s.classification,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let session = SessionRoute {
        target: route,
        ..SessionRoute::default()
    };
    Verdict {
        pin: policy
            .pin(&statement.classification)
            .map(|pin| pin.to_string()),
        decision: meridian_core::routing::route(&statement, &session, view, policy, &NoLoad),
        classification: statement.classification,
        statements,
    }
}

/// What a `meridian.*` command does, in a sentence.
fn command_effect(command: Result<SessionCommand, commands::CommandError>) -> String {
    match command {
        Ok(SessionCommand::SetRoute(target)) => {
            format!("routes the session's later statements: {}", target.as_str())
        }
        Ok(SessionCommand::SetMinLsn(Some(lsn))) => {
            format!("the session's reads must see WAL position {lsn}")
        }
        Ok(SessionCommand::SetMinLsn(None)) => "forgets the position handed to the session".into(),
        Ok(SessionCommand::Show(setting)) => format!("shows {}", setting.name()),
        Err(e) => format!("error {}: {}", e.sqlstate, e.message),
    }
}

/// The report, as printed.
fn analyze(
    classifier: &Classifier,
    routing: &RoutingConfig,
    source: &str,
    route: Target,
    sql: &[u8],
) -> String {
    let mut out = String::new();
    if let Some(command) = commands::session_command(sql) {
        out.push_str(&format!(
            "meridian command, answered by the proxy itself: {}\n",
            command_effect(command)
        ));
        return out;
    }
    let policy = meridian_proxy::route_policy(routing);
    let verdict = verdict(classifier, &policy, &healthy_view(), route, sql);
    out.push_str(&format!("class:      {}\n", verdict.classification));
    if !verdict.statements.is_empty() {
        out.push_str("statements:\n");
        for (i, (text, class)) in verdict.statements.iter().enumerate() {
            out.push_str(&format!(
                "  {}. {}\n     {class}\n",
                i + 1,
                one_line(text, 72),
            ));
        }
    }
    if let Some(pin) = &verdict.pin {
        out.push_str(&format!(
            "pins:       the session keeps its server connection until it ends ({pin})\n"
        ));
    }
    match verdict.decision {
        RouteDecision::Primary { reason, .. } => {
            out.push_str(&format!("route:      the primary: {reason}\n"));
        }
        RouteDecision::Replica { reason, .. } => {
            out.push_str(&format!("route:      a replica: {reason}\n"));
            out.push_str(&replica_notes(&policy, routing));
        }
        RouteDecision::Unavailable(why) => {
            out.push_str(&format!("route:      nowhere ({why:?})\n"));
        }
    }
    let shape = shape(sql, true);
    out.push_str(&format!("complexity: {}\n", shape.complexity().as_str()));
    for finding in shape.findings() {
        out.push_str(&format!("            - {finding}\n"));
    }
    out.push_str(&format!(
        "policy:     read_write_split = {}, primary_reads = {}, read_your_writes = {} ({source})\n",
        routing.read_write_split, routing.primary_reads, routing.read_your_writes
    ));
    out
}

/// The analysis `POST /api/database/analyze-query` answers: the route is the one the live
/// cluster `view` gives an idle proxy now.
pub fn analysis(
    classifier: &Classifier,
    routing: &RoutingConfig,
    view: &ClusterView,
    query: &str,
) -> QueryAnalysis {
    let sql = query.as_bytes();
    let shape = shape(sql, true);
    let findings: Vec<String> = shape
        .findings()
        .iter()
        .map(|f| f.message().to_owned())
        .collect();
    let complexity = shape.complexity().as_str().to_owned();
    if let Some(command) = commands::session_command(sql) {
        return QueryAnalysis {
            query: query.to_owned(),
            class: "meridian command".to_owned(),
            is_read: false,
            is_write: false,
            route: QueryRoute {
                target: "proxy".to_owned(),
                node: None,
                reason: command_effect(command),
            },
            pin: None,
            statements: Vec::new(),
            complexity,
            findings,
            recommendation: "answered by the proxy itself; no server sees it".to_owned(),
        };
    }
    let policy = meridian_proxy::route_policy(routing);
    let verdict = verdict(classifier, &policy, view, Target::Auto, sql);
    let name = |node: NodeId| {
        view.nodes
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.name.to_string())
    };
    let route = match verdict.decision {
        RouteDecision::Primary { node, reason } => QueryRoute {
            target: "primary".to_owned(),
            node: name(node),
            reason: reason.to_string(),
        },
        RouteDecision::Replica { node, reason, .. } => QueryRoute {
            target: "replica".to_owned(),
            node: name(node),
            reason: reason.to_string(),
        },
        RouteDecision::Unavailable(why) => QueryRoute {
            target: "none".to_owned(),
            node: None,
            reason: match why {
                NoRoute::NoPrimary => "no node is known to be the primary".to_owned(),
                NoRoute::Paused => {
                    "a failover or switchover is under way: it waits for the new primary".to_owned()
                }
                NoRoute::NoReplica(reason) => {
                    format!("no replica can serve it and primary_reads = never ({reason})")
                }
            },
        },
    };
    let is_write = verdict.classification.is_write();
    QueryAnalysis {
        query: query.to_owned(),
        class: verdict.classification.to_string(),
        is_read: verdict.classification.is_read_only(),
        is_write,
        recommendation: recommendation(&route, is_write, verdict.pin.as_deref(), &findings),
        route,
        pin: verdict.pin,
        statements: verdict
            .statements
            .into_iter()
            .map(|(text, class)| StatementClass {
                text,
                class: class.to_string(),
            })
            .collect(),
        complexity,
        findings,
    }
}

/// One sentence of advice: the most important thing about where and how the query runs.
fn recommendation(
    route: &QueryRoute,
    is_write: bool,
    pin: Option<&str>,
    findings: &[String],
) -> String {
    if let Some(pin) = pin {
        return format!(
            "it pins the session to one server connection ({pin}): avoid it on hot paths, or \
             use transaction-scoped alternatives, so the pool can share connections"
        );
    }
    if let Some(first) = findings.first() {
        return format!("{first}; otherwise it routes as shown");
    }
    match (route.target.as_str(), is_write) {
        ("replica", _) => {
            "a read: it runs on the nearest caught-up replica, sparing the primary".to_owned()
        }
        ("primary", true) => "a write: it runs on the primary; keep transactions short".to_owned(),
        ("primary", false) => format!(
            "a read on the primary ({}): reads a replica can take scale better there",
            route.reason
        ),
        _ => format!("it cannot run right now: {}", route.reason),
    }
}

/// How a replica is chosen, and what sends the read elsewhere.
fn replica_notes(policy: &RoutePolicy, routing: &RoutingConfig) -> String {
    let mut notes =
        String::from("            among replicas that are up and under the lag ceilings (");
    notes.push_str(&format!(
        "{} bytes, {:?}), ",
        policy.max_lag_bytes, policy.max_lag
    ));
    if let Some(region) = &policy.local_region {
        notes.push_str(&format!("region {region} first, "));
    }
    notes.push_str("then the lowest latency x in-flight;\n");
    if routing.read_your_writes != ReadYourWrites::Off {
        notes.push_str(&format!(
            "            after the session's own write, only a replica that replayed it (waiting up to {:?});\n",
            routing.causal_read_timeout
        ));
    }
    notes.push_str(match policy.primary_reads {
        PrimaryReads::Never => {
            "            no replica qualifying: the read fails (primary_reads = never)\n"
        }
        PrimaryReads::Fallback => {
            "            no replica qualifying: the primary (primary_reads = fallback)\n"
        }
        PrimaryReads::Always => {
            "            the primary competes with the replicas (primary_reads = always)\n"
        }
    });
    notes
}

/// A primary and a caught-up replica, both healthy.
fn healthy_view() -> ClusterView {
    let node = |id: u16, role: Role| NodeView {
        id: NodeId(id),
        name: Arc::from(if role == Role::Primary {
            "primary"
        } else {
            "replica"
        }),
        region: Arc::from(""),
        host: Arc::from("localhost"),
        port: 5432,
        role,
        health: Health::Healthy,
        lag: Some(meridian_core::lag::Lag::default()),
        replayed: None,
        latency: None,
    };
    ClusterView {
        generation: 1,
        primary: Some(NodeId(0)),
        paused: false,
        nodes: vec![node(0, Role::Primary), node(1, Role::Replica)],
    }
}

/// An idle proxy.
struct NoLoad;

impl Loads for NoLoad {
    fn load(&self, _node: NodeId) -> NodeLoad {
        NodeLoad::default()
    }
    fn tie_break(&self) -> u64 {
        0
    }
}

/// `text` on one line, whitespace runs collapsed, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let cut: String = joined.chars().take(max - 3).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sql: &str, route: Target) -> String {
        analyze(
            &Classifier::default(),
            &RoutingConfig::default(),
            "defaults",
            route,
            sql.as_bytes(),
        )
    }

    #[test]
    fn a_read_goes_to_a_replica_and_a_hidden_write_to_the_primary() {
        let read = report(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            Target::Auto,
        );
        assert!(
            read.contains("class:      read: query that only reads"),
            "{read}"
        );
        assert!(
            read.contains("route:      a replica: an autocommit read"),
            "{read}"
        );
        let nextval = report("SELECT nextval('orders_id_seq')", Target::Auto);
        assert!(
            nextval.contains("class:      write: calls nextval()"),
            "{nextval}"
        );
        assert!(
            nextval.contains("route:      the primary: the statement may write"),
            "{nextval}"
        );
    }

    #[test]
    fn batches_list_their_statements_and_pins_are_named() {
        let batch = report("SELECT 1; CREATE TEMP TABLE t (a int)", Target::Auto);
        assert!(batch.contains("  1. SELECT 1\n"), "{batch}");
        assert!(
            batch.contains("  2. CREATE TEMP TABLE t (a int)\n"),
            "{batch}"
        );
        assert!(batch.contains("pins:"), "{batch}");
        assert!(batch.contains("temporary table"), "{batch}");
    }

    #[test]
    fn hints_and_the_session_route_are_applied() {
        let hinted = report("/* meridian:primary */ SELECT 1", Target::Auto);
        assert!(
            hinted.contains("the primary: hint /* meridian:primary */"),
            "{hinted}"
        );
        let session = report("SELECT 1", Target::Primary);
        assert!(
            session.contains("SET meridian.route = primary"),
            "{session}"
        );
        let command = report("SET meridian.route = replica", Target::Auto);
        assert!(command.starts_with("meridian command"), "{command}");
    }
}
