//! The operating-system user that runs the servers.
//!
//! PostgreSQL refuses to run as root ("root execution of the PostgreSQL server is not
//! permitted"). When the test process is root, the kit runs every server program as an
//! unprivileged user, created on first use with `useradd`; otherwise it runs them as the
//! current user. The switch uses `Command::uid`/`gid`, so the postmaster is a direct child of
//! the test process and its PID is the one we signal.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User};

/// The environment variable that names the unprivileged user used when running as root.
pub const PG_USER_ENV: &str = "MERIDIAN_PG_USER";

/// The default unprivileged user created when running as root.
pub const DEFAULT_PG_USER: &str = "meridian-pg";

/// Who runs the server programs.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// `Some` when the process is root and must switch to this user for every server program.
    switch_to: Option<(Uid, Gid)>,
    /// That user's home directory, given to its programs as `HOME`.
    home: Option<PathBuf>,
    name: String,
}

impl RunAs {
    /// The current user, or, when root, the unprivileged user (created if missing).
    pub fn resolve() -> anyhow::Result<RunAs> {
        if !Uid::effective().is_root() {
            let user = User::from_uid(Uid::effective())
                .context("cannot look up the current user")?
                .map(|u| u.name)
                .unwrap_or_else(|| Uid::effective().to_string());
            return Ok(RunAs {
                switch_to: None,
                home: None,
                name: user,
            });
        }
        let name = std::env::var(PG_USER_ENV).unwrap_or_else(|_| DEFAULT_PG_USER.to_owned());
        let user = match User::from_name(&name).context("cannot read the user database")? {
            Some(user) => user,
            None => create_user(&name)?,
        };
        if user.uid.is_root() {
            bail!("{PG_USER_ENV}={name} is root; PostgreSQL refuses to run as root");
        }
        Ok(RunAs {
            switch_to: Some((user.uid, user.gid)),
            home: Some(user.dir),
            name,
        })
    }

    /// The user name (also used as nothing else: the database superuser is always `postgres`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command for a server program that runs as this user.
    ///
    /// When switching users, `HOME` is the user's own: libpq inside the servers (a replica's
    /// replication connection) looks there for `.pgpass` and `.postgresql/`, and a root home
    /// it may not enter makes it give up on TLS ("could not open certificate file").
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            use std::os::unix::process::CommandExt;
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        if let Some(home) = &self.home {
            command.env("HOME", home);
        }
        command
    }

    /// The same as [`RunAs::command`] for tokio.
    pub fn async_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }

    /// Gives `path` to this user (when switching users); a no-op otherwise.
    pub fn give(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .with_context(|| format!("cannot give {} to {}", path.display(), self.name))?;
        }
        Ok(())
    }
}

fn create_user(name: &str) -> anyhow::Result<User> {
    let output = Command::new("useradd")
        .args([
            "--system",
            "--create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .context(
            "running as root needs an unprivileged user for PostgreSQL, but useradd could not run",
        )?;
    // Exit code 9: the user appeared meanwhile (another test process created it).
    if !output.status.success() && output.status.code() != Some(9) {
        bail!(
            "useradd {name} failed ({}): create an unprivileged user yourself and name it in {PG_USER_ENV}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    User::from_name(name)
        .context("cannot read the user database")?
        .with_context(|| format!("useradd {name} succeeded but the user cannot be found"))
}
