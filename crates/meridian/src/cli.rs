//! The operator commands of the `meridian` binary (`status`, `alerts`, `history`, `export`,
//! `switchover`, `failover`, `rejoin`, `reconnect`, `health-check`, `refresh-connections`,
//! `analyze-query --live`): thin clients of the admin API of a running Meridian.
//!
//! Exit codes, for scripts: 0 done; 1 Meridian refused the command or the run failed (the
//! message says why); 3 Meridian could not be reached or answered something unexpected.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of Meridian's admin listener.
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_URL",
        default_value = "http://127.0.0.1:9930",
        global = true
    )]
    url: String,
    /// The admin token (commands need it).
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

const REFUSED: u8 = 1;
const UNREACHABLE: u8 = 3;

/// A run can take a while (a switchover waits for replay, a rejoin runs pg_rewind).
const TIMEOUT: Duration = Duration::from_secs(180);

enum Failure {
    /// Meridian answered with an error.
    Refused(String),
    /// No usable answer.
    Unreachable(String),
}

fn call(api: &ApiArgs, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let authorization = api.token.as_ref().map(|t| format!("Bearer {t}"));
    let response = if method == "POST" {
        let mut request = agent.post(&url);
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
        }
        match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        }
    } else {
        let mut request = agent.get(&url);
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
        }
        request.call()
    };
    let mut response = response
        .map_err(|e| Failure::Unreachable(format!("cannot reach Meridian at {url}: {e}")))?;
    let status = response.status();
    let value: Value = response.body_mut().read_json().map_err(|e| {
        Failure::Unreachable(format!("unexpected answer from {url} ({status}): {e}"))
    })?;
    if status.is_success() {
        Ok(value)
    } else {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        Err(Failure::Refused(format!(
            "{message} (HTTP {})",
            status.as_u16()
        )))
    }
}

fn finish(api: &ApiArgs, result: Result<Value, Failure>, show: fn(&Value) -> String) -> ExitCode {
    match result {
        Ok(value) if api.json => {
            println!("{value:#}");
            ExitCode::SUCCESS
        }
        Ok(value) => {
            print!("{}", show(&value));
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            eprintln!("meridian: {message}");
            ExitCode::from(REFUSED)
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("meridian: {message}");
            ExitCode::from(UNREACHABLE)
        }
    }
}

/// `meridian switchover [--to NODE]`.
pub fn switchover(api: &ApiArgs, to: Option<&str>) -> ExitCode {
    let body = to.map(|to| serde_json::json!({ "to": to }));
    finish(
        api,
        call(api, "POST", "/api/database/switchover", body),
        show_run,
    )
}

/// `meridian failover --region REGION`.
pub fn failover(api: &ApiArgs, region: &str) -> ExitCode {
    let path = format!("/api/database/failover/{}", path_segment(region));
    finish(api, call(api, "POST", &path, None), show_run)
}

/// `meridian rejoin NODE`.
pub fn rejoin(api: &ApiArgs, node: &str) -> ExitCode {
    let path = format!("/api/database/rejoin/{}", path_segment(node));
    finish(api, call(api, "POST", &path, None), show_run)
}

/// `meridian history [--limit N]`.
pub fn history(api: &ApiArgs, limit: usize) -> ExitCode {
    let path = format!("/api/database/failover-history?limit={limit}");
    finish(api, call(api, "GET", &path, None), show_history)
}

/// `meridian alerts [--active] [--severity S] [--limit N]`.
pub fn alerts(api: &ApiArgs, active: bool, severity: Option<&str>, limit: usize) -> ExitCode {
    let mut path = format!("/api/database/alerts?limit={limit}");
    if active {
        path.push_str("&active=true");
    }
    if let Some(severity) = severity {
        path.push_str(&format!("&severity={}", path_segment(severity)));
    }
    finish(api, call(api, "GET", &path, None), show_alerts)
}

/// One line per alert, newest first.
fn show_alerts(alerts: &Value) -> String {
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        return "no alert\n".to_owned();
    }
    let mut out = format!(
        "{:>4}  {:<8}  {:<9}  {:<20}  {:<12}  {}\n",
        "id", "state", "severity", "kind", "node", "message"
    );
    for alert in &alerts {
        out.push_str(&format!(
            "{:>4}  {:<8}  {:<9}  {:<20}  {:<12}  {}\n",
            alert["id"].to_string(),
            if alert["active"] == Value::Bool(true) {
                "active"
            } else {
                "resolved"
            },
            text(&alert["severity"]),
            text(&alert["kind"]),
            text(&alert["node"]),
            text(&alert["message"]),
        ));
    }
    out
}

/// `meridian status`: the topology by region.
pub fn status(api: &ApiArgs) -> ExitCode {
    finish(
        api,
        call(api, "GET", "/api/database/status", None),
        show_status,
    )
}

/// `meridian export`: the full report as JSON, for `> report.json`.
pub fn export(api: &ApiArgs) -> ExitCode {
    finish(
        api,
        call(api, "GET", "/api/database/export", None),
        |report| format!("{report:#}\n"),
    )
}

/// `meridian health-check`: probe every node now, then the topology.
pub fn health_check(api: &ApiArgs) -> ExitCode {
    finish(
        api,
        call(api, "POST", "/api/database/health-check", None),
        show_status,
    )
}

/// `meridian reconnect REGION`: recycle the region's pools and probe it on fresh connections.
pub fn reconnect(api: &ApiArgs, region: &str) -> ExitCode {
    let path = format!("/api/database/reconnect/{}", path_segment(region));
    finish(api, call(api, "POST", &path, None), |answer| {
        let mut out = format!(
            "region {}: {}\n",
            text(&answer["region"]),
            show_recycled(&answer["recycled"]).trim_end()
        );
        for node in answer["nodes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<16}  {:<8}  {}\n",
                text(&node["name"]),
                text(&node["role"]),
                text(&node["health"]),
            ));
        }
        out
    })
}

/// `meridian refresh-connections`: recycle every pool's connections gracefully.
pub fn refresh_connections(api: &ApiArgs) -> ExitCode {
    finish(
        api,
        call(api, "POST", "/api/database/connections/refresh", None),
        show_recycled,
    )
}

fn show_recycled(recycled: &Value) -> String {
    format!(
        "{} pools recycled: {} idle connections closed, {} in use closed when their transaction ends\n",
        recycled["pools"], recycled["idle"], recycled["in_use"]
    )
}

/// `meridian analyze-query --live "SQL"`: the running Meridian's analysis, against its live
/// cluster.
pub fn analyze_live(api: &ApiArgs, sql: &str) -> ExitCode {
    finish(
        api,
        call(
            api,
            "POST",
            "/api/database/analyze-query",
            Some(serde_json::json!({ "query": sql })),
        ),
        show_analysis,
    )
}

fn show_analysis(analysis: &Value) -> String {
    let route = &analysis["route"];
    let mut out = format!("class:      {}\n", text(&analysis["class"]));
    for (i, statement) in analysis["statements"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push_str(&format!(
            "  {}. {}\n     {}\n",
            i + 1,
            text(&statement["text"]),
            text(&statement["class"])
        ));
    }
    if let Some(pin) = analysis["pin"].as_str() {
        out.push_str(&format!("pins:       {pin}\n"));
    }
    out.push_str(&format!(
        "route:      {}{}: {}\n",
        text(&route["target"]),
        route["node"]
            .as_str()
            .map(|node| format!(" ({node})"))
            .unwrap_or_default(),
        text(&route["reason"])
    ));
    out.push_str(&format!(
        "complexity: {}\n",
        text(&analysis["estimatedComplexity"])
    ));
    for finding in analysis["findings"].as_array().into_iter().flatten() {
        out.push_str(&format!("            - {}\n", text(finding)));
    }
    out.push_str(&format!(
        "advice:     {}\n",
        text(&analysis["recommendation"])
    ));
    out
}

/// Names are `[a-z0-9_-]` (validated in the config), so only a wrong argument needs escaping.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn seconds(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| format!("{:.2} s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// One run: headline, then its phases.
fn show_run(run: &Value) -> String {
    let mut out = format!(
        "{} {} {} in {}: {} -> {} (generation {})\n",
        text(&run["kind"]),
        run["id"],
        text(&run["outcome"]),
        seconds(&run["duration_ms"]),
        text(&run["old_primary"]),
        text(&run["new_primary"]),
        run["generation"],
    );
    for phase in run["phases"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<11} {:>9}  {}\n",
            text(&phase["name"]),
            seconds(&phase["duration_ms"]),
            text(&phase["outcome"]),
        ));
    }
    out
}

/// The history as a table, newest first.
fn show_history(runs: &Value) -> String {
    let runs = runs.as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        return "no failover or switchover recorded\n".to_owned();
    }
    let mut out = format!(
        "{:>4}  {:<10}  {:<10}  {:<10}  {:>4}  {:>9}  {}\n",
        "id", "kind", "from", "to", "gen", "took", "outcome"
    );
    for run in &runs {
        out.push_str(&format!(
            "{:>4}  {:<10}  {:<10}  {:<10}  {:>4}  {:>9}  {}\n",
            run["id"].to_string(),
            text(&run["kind"]),
            text(&run["old_primary"]),
            text(&run["new_primary"]),
            run["generation"].to_string(),
            seconds(&run["duration_ms"]),
            text(&run["outcome"]),
        ));
    }
    out
}

/// The topology: a headline, then per region a table of its nodes.
fn show_status(status: &Value) -> String {
    let mut out = format!(
        "primary {} (generation {}){}\n",
        text(&status["primary"]),
        status["generation"],
        if status["paused"] == Value::Bool(true) {
            ", failover under way: writes wait"
        } else {
            ""
        }
    );
    let bytes = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_owned(), |b| format!("{b} B"))
    };
    let millis = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
    };
    for region in status["regions"].as_array().into_iter().flatten() {
        out.push_str(&format!("\nregion {}\n", text(&region["name"])));
        out.push_str(&format!(
            "  {:<16}  {:<8}  {:<9}  {:>12}  {:>10}  {}\n",
            "node", "role", "health", "lag", "latency", "last error"
        ));
        for node in region["nodes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<16}  {:<8}  {:<9}  {:>12}  {:>10}  {}\n",
                text(&node["name"]),
                text(&node["role"]),
                text(&node["health"]),
                bytes(&node["lag_bytes"]),
                millis(&node["latency_ms"]),
                text(&node["last_error"]),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_one_per_line() {
        assert_eq!(show_alerts(&serde_json::json!([])), "no alert\n");
        let alerts = serde_json::json!([{
            "id": 4, "active": true, "severity": "high", "kind": "endpoint_down",
            "node": "us-2", "message": "replica not answering",
        }]);
        assert!(
            show_alerts(&alerts).ends_with(
                "   4  active    high       endpoint_down         us-2          replica not answering\n"
            ),
            "{}",
            show_alerts(&alerts)
        );
    }

    #[test]
    fn the_status_reads_as_a_table_per_region() {
        let status = serde_json::json!({
            "primary": "us-1", "generation": 2, "paused": false,
            "regions": [{ "name": "us", "nodes": [
                { "name": "us-1", "role": "primary", "health": "healthy", "lag_bytes": null,
                  "latency_ms": 1.25, "last_error": null },
                { "name": "us-2", "role": "replica", "health": "down", "lag_bytes": 4096,
                  "latency_ms": null, "last_error": "connection refused" },
            ]}],
        });
        assert_eq!(
            show_status(&status),
            "primary us-1 (generation 2)\n\nregion us\n\
             \x20 node              role      health              lag     latency  last error\n\
             \x20 us-1              primary   healthy               -      1.2 ms  -\n\
             \x20 us-2              replica   down             4096 B           -  connection refused\n"
        );
    }

    #[test]
    fn a_run_reads_as_a_headline_and_phases() {
        let run = serde_json::json!({
            "id": 3, "kind": "switchover", "outcome": "completed", "duration_ms": 350,
            "old_primary": "us-1", "new_primary": "eu-1", "generation": 2,
            "phases": [{ "name": "fence", "duration_ms": 12, "outcome": "ok" }],
        });
        assert_eq!(
            show_run(&run),
            "switchover 3 completed in 0.35 s: us-1 -> eu-1 (generation 2)\n  fence          0.01 s  ok\n"
        );
    }

    #[test]
    fn an_analysis_reads_as_labelled_lines() {
        let analysis = serde_json::json!({
            "class": "read: query that only reads", "statements": [], "pin": null,
            "route": { "target": "replica", "node": "eu-2", "reason": "an autocommit read" },
            "estimatedComplexity": "simple", "findings": ["SELECT * reads every column"],
            "recommendation": "name the columns",
        });
        assert_eq!(
            show_analysis(&analysis),
            "class:      read: query that only reads\n\
             route:      replica (eu-2): an autocommit read\n\
             complexity: simple\n\
             \x20           - SELECT * reads every column\n\
             advice:     name the columns\n"
        );
    }

    #[test]
    fn odd_names_are_escaped_in_paths() {
        assert_eq!(path_segment("eu-west_1"), "eu-west_1");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
