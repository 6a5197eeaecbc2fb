//! A watchdog that stops a test cluster's servers if the test process dies without running
//! `Drop`.
//!
//! `Drop` stops every server when a test ends or panics, but not when the test process is
//! killed (a test runner's timeout, SIGKILL, `abort`). For that case each cluster (PostgreSQL
//! or etcd) starts a tiny shell process in its own process group, told over its stdin which
//! server PIDs are live. The kernel closes that pipe when the test process dies, however it
//! dies; on end-of-file without a prior `exit` line the watchdog stops the recorded servers
//! (its first signal, then SIGKILL to those still alive after 5 s) and removes the cluster's
//! directory (unless it is to be kept).
//!
//! A recorded PID may have been reused by then, so the watchdog signals only a process it
//! recognises as one of its servers ([`Recognise`]).
//!
//! Protocol, one line each: `+PID` (a server started), `-PID` (it was reaped by us; never
//! signal that PID again, it may be reused), `exit` (clean teardown done, leave quietly).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;
use nix::sys::signal::Signal;

/// `$1` the cluster directory, `$2` `keep` or `remove`, `$3` `comm` or `cmdline` and `$4` what
/// to find there (see [`Recognise`]), `$5` the first signal's name.
const SCRIPT: &str = r#"
dir=$1
keep=$2
by=$3
mark=$4
signal=$5
pids=" "
while IFS= read -r line; do
  case "$line" in
    +*) pids="$pids${line#+} " ;;
    -*) pids=$(printf '%s' "$pids" | sed "s/ ${line#-} / /") ;;
    exit) exit 0 ;;
  esac
done
ours() {
  case "$by" in
    comm) [ "$(cat /proc/$1/comm 2>/dev/null)" = "$mark" ] ;;
    *) tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$mark/" ;;
  esac
}
for p in $pids; do ours "$p" && kill -"$signal" "$p" 2>/dev/null; done
i=0
while [ $i -lt 50 ]; do
  alive=0
  for p in $pids; do ours "$p" && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
  i=$((i + 1))
done
for p in $pids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
[ "$keep" = keep ] || rm -rf -- "$dir"
"#;

/// How the watchdog tells its servers from processes that have since been given a recorded
/// PID.
#[derive(Debug, Clone)]
pub enum Recognise {
    /// By process name (`/proc/PID/comm`): PostgreSQL servers are `postgres`, whatever their
    /// command line says (a postmaster's children rewrite theirs).
    Name(&'static str),
    /// By a path below this directory on the command line (`/proc/PID/cmdline`): an etcd
    /// member's `--data-dir` under its cluster directory, which also holds when
    /// `MERIDIAN_ETCD_BIN` names a program not called `etcd`.
    PathUnder(PathBuf),
}

/// The watchdog of one cluster directory.
#[derive(Debug)]
pub struct Guardian {
    state: Mutex<Option<(Child, ChildStdin)>>,
}

impl Guardian {
    /// Starts the watchdog for the servers living under `dir`, which it removes after
    /// stopping them unless `keep`. It stops the servers it `recognise`s with `first_signal`
    /// (SIGQUIT, PostgreSQL's immediate shutdown; SIGKILL for servers that need no clean
    /// stop), then SIGKILL after 5 s.
    pub fn start(
        dir: &Path,
        keep: bool,
        recognise: Recognise,
        first_signal: Signal,
    ) -> anyhow::Result<Guardian> {
        use std::os::unix::process::CommandExt;
        let (by, mark) = match recognise {
            Recognise::Name(name) => ("comm", name.into()),
            Recognise::PathUnder(path) => ("cmdline", path.into_os_string()),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("meridian-testkit-guardian")
            .arg(dir)
            .arg(if keep { "keep" } else { "remove" })
            .arg(by)
            .arg(mark)
            // `kill -QUIT`: POSIX `kill` takes the name without its `SIG` prefix.
            .arg(first_signal.as_str().trim_start_matches("SIG"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that a signal to the test's group does not take it too.
            .process_group(0)
            .spawn()
            .context("cannot start the testkit watchdog (sh)")?;
        let stdin = child.stdin.take().context("watchdog has no stdin")?;
        Ok(Guardian {
            state: Mutex::new(Some((child, stdin))),
        })
    }

    /// The watchdog's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.as_ref().map(|(child, _)| child.id())
    }

    /// Records a live server.
    pub fn watch(&self, pid: u32) {
        self.send(&format!("+{pid}"));
    }

    /// Forgets a server that has been reaped.
    pub fn forget(&self, pid: u32) {
        self.send(&format!("-{pid}"));
    }

    /// Ends the watchdog after a clean teardown.
    pub fn dismiss(&self) {
        let taken = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((mut child, mut stdin)) = taken {
            let _ = stdin.write_all(b"exit\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn send(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, stdin)) = state.as_mut() {
            // A failed write means the watchdog is gone; teardown by Drop still happens.
            let _ = writeln!(stdin, "{line}");
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        self.dismiss();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use super::*;

    /// What the watchdog sees when the test process dies: its stdin closes without `exit`.
    fn orphan(guardian: Guardian) {
        let taken = guardian.state.lock().unwrap().take();
        let (mut child, stdin) = taken.unwrap();
        drop(stdin);
        child.wait().unwrap();
    }

    /// A `sleep` with `path` on its command line (as its name, `argv[0]`).
    fn server(path: &Path) -> Child {
        Command::new("sleep").arg0(path).arg("30").spawn().unwrap()
    }

    /// A watchdog of `dir` like an etcd cluster's (by path, SIGKILL), keeping the directory.
    fn etcd_like(dir: &Path) -> Guardian {
        let recognise = Recognise::PathUnder(dir.to_owned());
        Guardian::start(dir, true, recognise, Signal::SIGKILL).unwrap()
    }

    /// Reaps `child` as soon as it exits, as the dead test's servers are reaped by their new
    /// parent: a zombie keeps its name, and the watchdog would wait for it to go.
    fn reap(mut child: Child) -> std::thread::JoinHandle<std::process::ExitStatus> {
        std::thread::spawn(move || child.wait().unwrap())
    }

    #[test]
    fn a_process_named_as_told_is_stopped_with_the_first_signal_and_the_directory_removed() {
        let dir = tempfile::tempdir().unwrap().keep();
        let sleep = Command::new("sleep").arg("30").spawn().unwrap();
        let guardian =
            Guardian::start(&dir, false, Recognise::Name("sleep"), Signal::SIGQUIT).unwrap();
        guardian.watch(sleep.id());
        let exit = reap(sleep);
        orphan(guardian);
        assert_eq!(exit.join().unwrap().signal(), Some(Signal::SIGQUIT as i32));
        assert!(!dir.exists());
    }

    #[test]
    fn a_process_with_a_path_under_the_directory_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir.path().join("member"));
        let guardian = etcd_like(dir.path());
        guardian.watch(server.id());
        let exit = reap(server);
        orphan(guardian);
        assert_eq!(exit.join().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert!(dir.path().exists(), "kept");
    }

    #[test]
    fn a_process_it_does_not_recognise_or_was_told_is_reaped_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut elsewhere = server(Path::new("/elsewhere/member"));
        let mut forgotten = server(&dir.path().join("member"));
        let guardian = etcd_like(dir.path());
        guardian.watch(elsewhere.id());
        guardian.watch(forgotten.id());
        guardian.forget(forgotten.id());
        orphan(guardian);
        assert!(elsewhere.try_wait().unwrap().is_none(), "not its process");
        assert!(forgotten.try_wait().unwrap().is_none(), "forgotten");
        for mut child in [elsewhere, forgotten] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
