//! Signals to a server's process tree, and reaping what dies.
//!
//! A PostgreSQL server is a postmaster and its children (backends, WAL sender and receiver,
//! checkpointer, ...). Each child calls `setsid()` at start (see `InitPostmasterChild` in the
//! PostgreSQL sources), so the children are *not* in the postmaster's process group and a
//! `killpg` would miss them: the tree is found by parent PID in `/proc` instead.
//!
//! When a postmaster is SIGKILLed its children are orphaned. This machine's PID 1 does not reap
//! orphans, so the kit marks the test process a *child subreaper* (`PR_SET_CHILD_SUBREAPER`):
//! the orphans become its children and are reaped here, and no `postgres` zombie is left.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Makes orphaned descendants of this process its own children, so that they can be reaped
/// (see the module note). The kit does this when it is first used; a test that kills a
/// process which started servers calls it first so that their processes come back to it.
pub fn adopt_orphans() {
    // Failure only means orphans go to PID 1 instead; nothing the kit does depends on it.
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Every descendant of `root`, parents before children, from one reading of `/proc`.
pub(crate) fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in processes() {
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(Pid::from_raw(child));
            queue.push(child);
        }
    }
    found
}

/// Every live postmaster whose data directory (`-D`) is under `dir`, whoever started it: a
/// server started by another program (`pg_ctl`) leaves no other trace the kit can rely on
/// while it is still writing its `postmaster.pid`. Only the postmaster keeps its command line;
/// its children rewrite theirs (`postgres: walsender ...`).
pub(crate) fn postmasters_in(dir: &Path) -> Vec<Pid> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    processes()
        .map(Pid::from_raw)
        .filter(|&pid| is_postgres(pid))
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.windows(2)
                .find(|pair| pair[0] == b"-D")
                .and_then(|pair| fs::canonicalize(std::ffi::OsStr::from_bytes(pair[1])).ok())
                .is_some_and(|data_dir| data_dir.starts_with(&dir))
        })
        .collect()
}

/// The PIDs of every process, from one reading of `/proc`.
fn processes() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The parent PID from `/proc/PID/stat` (`pid (comm) state ppid ...`; comm may hold spaces).
fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The state letter from `/proc/PID/stat`: `T` stopped, `Z` zombie, `R`/`S`/`D` alive.
fn state_of(pid: Pid) -> Option<char> {
    stat_fields(pid.as_raw())?.first()?.chars().next()
}

/// The fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// Signal delivery is asynchronous: waits (briefly, with a deadline) until each process shows
/// the expected state, so that "paused" is true when `pause` returns.
fn await_states(pids: &[Pid], stopped: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for &pid in pids {
        while std::time::Instant::now() < deadline {
            match state_of(pid) {
                None | Some('Z') | Some('X') => break,
                Some(state) if (state == 'T') == stopped => break,
                Some(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }
}

/// Stops (`SIGSTOP`) a server: the postmaster first, so it forks nothing new, then the rest.
pub(crate) fn pause_tree(postmaster: Pid) {
    let _ = kill(postmaster, Signal::SIGSTOP);
    await_states(&[postmaster], true);
    let children = descendants(postmaster);
    for &pid in &children {
        let _ = kill(pid, Signal::SIGSTOP);
    }
    await_states(&children, true);
}

/// Continues (`SIGCONT`) a stopped server: the children first, then the postmaster.
pub(crate) fn resume_tree(postmaster: Pid) {
    let children = descendants(postmaster);
    for &pid in &children {
        let _ = kill(pid, Signal::SIGCONT);
    }
    let _ = kill(postmaster, Signal::SIGCONT);
    await_states(&children, false);
    await_states(&[postmaster], false);
}

/// SIGKILLs a whole server at once and reaps the postmaster and, as subreaper, its children.
pub(crate) fn kill_tree(postmaster: Pid) {
    // Frozen first so that the set of children cannot change under us.
    let _ = kill(postmaster, Signal::SIGSTOP);
    let children = descendants(postmaster);
    for &pid in &children {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = kill(postmaster, Signal::SIGKILL);
    let _ = waitpid(postmaster, None);
    // After the postmaster is reaped its children are ours (subreaper); ECHILD if they are not.
    for pid in children {
        let _ = waitpid(pid, None);
    }
}

/// Whether `pid` has exited, reaping it if it is our child.
pub(crate) fn has_exited(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // Not our child: reaped already, or an adopted server started by someone else.
        Err(Errno::ECHILD) => !is_postgres(pid),
        Err(_) => false,
    }
}

/// Whether `pid` is a live (not zombie) `postgres` process.
pub(crate) fn is_postgres(pid: Pid) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() == "postgres" && state_of(pid).is_some_and(|state| state != 'Z')
}

/// Sends `signal` and waits up to `grace` for the postmaster to exit, reaping it; then, if it
/// is still alive, kills the whole tree. Returns whether it exited within the grace period.
pub(crate) fn shut_down(postmaster: Pid, signal: Signal, grace: Duration) -> bool {
    // A paused server would keep the signal pending forever.
    resume_tree(postmaster);
    let _ = kill(postmaster, signal);
    let deadline = std::time::Instant::now() + grace;
    let mut pause = Duration::from_millis(2);
    while std::time::Instant::now() < deadline {
        if has_exited(postmaster) {
            return true;
        }
        // Polling a process exit with a deadline: there is no portable blocking wait with a
        // timeout for a child process.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    kill_tree(postmaster);
    false
}
