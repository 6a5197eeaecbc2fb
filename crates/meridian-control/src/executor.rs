//! Carrying out the failover machine's steps on real servers.
//!
//! Each step opens its own connection (the probe connections stay for probing), does one
//! thing and reports: fence a primary (read-only by default, client sessions ended, its last
//! WAL position read once nothing can write), wait for a replica to replay a position,
//! promote (`pg_promote(wait => true)`, verified out of recovery, with the settings a fenced
//! past would have left reset), repoint a replica (`primary_conninfo` rewritten to the new
//! upstream, its slot created there, `pg_reload_conf()`: PostgreSQL 13+ applies it without a
//! restart), set `synchronous_standby_names`, and rejoin an old primary as a replica.
//!
//! Rejoin needs the node's data directory: for a node whose `data_dir` Meridian manages (same
//! host) it stops the server, runs `pg_rewind` against the new primary (which also completes
//! crash recovery of a killed server first, PostgreSQL 13+), writes `standby.signal` and the
//! replication settings, and starts it with `pg_ctl`, all as the owner of the data directory.
//! For other nodes a configured hook command does it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::failover::{StepOutput, Work};
use meridian_core::topology::NodeId;
use meridian_tls::ServerTls;
use tokio::process::Command;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::credentials::Credentials;

/// A node as the executor reaches it.
#[derive(Debug, Clone)]
pub struct ExecNode {
    /// Identity.
    pub id: NodeId,
    /// Name: its `application_name` and replication slot name on its upstream.
    pub name: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// TLS toward it.
    pub tls: ServerTls,
    /// Its data directory, when Meridian manages it on this host.
    pub data_dir: Option<PathBuf>,
    /// Time allowed for one step on it (its region's `failover_timeout`).
    pub step_timeout: Duration,
}

/// What the executor needs.
#[derive(Debug, Clone)]
pub struct Executor {
    /// Every node, indexed by id.
    pub nodes: Vec<ExecNode>,
    /// How steps log in (the role needs superuser or the grants for `ALTER SYSTEM`,
    /// `pg_promote`, `pg_terminate_backend` and slot creation).
    pub credentials: Credentials,
    /// Where `pg_ctl` and `pg_rewind` are, for managed nodes.
    pub pg_bin: Option<PathBuf>,
    /// Shell command that rejoins an unmanaged node; `{node}`, `{host}`, `{port}`,
    /// `{primary_host}`, `{primary_port}` are replaced.
    pub rejoin_command: Option<String>,
    /// Connecting to a node.
    pub connect_timeout: Duration,
}

/// Quotes a value for SQL: `'...'` with quotes doubled.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The replication slot of a node: its name with every character PostgreSQL does not allow
/// in slot names replaced by `_` (lower case letters, digits, underscores).
pub fn slot_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// How long a fence waits for the transactions under way on the old primary to finish before
/// ending their sessions.
const DRAIN: Duration = Duration::from_secs(2);

impl Executor {
    fn node(&self, id: NodeId) -> Result<&ExecNode, String> {
        self.nodes
            .get(usize::from(id.0))
            .ok_or_else(|| format!("unknown node {id}"))
    }

    /// Does `work` within the step timeout of the node it is done on.
    pub async fn run(&self, work: Work) -> Result<StepOutput, String> {
        let limit = self
            .node(work.node())
            .map(|n| n.step_timeout)
            .unwrap_or(Duration::from_secs(15));
        match tokio::time::timeout(limit, self.run_unbounded(work)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {limit:?}")),
        }
    }

    async fn run_unbounded(&self, work: Work) -> Result<StepOutput, String> {
        match work {
            Work::Fence { node } => self.fence(node).await,
            Work::Unfence { node } => {
                let client = self.connect(node).await?;
                execute(&client, "ALTER SYSTEM RESET default_transaction_read_only").await?;
                execute(&client, "SELECT pg_reload_conf()").await?;
                Ok(StepOutput::Done)
            }
            Work::WaitReplay { node, lsn } => self.wait_replay(node, lsn).await,
            Work::Promote { node } => self.promote(node).await,
            Work::Repoint { node, upstream } => self.repoint(node, upstream).await,
            Work::SetSynchronous { node, value } => {
                let client = self.connect(node).await?;
                let sql = if value.is_empty() {
                    "ALTER SYSTEM RESET synchronous_standby_names".to_owned()
                } else {
                    format!(
                        "ALTER SYSTEM SET synchronous_standby_names = {}",
                        literal(&value)
                    )
                };
                execute(&client, &sql).await?;
                execute(&client, "SELECT pg_reload_conf()").await?;
                Ok(StepOutput::Done)
            }
            Work::Rejoin { node, upstream } => self.rejoin(node, upstream).await,
        }
    }

    async fn connect(&self, id: NodeId) -> Result<Client, String> {
        let node = self.node(id)?;
        let connect = crate::locate::connect(
            &node.host,
            node.port,
            &node.tls,
            &self.credentials,
            None,
            "meridian-failover",
            self.connect_timeout,
        );
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("cannot connect to {}: {}", node.name, describe(&e))),
            Err(_) => Err(format!("cannot connect to {}: timed out", node.name)),
        }
    }

    /// Read-only by default, every client session ended, then the WAL position once no
    /// session that could still write remains.
    async fn fence(&self, node: NodeId) -> Result<StepOutput, String> {
        let client = self.connect(node).await?;
        execute(
            &client,
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .await?;
        execute(&client, "SELECT pg_reload_conf()").await?;
        let others = "SELECT count(*) FROM pg_stat_activity \
                      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                      AND application_name NOT LIKE 'meridian-%'";
        // Let the transactions under way finish first: the proxy holds new ones from the moment
        // the view is paused, so these end on their own within moments, and a statement sent
        // just before the switchover commits and is acknowledged instead of failing with 57P01
        // (terminated) — whose commit the client could not tell from a loss. A transaction that
        // stays open longer (an idle client inside BEGIN) is ended after DRAIN.
        let in_transaction = format!("{others} AND xact_start IS NOT NULL");
        let drain_until = tokio::time::Instant::now() + DRAIN;
        while value(&client, &in_transaction)
            .await?
            .as_deref()
            .unwrap_or("0")
            != "0"
            && tokio::time::Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        execute(
            &client,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND application_name NOT LIKE 'meridian-%'",
        )
        .await?;
        // A terminated backend finishes (commits or aborts) what it is doing as it exits; its
        // records must be in the position we report.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while value(&client, others).await?.as_deref().unwrap_or("0") != "0" {
            if tokio::time::Instant::now() > deadline {
                return Err("client sessions did not end within 5 s of being terminated".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lsn = value(&client, "SELECT pg_current_wal_lsn()::text")
            .await?
            .and_then(|text| text.parse::<Lsn>().ok());
        Ok(StepOutput::Fenced { lsn })
    }

    async fn wait_replay(&self, node: NodeId, lsn: Lsn) -> Result<StepOutput, String> {
        let client = self.connect(node).await?;
        loop {
            let replayed = value(&client, "SELECT pg_last_wal_replay_lsn()::text")
                .await?
                .and_then(|text| text.parse::<Lsn>().ok());
            if replayed.is_some_and(|replayed| replayed >= lsn) {
                return Ok(StepOutput::Done);
            }
            // Polling a position: PostgreSQL has no notification for replay progress.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn promote(&self, node: NodeId) -> Result<StepOutput, String> {
        let client = self.connect(node).await?;
        // Someone may have promoted it already (an operator racing Meridian): pg_promote would
        // fail with "recovery is not in progress", yet the node is what was asked for.
        let in_recovery = value(&client, "SELECT pg_is_in_recovery()").await?;
        if in_recovery.as_deref() == Some("t") {
            let promoted = value(
                &client,
                "SELECT pg_promote(wait => true, wait_seconds => 60)",
            )
            .await?;
            if promoted.as_deref() != Some("t") {
                return Err(format!("pg_promote returned {promoted:?}"));
            }
        }
        if value(&client, "SELECT pg_is_in_recovery()")
            .await?
            .as_deref()
            != Some("f")
        {
            return Err("still in recovery after pg_promote".into());
        }
        // A fence from its past may have made it read-only: the new primary takes writes. Its
        // synchronous replicas were set by the step before this one.
        execute(&client, "ALTER SYSTEM RESET default_transaction_read_only").await?;
        execute(&client, "SELECT pg_reload_conf()").await?;
        let timeline = value(&client, "SELECT pg_walfile_name(pg_current_wal_lsn())")
            .await?
            .and_then(|name| {
                name.get(..8)
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            });
        Ok(StepOutput::Promoted { timeline })
    }

    async fn repoint(&self, node: NodeId, upstream: NodeId) -> Result<StepOutput, String> {
        let target = self.node(upstream)?.clone();
        let replica = self.connect(node).await?;
        let conninfo = value(
            &replica,
            "SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'",
        )
        .await?
        .unwrap_or_default();
        let slot = value(
            &replica,
            "SELECT setting FROM pg_settings WHERE name = 'primary_slot_name'",
        )
        .await?
        .filter(|s| !s.is_empty());
        let conninfo = with_host(&conninfo, &target.host, target.port, &self.node(node)?.name);
        if let Some(slot) = &slot {
            let upstream_client = self.connect(upstream).await?;
            ensure_slot(&upstream_client, slot).await?;
        }
        execute(
            &replica,
            &format!("ALTER SYSTEM SET primary_conninfo = {}", literal(&conninfo)),
        )
        .await?;
        execute(&replica, "SELECT pg_reload_conf()").await?;
        Ok(StepOutput::Done)
    }

    async fn rejoin(&self, node: NodeId, upstream: NodeId) -> Result<StepOutput, String> {
        let exec_node = self.node(node)?.clone();
        let target = self.node(upstream)?.clone();
        if let Some(data_dir) = &exec_node.data_dir {
            return self.rejoin_managed(&exec_node, data_dir, &target).await;
        }
        let Some(command) = &self.rejoin_command else {
            return Err(format!(
                "{} is not managed by Meridian (no data_dir) and no rejoin_command is configured: \
                 turn it into a replica of {} by hand",
                exec_node.name, target.name
            ));
        };
        let command = command
            .replace("{node}", &exec_node.name)
            .replace("{host}", &exec_node.host)
            .replace("{port}", &exec_node.port.to_string())
            .replace("{primary_host}", &target.host)
            .replace("{primary_port}", &target.port.to_string());
        let output = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run the rejoin command: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "the rejoin command failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(StepOutput::Done)
    }

    async fn rejoin_managed(
        &self,
        node: &ExecNode,
        data_dir: &Path,
        upstream: &ExecNode,
    ) -> Result<StepOutput, String> {
        let bin = match &self.pg_bin {
            Some(bin) => bin.clone(),
            None => pg_bindir().await?,
        };
        let owner = Owner::of(data_dir)?;
        // Stop it if it runs (an old primary that came back). "not running" is fine.
        let _ = owner
            .command(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data_dir)
            .args(["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .await;
        // A freshly promoted primary writes its new timeline to pg_control only at the end of
        // its first checkpoint; until then pg_rewind sees both on the same timeline and does
        // nothing (PostgreSQL docs, pg_rewind notes).
        let upstream_client = self.connect(upstream.id).await?;
        execute(&upstream_client, "CHECKPOINT").await?;
        let source = format!(
            "host={} port={} user={} dbname={}",
            upstream.host, upstream.port, self.credentials.user, self.credentials.database
        );
        // A replica that crashed (killed with its region, say) must finish crash recovery
        // before pg_rewind can compare it: pg_rewind runs it in single-user mode for that,
        // which refuses a standby ("standby mode is not supported by single-user servers").
        // So the signal file goes while pg_rewind runs, and is put back should it fail, so
        // that a restart never brings the node up writable on its old timeline.
        let signal = data_dir.join("standby.signal");
        let was_standby = signal.exists();
        if was_standby {
            std::fs::remove_file(&signal)
                .map_err(|e| format!("cannot remove {}: {e}", signal.display()))?;
        }
        let mut rewind = owner.command(bin.join("pg_rewind"));
        rewind
            .arg("--target-pgdata")
            .arg(data_dir)
            .arg("--source-server")
            .arg(&source);
        if let Some(password) = &self.credentials.password {
            rewind.env("PGPASSWORD", password);
        }
        // pg_rewind reports on stderr, failure or not.
        let rewound = match rewind.output().await {
            Ok(output) if output.status.success() => {
                Ok(String::from_utf8_lossy(&output.stderr).into_owned())
            }
            Ok(output) => Err(format!(
                "pg_rewind of {} from {} failed: {}",
                node.name,
                upstream.name,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run pg_rewind: {e}")),
        };
        if rewound.is_err() && was_standby {
            write_standby_signal(&signal, &owner)?;
        }
        let report = rewound?;
        tracing::info!(node = %node.name, upstream = %upstream.name, "pg_rewind: {}", report.trim());
        let slot = slot_name(&node.name);
        let mut conninfo = format!(
            "host={} port={} user={} application_name={}",
            upstream.host, upstream.port, self.credentials.user, node.name
        );
        if let Some(password) = &self.credentials.password {
            conninfo.push_str(&format!(" password={}", conninfo_value(password)));
        }
        set_auto_conf(data_dir, "primary_conninfo", &conninfo)?;
        set_auto_conf(data_dir, "primary_slot_name", &slot)?;
        write_standby_signal(&signal, &owner)?;
        ensure_slot(&upstream_client, &slot).await?;
        // Inside the data directory: its owner may write there, whoever owns the parent.
        let log = data_dir.join("meridian-rejoin.log");
        let output = owner
            .command(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data_dir)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", node.port))
            .args(["start", "-w", "-t", "60"])
            .output()
            .await
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "starting {} as a replica failed (see {}): {}",
                node.name,
                log.display(),
                String::from_utf8_lossy(&output.stdout).trim()
            ));
        }
        Ok(StepOutput::Done)
    }
}

/// Whoever owns a data directory: PostgreSQL's tools must run as that user (and refuse root).
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    fn of(data_dir: &Path) -> Result<Owner, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(data_dir)
            .map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        if nix::unistd::Uid::effective().is_root() && self.uid != 0 {
            command.uid(self.uid).gid(self.gid);
        }
        command.kill_on_drop(true);
        command
    }

    fn give(&self, path: &Path) -> Result<(), String> {
        if nix::unistd::Uid::effective().is_root() {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .map_err(|e| format!("cannot give {} to its owner: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Writes `standby.signal` (empty) for the data directory's owner.
fn write_standby_signal(signal: &Path, owner: &Owner) -> Result<(), String> {
    std::fs::write(signal, b"").map_err(|e| format!("cannot write {}: {e}", signal.display()))?;
    owner.give(signal)
}

async fn pg_bindir() -> Result<PathBuf, String> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .await
        .map_err(|e| {
            format!("cannot find the PostgreSQL binaries (pg_config: {e}); set [failover] pg_bin")
        })?;
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// Rewrites one parameter of `postgresql.auto.conf` (the server is stopped).
fn set_auto_conf(data_dir: &Path, name: &str, value: &str) -> Result<(), String> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| line.split('=').next().map(str::trim) != Some(name))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{name} = {}", literal(value)));
    std::fs::write(&path, lines.join("\n") + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn ensure_slot(client: &Client, slot: &str) -> Result<(), String> {
    execute(
        client,
        &format!(
            "SELECT pg_create_physical_replication_slot({0}, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {0})",
            literal(slot)
        ),
    )
    .await
}

/// A libpq connection string with `host` and `port` replaced (and `hostaddr` dropped), and
/// `application_name` set when absent.
pub fn with_host(conninfo: &str, host: &str, port: u16, application_name: &str) -> String {
    let mut pairs: Vec<(String, String)> = parse_conninfo(conninfo)
        .into_iter()
        .filter(|(key, _)| key != "host" && key != "port" && key != "hostaddr")
        .collect();
    pairs.insert(0, ("port".into(), port.to_string()));
    pairs.insert(0, ("host".into(), host.to_owned()));
    if !pairs.iter().any(|(key, _)| key == "application_name") {
        pairs.push(("application_name".into(), application_name.to_owned()));
    }
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", conninfo_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a conninfo value when it needs it (libpq: single quotes, backslash escapes).
pub fn conninfo_value(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Splits a libpq `key=value` connection string (PostgreSQL docs, 34.1.1.1).
fn parse_conninfo(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            return pairs;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            return pairs;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

async fn execute(client: &Client, sql: &str) -> Result<(), String> {
    client
        .simple_query(sql)
        .await
        .map(|_| ())
        .map_err(|e| format!("{sql}: {}", describe(&e)))
}

async fn value(client: &Client, sql: &str) -> Result<Option<String>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {}", describe(&e)))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten())
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_host_and_port_are_replaced_and_the_rest_kept() {
        assert_eq!(
            with_host(
                "host=127.0.0.1 port=5432 user=postgres application_name=main-2",
                "10.0.0.9",
                6000,
                "x"
            ),
            "host=10.0.0.9 port=6000 user=postgres application_name=main-2"
        );
        assert_eq!(
            with_host(
                "user=rep password='it\\'s' hostaddr=1.2.3.4 sslmode=require",
                "h",
                1,
                "main-3"
            ),
            "host=h port=1 user=rep password='it\\'s' sslmode=require application_name=main-3"
        );
        assert_eq!(
            with_host(r"user=rep password='a b\'c'", "h", 1, "n"),
            r"host=h port=1 user=rep password='a b\'c' application_name=n"
        );
    }

    #[test]
    fn slot_names_are_what_postgres_accepts() {
        assert_eq!(slot_name("eu-west-1"), "eu_west_1");
        assert_eq!(slot_name("Main.2"), "main_2");
    }
}
