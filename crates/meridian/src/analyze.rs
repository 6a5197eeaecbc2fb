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

use meridian_config::{Config, ConfigError, Environment, ReadYourWrites, RoutingConfig};
use meridian_core::classify::Classifier;
use meridian_core::routing::commands::{self, SessionCommand};
use meridian_core::routing::{
    Loads, NodeLoad, PrimaryReads, RouteDecision, RoutePolicy, SessionRoute, Statement, Target,
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
        out.push_str("meridian command, answered by the proxy itself: ");
        match command {
            Ok(SessionCommand::SetRoute(target)) => {
                out.push_str(&format!(
                    "routes the session's later statements: {}\n",
                    target.as_str()
                ));
            }
            Ok(SessionCommand::SetMinLsn(Some(lsn))) => out.push_str(&format!(
                "the session's reads must see WAL position {lsn}\n"
            )),
            Ok(SessionCommand::SetMinLsn(None)) => {
                out.push_str("forgets the position handed to the session\n")
            }
            Ok(SessionCommand::Show(setting)) => {
                out.push_str(&format!("shows {}\n", setting.name()))
            }
            Err(e) => out.push_str(&format!("error {}: {}\n", e.sqlstate, e.message)),
        }
        return out;
    }
    let policy = meridian_proxy::route_policy(routing);
    let statement = Statement {
        classification: classifier.classify(sql),
        hint: commands::leading_hint(sql),
    };
    out.push_str(&format!("class:      {}\n", statement.classification));
    let statements: Vec<_> = classifier.statements(sql).collect();
    if statements.len() > 1 {
        out.push_str("statements:\n");
        for (i, s) in statements.iter().enumerate() {
            let text = String::from_utf8_lossy(&sql[s.span.clone()]);
            out.push_str(&format!(
                "  {}. {}\n     {}\n",
                i + 1,
                one_line(&text, 72),
                s.classification
            ));
        }
    }
    if let Some(pin) = policy.pin(&statement.classification) {
        out.push_str(&format!(
            "pins:       the session keeps its server connection until it ends ({pin})\n"
        ));
    }
    let session = SessionRoute {
        target: route,
        ..SessionRoute::default()
    };
    let decision =
        meridian_core::routing::route(&statement, &session, &healthy_view(), &policy, &NoLoad);
    match decision {
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
    out.push_str(&format!(
        "policy:     read_write_split = {}, primary_reads = {}, read_your_writes = {} ({source})\n",
        routing.read_write_split, routing.primary_reads, routing.read_your_writes
    ));
    out
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
