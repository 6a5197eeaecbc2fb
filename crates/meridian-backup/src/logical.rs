//! A logical backup: `pg_dump -Fc` of every database that accepts connections, and
//! `pg_dumpall --globals-only` for the roles and tablespaces they refer to. Each dump is read
//! back with `pg_restore --list` before it is stored, so a truncated dump never enters the
//! catalog.

use std::path::Path;

use anyhow::Context;
use meridian_config::Config;
use meridian_control::locate::{Want, locate};

use crate::catalog::{self, Backup, Kind, StoredFile};
use crate::pack;
use crate::programs::{Programs, run, with_password};
use crate::store::Store;

/// The roles and tablespaces' file in a logical backup.
pub const GLOBALS: &str = "globals.sql";

/// A file name for the dump of database number `n` called `name`: the name's safe characters,
/// numbered so that two names differing only in unsafe ones stay apart.
fn dump_name(n: usize, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{n:02}-{safe}.dump")
}

/// Dumps, checks and stores every database; the catalog entry.
pub async fn take(
    config: &Config,
    store: &Store,
    programs: &Programs,
    from: Want,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Backup> {
    let located = locate(config, from).await?;
    let node = &located.node;
    let position = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                    ELSE pg_current_wal_lsn() END::text, \
                    (SELECT timeline_id FROM pg_control_checkpoint()), \
                    current_setting('server_version')";
    let row = located
        .client
        .query_one(position, &[])
        .await
        .context("cannot read the server's WAL position")?;
    let (start_lsn, timeline, server_version): (String, i32, String) =
        (row.get(0), row.get(1), row.get(2));
    let databases: Vec<String> = located
        .client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
             ORDER BY datname",
            &[],
        )
        .await
        .context("cannot list the databases")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let started_at = catalog::now();
    let id = catalog::id_for(&started_at);
    let work = crate::work_dir(scratch)?;

    let mut files = Vec::new();
    let globals = work.path().join(GLOBALS);
    progress(&format!(
        "backup {id}: roles and tablespaces from {}",
        node.name
    ));
    let mut dumpall = programs.command("pg_dumpall");
    dumpall
        .args(["--globals-only", "--no-password", "--file"])
        .arg(&globals)
        .arg("--dbname")
        .arg(node.conninfo(&located.credentials, &located.credentials.database));
    with_password(&mut dumpall, &located.credentials);
    run(dumpall, "dump of the roles and tablespaces").await?;
    files.push((GLOBALS.to_owned(), globals, None));

    for (n, database) in databases.iter().enumerate() {
        let name = dump_name(n + 1, database);
        let path = work.path().join(&name);
        progress(&format!("backup {id}: pg_dump {database}"));
        let mut dump = programs.command("pg_dump");
        dump.args(["--format=custom", "--no-password", "--file"])
            .arg(&path)
            .arg("--dbname")
            .arg(node.conninfo(&located.credentials, database));
        with_password(&mut dump, &located.credentials);
        run(dump, &format!("dump of database {database}")).await?;
        let mut list = programs.command("pg_restore");
        list.arg("--list").arg(&path);
        run(list, &format!("the dump of {database} does not read back")).await?;
        files.push((name, path, Some(database.clone())));
    }
    let stopped_at = catalog::now();
    let stop_lsn: String = located
        .client
        .query_one(position, &[])
        .await
        .context("cannot read the server's WAL position")?
        .get(0);

    let mut stored = Vec::new();
    let mut data_bytes = 0;
    for (name, path, database) in files {
        let digested = pack::digest(&path)?;
        data_bytes += digested.size;
        store.put_file(&format!("{id}/{name}"), &path).await?;
        stored.push(StoredFile {
            name,
            size: digested.size,
            sha256: digested.sha256,
            database,
        });
    }
    let backup = Backup {
        id,
        kind: Kind::Logical,
        node: node.name.clone(),
        region: node.region.clone(),
        from_replica: from == Want::Replica,
        server_version,
        started_at,
        stopped_at,
        finished_at: catalog::now(),
        timeline: timeline as u32,
        start_lsn,
        stop_lsn,
        start_wal: None,
        data_bytes,
        files: stored,
    };
    catalog::commit(store, &backup).await?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_are_safe_and_distinct() {
        assert_eq!(dump_name(1, "orders"), "01-orders.dump");
        assert_eq!(dump_name(2, "../a b"), "02-___a_b.dump");
        assert_ne!(dump_name(3, "a b"), dump_name(4, "a_b"));
    }
}
