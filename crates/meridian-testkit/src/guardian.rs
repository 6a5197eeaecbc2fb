//! A watchdog that stops the servers if the test process dies without running `Drop`.
//!
//! `Drop` stops every server when a test ends or panics, but not when the test process is
//! killed (a test runner's timeout, SIGKILL, `abort`). For that case each cluster starts a tiny
//! shell process in its own process group, told over its stdin which postmaster PIDs are live.
//! The kernel closes that pipe when the test process dies, however it dies; on end-of-file
//! without a prior `exit` line the watchdog shuts the recorded servers down (immediate
//! shutdown, then SIGKILL) and removes the cluster's directory (unless it is to be kept).
//!
//! Protocol, one line each: `+PID` (a postmaster started), `-PID` (it was reaped by us; never
//! signal that PID again, it may be reused), `exit` (clean teardown done, leave quietly).

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;

const SCRIPT: &str = r#"
dir=$1
keep=$2
pids=" "
while IFS= read -r line; do
  case "$line" in
    +*) pids="$pids${line#+} " ;;
    -*) pids=$(printf '%s' "$pids" | sed "s/ ${line#-} / /") ;;
    exit) exit 0 ;;
  esac
done
is_postgres() { [ "$(cat /proc/$1/comm 2>/dev/null)" = postgres ]; }
for p in $pids; do is_postgres "$p" && kill -QUIT "$p" 2>/dev/null; done
i=0
while [ $i -lt 50 ]; do
  alive=0
  for p in $pids; do is_postgres "$p" && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
  i=$((i + 1))
done
for p in $pids; do is_postgres "$p" && kill -KILL "$p" 2>/dev/null; done
[ "$keep" = keep ] || rm -rf -- "$dir"
"#;

/// The watchdog of one cluster directory.
#[derive(Debug)]
pub struct Guardian {
    state: Mutex<Option<(Child, ChildStdin)>>,
}

impl Guardian {
    /// Starts the watchdog for the servers living under `dir`, which it removes after
    /// stopping them unless `keep`.
    pub fn start(dir: &Path, keep: bool) -> anyhow::Result<Guardian> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("meridian-testkit-guardian")
            .arg(dir)
            .arg(if keep { "keep" } else { "remove" })
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

    /// Records a live postmaster.
    pub fn watch(&self, pid: u32) {
        self.send(&format!("+{pid}"));
    }

    /// Forgets a postmaster that has been reaped.
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
