//! What a PostgreSQL node and an etcd member share as server processes the kit runs: the
//! process while it runs (with the cluster's watchdog kept informed), free loopback ports, and
//! the log file a server writes its output to.
//!
//! The process is reaped through its PID (see `process`), never through `Child::wait`, so that
//! a server another program started can be adopted and handled the same way.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::guardian::Guardian;
use crate::process;

/// The process of one server while it runs. Every change is told to the cluster's watchdog:
/// `+PID` when a process is recorded, `-PID` once it has been reaped.
#[derive(Debug)]
pub(crate) struct WatchedProcess {
    pid: Mutex<Option<Pid>>,
    guardian: Arc<Guardian>,
}

impl WatchedProcess {
    /// No process yet, reporting to `guardian`.
    pub(crate) fn new(guardian: Arc<Guardian>) -> WatchedProcess {
        WatchedProcess {
            pid: Mutex::new(None),
            guardian,
        }
    }

    /// Records `pid` (just started, or adopted) as the server's process.
    pub(crate) fn record(&self, pid: Pid) {
        self.guardian.watch(pid.as_raw() as u32);
        *self.lock() = Some(pid);
    }

    /// The process while one is recorded (it may have exited since: see `is_running`).
    pub(crate) fn pid(&self) -> Option<Pid> {
        *self.lock()
    }

    /// Whether the process is alive (it may be paused); one that has exited is reaped and
    /// forgotten.
    pub(crate) fn is_running(&self) -> bool {
        let mut recorded = self.lock();
        match *recorded {
            Some(pid) if process::has_exited(pid) => {
                self.guardian.forget(pid.as_raw() as u32);
                *recorded = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Stops the process of server `name` with `signal`, killing its whole tree if it has not
    /// exited within `grace`; an error if none runs or it had to be killed.
    pub(crate) async fn stop(
        &self,
        name: &str,
        signal: Signal,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let Some(pid) = self.take() else {
            bail!("{name} is not running");
        };
        let clean =
            tokio::task::spawn_blocking(move || process::shut_down(pid, signal, grace)).await?;
        self.guardian.forget(pid.as_raw() as u32);
        if !clean {
            bail!(
                "{name} did not stop within {} s and was killed",
                grace.as_secs()
            );
        }
        Ok(())
    }

    /// Stops the recorded process, or else `unrecorded` (a server another program started),
    /// now: `signal`, then SIGKILL to its whole tree after `grace`. For teardown.
    pub(crate) fn shut_down(
        &self,
        unrecorded: impl FnOnce() -> Option<Pid>,
        signal: Signal,
        grace: Duration,
    ) {
        if let Some(pid) = self.take().or_else(unrecorded) {
            process::shut_down(pid, signal, grace);
            self.guardian.forget(pid.as_raw() as u32);
        }
    }

    /// SIGKILLs the process and everything it started, at once, and reaps them.
    pub(crate) fn kill(&self) {
        if let Some(pid) = self.take() {
            process::kill_tree(pid);
            self.guardian.forget(pid.as_raw() as u32);
        }
    }

    /// Freezes the process and everything it started (SIGSTOP).
    pub(crate) fn pause(&self) {
        if let Some(pid) = self.pid() {
            process::pause_tree(pid);
        }
    }

    /// Undoes [`WatchedProcess::pause`] (SIGCONT).
    pub(crate) fn resume(&self) {
        if let Some(pid) = self.pid() {
            process::resume_tree(pid);
        }
    }

    fn take(&self) -> Option<Pid> {
        self.lock().take()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pid>> {
        self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `count` distinct ports that were free a moment ago on 127.0.0.1 (held together while
/// chosen, so that no two are the same).
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Opens a server's log file for appending (created if missing), to be its stdout and stderr.
pub(crate) fn open_log(path: &Path) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The last `lines` lines of a log file (from its last 64 KiB: etcd's JSON lines are a few
/// hundred bytes each), for error messages; empty if there is no file.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let text = log_since(path, len.saturating_sub(64 * 1024));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A log file from byte `offset` on; empty if there is no file.
pub(crate) fn log_since(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(6).unwrap();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }

    #[test]
    fn a_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        assert_eq!(log_tail(&path, 3), "");
        std::fs::write(&path, "one\ntwo\nthree\nfour\n").unwrap();
        assert_eq!(log_tail(&path, 2), "three\nfour");
        assert_eq!(log_tail(&path, 10), "one\ntwo\nthree\nfour");
        assert_eq!(log_since(&path, 8), "three\nfour\n");
    }
}
