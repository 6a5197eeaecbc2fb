//! Running PostgreSQL's own programs: where they are, as whom, and what they said when they
//! failed.
//!
//! The programs are found in `MERIDIAN_PG_BIN`, else `failover.pg_bin`, else
//! `pg_config --bindir`. Client programs (`pg_basebackup`, `pg_dump`, `pg_verifybackup`) run
//! as the current user; the server (`pg_ctl`) runs as the server's OS user, which PostgreSQL
//! requires not to be root: a root caller names it (`--os-user`, `MERIDIAN_PG_USER`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, bail};
use nix::unistd::{Uid, User};

/// The environment variable naming the directory of PostgreSQL's programs.
pub const PG_BIN_ENV: &str = "MERIDIAN_PG_BIN";
/// The environment variable naming the server's OS user when running as root.
pub const PG_USER_ENV: &str = "MERIDIAN_PG_USER";

/// Where PostgreSQL's programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    dir: PathBuf,
}

impl Programs {
    /// `MERIDIAN_PG_BIN`, else `configured`, else `pg_config --bindir`.
    pub fn locate(configured: Option<&Path>) -> anyhow::Result<Programs> {
        if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
            return Ok(Programs { dir: dir.into() });
        }
        if let Some(dir) = configured {
            return Ok(Programs { dir: dir.into() });
        }
        let output = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .context(
                "cannot find PostgreSQL's programs: pg_config is not on PATH; set \
                 MERIDIAN_PG_BIN (or failover.pg_bin) to their directory",
            )?;
        if !output.status.success() {
            bail!("pg_config --bindir failed; set MERIDIAN_PG_BIN to PostgreSQL's bin directory");
        }
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Programs { dir: dir.into() })
    }

    /// The path of `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A command for `name`, run as the current user.
    pub fn command(&self, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.path(name));
        command.kill_on_drop(true);
        command
    }
}

/// Gives a client program the password of `credentials` through `PGPASSWORD`, never on its
/// command line (which any user can read in the process list).
pub fn with_password(
    command: &mut tokio::process::Command,
    credentials: &meridian_control::credentials::Credentials,
) {
    if let Some(password) = &credentials.password {
        command.env("PGPASSWORD", password);
    }
}

/// Runs `command`; its output, or an error with the end of what it wrote to stderr.
pub async fn run(mut command: tokio::process::Command, what: &str) -> anyhow::Result<Output> {
    let program = command.as_std().get_program().to_owned();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("{what}: cannot run {}", Path::new(&program).display()))?;
    if !output.status.success() {
        bail!(
            "{what}: {} failed ({}): {}",
            file_name(&program),
            output.status,
            tail(&output.stderr)
        );
    }
    Ok(output)
}

fn file_name(program: &OsStr) -> String {
    Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned()
}

/// The last lines of a program's output, trimmed.
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// The OS user the server runs as.
#[derive(Debug, Clone)]
pub struct ServerUser {
    /// `None`: the current user.
    user: Option<User>,
}

impl ServerUser {
    /// The current user; when root, the named user (`name`, else `MERIDIAN_PG_USER`).
    pub fn resolve(name: Option<&str>) -> anyhow::Result<ServerUser> {
        if !Uid::effective().is_root() {
            return Ok(ServerUser { user: None });
        }
        let name = match name.map(str::to_owned).or_else(|| {
            std::env::var(PG_USER_ENV)
                .ok()
                .filter(|name| !name.is_empty())
        }) {
            Some(name) => name,
            None => bail!(
                "PostgreSQL refuses to run as root: name the server's OS user with --os-user \
                 (or {PG_USER_ENV}), e.g. --os-user postgres"
            ),
        };
        let user = User::from_name(&name)
            .context("cannot read the user database")?
            .with_context(|| format!("there is no OS user {name:?}"))?;
        if user.uid.is_root() {
            bail!("{name} is root; PostgreSQL refuses to run as root");
        }
        Ok(ServerUser { user: Some(user) })
    }

    /// Gives `path` and everything under it to this user.
    pub fn give_tree(&self, path: &Path) -> anyhow::Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let give = |p: &Path| {
            std::os::unix::fs::lchown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .with_context(|| format!("cannot give {} to {}", p.display(), user.name))
        };
        give(path)?;
        let mut pending = vec![path.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
                give(&entry.path())?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(entry.path());
                }
            }
        }
        Ok(())
    }

    /// `command` switched to this user.
    pub fn apply(&self, command: &mut tokio::process::Command) {
        if let Some(user) = &self.user {
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir);
        }
    }
}
