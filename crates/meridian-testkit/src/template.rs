//! The template data directory: `initdb` once, copy per cluster.
//!
//! `initdb` takes seconds; copying its result takes tens of milliseconds. The template is kept
//! under the kit's base directory, named by a hash of the server version and of the settings
//! below, so a changed setting or an upgraded server builds a new one. It is built in a
//! private directory and renamed into place, so parallel test processes never see half a
//! template (two of them racing both build, one rename wins, the other discards its copy).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::pg_bin::PgBin;
use crate::run_as::RunAs;

/// Settings every test server shares, appended to the template's `postgresql.conf`.
///
/// `fsync = off` is safe for what the tests do: a killed server's writes are still in the page
/// cache, so crash recovery after SIGKILL behaves exactly as with fsync on; only an operating
/// system crash could lose them. The port is given per node on the command line.
pub(crate) const SERVER_CONF: &str = "
# meridian-testkit
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 16MB
fsync = off
wal_level = replica
wal_log_hints = on
max_wal_senders = 20
max_replication_slots = 20
wal_keep_size = 256MB
max_wal_size = 512MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
# A live idle stream carries a keepalive every 2.5 s, so a replica that hears nothing for
# longer can tell a hung primary from an idle one (Meridian's failover detection).
wal_sender_timeout = 5s
log_line_prefix = '%m [%p] %q%a '
log_timezone = 'UTC'
timezone = 'UTC'
lc_messages = 'C'
";

const INITDB_ARGS: &[&str] = &[
    "--username=postgres",
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
];

/// Bumped when the template's layout changes in a way the hash above would not see.
const FORMAT: u32 = 1;

/// A file written last, so that a template without it is known to be incomplete.
const COMPLETE_MARKER: &str = "meridian-template-complete";

/// Returns the template directory under `base`, building it if needed.
pub(crate) fn ensure(bin: &PgBin, run_as: &RunAs, base: &Path) -> anyhow::Result<PathBuf> {
    let mut hasher = DefaultHasher::new();
    (FORMAT, bin.version(), SERVER_CONF, INITDB_ARGS).hash(&mut hasher);
    let path = base.join(format!("template-{:016x}", hasher.finish()));
    if path.join(COMPLETE_MARKER).is_file() {
        return Ok(path);
    }

    let building = tempfile::Builder::new()
        .prefix(".template-building-")
        .tempdir_in(base)
        .with_context(|| format!("cannot create a directory in {}", base.display()))?;
    run_as.give(building.path())?;
    let output = run_as
        .command(bin.program("initdb"))
        .arg("--pgdata")
        .arg(building.path())
        .args(INITDB_ARGS)
        .output()
        .context("cannot run initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let conf = building.path().join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).context("initdb wrote no postgresql.conf")?;
    text.push_str(SERVER_CONF);
    fs::write(&conf, text)?;
    fs::write(building.path().join(COMPLETE_MARKER), b"")?;

    match fs::rename(building.path(), &path) {
        Ok(()) => {
            // The directory now lives at `path`; nothing is left for the TempDir to remove.
            let _ = building.keep();
        }
        // Another process won the race; its template is as good as ours (TempDir removes ours).
        Err(_) if path.join(COMPLETE_MARKER).is_file() => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot move the template to {}", path.display()));
        }
    }
    Ok(path)
}

/// Copies a data directory (the template) to `to`, owned by the server user.
///
/// Written by hand because it is a dozen lines: the copy must keep permission bits (the data
/// directory must be 0700) and hand each entry to the server user, which `fs::copy` alone
/// does not do.
pub(crate) fn copy_data_dir(from: &Path, to: &Path, run_as: &RunAs) -> anyhow::Result<()> {
    let meta = fs::metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
    fs::create_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
    fs::set_permissions(to, meta.permissions())?;
    run_as.give(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if entry.file_name() == COMPLETE_MARKER {
            continue;
        } else if kind.is_dir() {
            copy_data_dir(&entry.path(), &target, run_as)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            run_as.give(&target)?;
        } else {
            bail!(
                "unexpected entry in the template: {}",
                entry.path().display()
            );
        }
    }
    Ok(())
}
