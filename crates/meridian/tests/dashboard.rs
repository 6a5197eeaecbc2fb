//! The dashboard in a real browser: headless Chromium loads `/` from a `meridian run` in front
//! of a real cluster (a primary and two replicas), and the test reads the page as the scripts
//! left it. It follows the cluster through a replica's death (its `endpoint_down` alert
//! appears) and the primary's (Meridian fails over; the run appears in the timeline), then
//! takes a screenshot.
//!
//! Each look is one Chromium run with `--dump-dom` after `--virtual-time-budget`: the page
//! polls the admin API as soon as it loads, and virtual time does not pass while a request is
//! pending, so the dumped DOM holds what the first answers said. The test polls such looks
//! with a deadline; it never sleeps. Elements are found by the `data-` attributes the
//! dashboard gives them (`data-node`, `data-role`, `data-alert-kind`, `data-run-kind`...).
//!
//! Chromium runs in a process group of its own, with its own profile directory and `HOME`;
//! the group is killed when a run ends or overruns [`CHROMIUM_LIMIT`], and when the test
//! fails. The binary is `chromium` on `PATH` (Debian package `chromium`) unless
//! `MERIDIAN_CHROMIUM` names another.
//!
//! The screenshot (1366×900, a laptop screen) is written to
//! `target/nextest-artifacts/dashboard.png` under the workspace root, whatever
//! `CARGO_TARGET_DIR` says, and its path printed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meridian_testkit::{Check, TestCluster, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use support::{DataDirs, RunningMeridian, cluster_toml};

/// Bound of every wait.
const TIMEOUT: Duration = Duration::from_secs(45);
/// Bound of one Chromium run.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(30);
/// Page time Chromium lets pass before it dumps or shoots: the first poll's answers are in
/// by then (requests do not use it up) and the charts have drawn.
const VIRTUAL_TIME_MS: u32 = 1500;

/// Kills a process group when dropped: Chromium's renderer and helper processes go with it.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) {
            // ESRCH once every member has exited: nothing left to kill.
            let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
        }
    }
}

/// Headless Chromium with a profile directory of its own.
struct Chromium {
    binary: PathBuf,
    profile: tempfile::TempDir,
}

impl Chromium {
    fn new() -> Chromium {
        Chromium {
            binary: std::env::var_os("MERIDIAN_CHROMIUM")
                .map_or_else(|| PathBuf::from("chromium"), PathBuf::from),
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs Chromium on `url` with `args`; returns its standard output.
    async fn run(&self, args: &[String], url: &str) -> anyhow::Result<Vec<u8>> {
        let profile = self.profile.path();
        let mut command = Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--hide-scrollbars",
                "--mute-audio",
                &format!("--user-data-dir={}", profile.join("profile").display()),
                "--window-size=1366,900",
                &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
            ])
            .args(args)
            .arg(url)
            .env("HOME", profile)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start {} ({e}): install Debian's chromium package or set MERIDIAN_CHROMIUM",
                self.binary.display()
            )
        })?;
        let _group = ProcessGroup(child.id());
        let output = tokio::time::timeout(CHROMIUM_LIMIT, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("chromium did not finish within {CHROMIUM_LIMIT:?}"))??;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            anyhow::bail!(
                "chromium exited with {}:\n{}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(output.stdout)
    }

    /// The page's DOM once its scripts ran.
    async fn dom(&self, url: &str) -> anyhow::Result<String> {
        let out = self.run(&["--dump-dom".to_owned()], url).await?;
        Ok(String::from_utf8(out)?)
    }

    /// A PNG of the page at `path`.
    async fn screenshot(&self, url: &str, path: &Path) -> anyhow::Result<()> {
        self.run(&[format!("--screenshot={}", path.display())], url)
            .await
            .map(drop)
    }
}

/// The page as the test reads it: start tags, found by their attributes.
struct Page(String);

impl Page {
    /// The start tag around byte `at`.
    fn tag_at(&self, at: usize) -> Option<&str> {
        let start = self.0[..at].rfind('<')?;
        let end = at + self.0[at..].find('>')?;
        Some(&self.0[start..=end])
    }

    /// The start tags that have `name="value"`.
    fn tags(&self, name: &str, value: &str) -> Vec<&str> {
        self.0
            .match_indices(&format!(" {name}=\"{value}\""))
            .filter_map(|(at, _)| self.tag_at(at))
            .collect()
    }

    /// A start tag with `name="value"` that also has every one of `also`.
    fn tag_with(&self, name: &str, value: &str, also: &[(&str, &str)]) -> Option<&str> {
        self.tags(name, value).into_iter().find(|tag| {
            also.iter()
                .all(|(n, v)| tag.contains(&format!(" {n}=\"{v}\"")))
        })
    }

    /// The tags of the cluster, its nodes, alerts, runs and charts, for failure messages.
    fn summary(&self) -> String {
        let markers = [
            " data-cluster-state=",
            " data-node=",
            " data-alert-kind=",
            " data-run-kind=",
            " data-chart=",
        ];
        let lines: Vec<&str> = markers
            .iter()
            .flat_map(|marker| self.0.match_indices(marker))
            .filter_map(|(at, _)| self.tag_at(at))
            .collect();
        if lines.is_empty() {
            format!("no dashboard elements in {} bytes of DOM", self.0.len())
        } else {
            lines.join("\n")
        }
    }
}

/// Looks at the page until `holds` says what it wants is there; returns that page.
async fn wait_for_page(
    chromium: &Chromium,
    url: &str,
    what: &str,
    meridian: &RunningMeridian,
    holds: impl Fn(&Page) -> bool,
) -> Page {
    let started = Instant::now();
    let page = wait_until(TIMEOUT, what, || async {
        match chromium.dom(url).await {
            Ok(dom) => {
                let page = Page(dom);
                if holds(&page) {
                    Check::Ready(page)
                } else {
                    Check::NotYet(format!("\n{}", page.summary()))
                }
            }
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await;
    let page = meridian.or_log(page);
    eprintln!("dashboard: {what}: seen after {:.1?}", started.elapsed());
    page
}

/// `target/nextest-artifacts/` under the workspace root.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nextest-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_topology_a_dead_replicas_alert_and_a_failover() {
    let began = Instant::now();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let meridian = RunningMeridian::start(
        &format!(
            "[monitor]\nprobe_interval = \"300ms\"\n{}",
            cluster_toml(&cluster, DataDirs::Unmanaged)
        ),
        TIMEOUT,
    )
    .await;
    let url = format!("http://127.0.0.1:{}/", meridian.admin);
    let chromium = Chromium::new();
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name()).collect();
    let (primary, survivor, dead) = ("main-1", "main-2", "main-3");
    assert_eq!(names, [primary, survivor, dead]);

    // Every node, with its role, once the monitor has judged them all healthy.
    let page = wait_for_page(
        &chromium,
        &url,
        "every node on the page, the primary marked, the cluster healthy",
        &meridian,
        |page| {
            page.tag_with("data-cluster-state", "healthy", &[])
                .is_some()
                && page
                    .tag_with(
                        "data-node",
                        primary,
                        &[("data-role", "primary"), ("data-primary", "true")],
                    )
                    .is_some()
                && [survivor, dead].iter().all(|name| {
                    page.tag_with(
                        "data-node",
                        name,
                        &[("data-role", "replica"), ("data-health", "healthy")],
                    )
                    .is_some()
                })
        },
    )
    .await;
    assert!(
        page.tag_with("data-primary-node", primary, &[]).is_some(),
        "the header names the primary:\n{}",
        page.summary()
    );
    // The probe metrics may not be served by this Meridian: the charts say so, the rest works.
    for chart in ["lag", "latency"] {
        let tag = page
            .tags("data-chart", chart)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {chart} chart:\n{}", page.summary()));
        assert!(
            ["ok", "empty", "absent"]
                .iter()
                .any(|state| tag.contains(&format!("data-chart-state=\"{state}\""))),
            "{tag}"
        );
    }

    cluster.node(dead).kill();
    wait_for_page(
        &chromium,
        &url,
        "the dead replica's endpoint_down alert and its card marked down",
        &meridian,
        |page| {
            page.tag_with(
                "data-alert-kind",
                "endpoint_down",
                &[("data-alert-node", dead)],
            )
            .is_some()
                && page
                    .tag_with("data-node", dead, &[("data-health", "down")])
                    .is_some()
        },
    )
    .await;

    cluster.node(primary).kill();
    wait_for_page(
        &chromium,
        &url,
        "the failover in the timeline and the survivor marked primary",
        &meridian,
        |page| {
            page.tag_with(
                "data-run-kind",
                "failover",
                &[
                    ("data-run-outcome", "completed"),
                    ("data-old-primary", primary),
                    ("data-new-primary", survivor),
                ],
            )
            .is_some()
                && page
                    .tag_with(
                        "data-node",
                        survivor,
                        &[("data-role", "primary"), ("data-primary", "true")],
                    )
                    .is_some()
        },
    )
    .await;

    let dir = artifacts();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&path);
    meridian.or_log(chromium.screenshot(&url, &path).await);
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        png.len() > 30_000,
        "{} is only {} bytes: a blank page?",
        path.display(),
        png.len()
    );
    eprintln!(
        "dashboard: screenshot {} ({} KiB); the test took {:.1?}",
        path.canonicalize().unwrap_or(path.clone()).display(),
        png.len() / 1024,
        began.elapsed()
    );
}
