//! The demo's directory (`./meridian-demo` unless `--dir`): what a run keeps there and what a
//! second run does with it.
//!
//! ```text
//! meridian-demo/
//!   .meridian-demo      marks the directory as the demo's (nothing else is ever deleted)
//!   template-*/         the initdb result, reused by every run (initdb takes seconds)
//!   cluster/            the servers: <node>/data and <node>/postgres.log (replaced each run)
//!   meridian-data/      Meridian's store: alerts and failover history (kept across runs)
//!   meridian.toml       the configuration Meridian runs with (mode 0600: it holds the token)
//!   meridian.log        Meridian's own log
//!   summary.json        the last run's results
//! ```
//!
//! A second run reuses the directory: the template and the history stay, the servers are
//! built anew. `--fresh` empties it first.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The file that marks a directory as the demo's.
pub const MARKER: &str = ".meridian-demo";

/// The demo directory's parts.
#[derive(Debug, Clone)]
pub struct DemoDir {
    pub root: PathBuf,
}

impl DemoDir {
    /// Where the servers live.
    pub fn cluster(&self) -> PathBuf {
        self.root.join("cluster")
    }

    /// Meridian's store.
    pub fn data(&self) -> PathBuf {
        self.root.join("meridian-data")
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.root.join("meridian.toml")
    }

    /// Meridian's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("meridian.log")
    }

    /// The results of the last run.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
}

/// What `prepare` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The directory did not exist or was empty.
    New,
    /// A previous run's directory, reused (`--fresh` not given).
    Reused,
    /// A previous run's directory, emptied (`--fresh`).
    Emptied,
}

/// Makes `root` ready for a run: created if missing; a previous demo directory is reused (its
/// old servers' files removed) or, with `fresh`, emptied. Refuses a non-empty directory that
/// is not the demo's, so that a mistyped `--dir` never deletes anything.
pub fn prepare(root: &Path, fresh: bool) -> anyhow::Result<(DemoDir, Prepared)> {
    let dir = DemoDir {
        root: root.to_owned(),
    };
    let prepared = if !root.exists() {
        Prepared::New
    } else if !root.is_dir() {
        bail!(
            "{} is not a directory: choose another with --dir",
            root.display()
        );
    } else if root.join(MARKER).is_file() {
        if fresh {
            for entry in fs::read_dir(root)? {
                let path = entry?.path();
                remove(&path)?;
            }
            Prepared::Emptied
        } else {
            let cluster = dir.cluster();
            if cluster.exists() {
                remove(&cluster)?;
            }
            Prepared::Reused
        }
    } else if fs::read_dir(root)
        .with_context(|| format!("cannot read {}", root.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty and was not made by `meridian demo`: choose another directory \
             with --dir (nothing was changed)",
            root.display()
        );
    } else {
        Prepared::New
    };
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    fs::write(
        root.join(MARKER),
        "made by `meridian demo`; `meridian demo --fresh` empties this directory\n",
    )?;
    Ok((dir, prepared))
}

fn remove(path: &Path) -> anyhow::Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_directory_is_new() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("demo");
        let (dir, prepared) = prepare(&root, false).unwrap();
        assert_eq!(prepared, Prepared::New);
        assert!(dir.root.join(MARKER).is_file());
        let empty = parent.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(prepare(&empty, true).unwrap().1, Prepared::New);
    }

    #[test]
    fn a_second_run_keeps_template_and_history_but_not_the_old_servers() {
        let parent = tempfile::tempdir().unwrap();
        let (dir, _) = prepare(parent.path(), false).unwrap();
        fs::create_dir_all(dir.cluster().join("us-east-1/data")).unwrap();
        fs::create_dir_all(dir.data()).unwrap();
        fs::create_dir_all(dir.root.join("template-0123")).unwrap();
        let (dir, prepared) = prepare(parent.path(), false).unwrap();
        assert_eq!(prepared, Prepared::Reused);
        assert!(!dir.cluster().exists());
        assert!(dir.data().is_dir());
        assert!(dir.root.join("template-0123").is_dir());
    }

    #[test]
    fn fresh_empties_a_demo_directory() {
        let parent = tempfile::tempdir().unwrap();
        let (dir, _) = prepare(parent.path(), false).unwrap();
        fs::create_dir_all(dir.data()).unwrap();
        fs::write(dir.summary(), "{}").unwrap();
        let (dir, prepared) = prepare(parent.path(), true).unwrap();
        assert_eq!(prepared, Prepared::Emptied);
        assert!(!dir.data().exists());
        assert!(!dir.summary().exists());
        assert!(dir.root.join(MARKER).is_file());
    }

    #[test]
    fn a_directory_that_is_not_the_demos_is_never_touched() {
        let parent = tempfile::tempdir().unwrap();
        fs::write(parent.path().join("thesis.tex"), "precious").unwrap();
        for fresh in [false, true] {
            let error = prepare(parent.path(), fresh).unwrap_err().to_string();
            assert!(error.contains("--dir"), "{error}");
        }
        assert_eq!(
            fs::read_to_string(parent.path().join("thesis.tex")).unwrap(),
            "precious"
        );
        assert!(!parent.path().join(MARKER).exists());
    }
}
