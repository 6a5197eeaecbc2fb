//! `EtcdCluster` against the real etcd: it starts, stores keys, keeps a quorum without a
//! member, takes the member back, can be cut off from a client, and leaves nothing behind.
//!
//! Keys are written and read with `etcdctl` (API v3) as a subprocess. Every wait polls with a
//! deadline; the deadlines are generous for a busy 2-core machine, never part of the check.

mod probe;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use meridian_testkit::{Check, EtcdCluster, EtcdMember, KEEP_ENV, wait_until};
use probe::{Mode, Report, assert_nothing_left, process_state};

const TIMEOUT: Duration = Duration::from_secs(30);
const PROBE: &str = "probe_starts_an_etcd_cluster_then_fails";

/// A serializable read from this member alone: what it has applied, without asking the leader.
async fn local_value(member: &EtcdMember, key: &str) -> anyhow::Result<String> {
    let out = member
        .etcdctl(&["get", key, "--print-value-only", "--consistency=s"])
        .await?;
    Ok(out.trim().to_owned())
}

/// Writes `value` through the cluster's helper and reads it back from its first member.
async fn put_then_get(etcd: &EtcdCluster, value: &str) {
    let put = etcd.etcdctl(&["put", "meridian/key", value]).await.unwrap();
    assert_eq!(put.trim(), "OK");
    let got = etcd
        .member(0)
        .etcdctl(&["get", "meridian/key", "--print-value-only"])
        .await
        .unwrap();
    assert_eq!(got.trim(), value);
}

#[tokio::test]
async fn sizes_other_than_one_or_three_are_refused() {
    for members in [0, 2, 4] {
        let err = EtcdCluster::start(members).await.unwrap_err();
        assert!(
            format!("{err}").contains("1 or 3 members"),
            "{members}: {err}"
        );
    }
}

#[tokio::test]
async fn a_one_member_cluster_stores_and_returns_a_key() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let member = etcd.member(0);
    assert_eq!(
        etcd.endpoints(),
        vec![format!("http://127.0.0.1:{}", member.client_port())]
    );
    assert!(member.is_running());
    member.health().await.unwrap();
    assert!(member.is_leader().await.unwrap());

    put_then_get(&etcd, "value").await;
    assert!(
        !member.log_tail(5).is_empty(),
        "the member logs to its file"
    );
}

/// `etcdctl` with only `flags` for TLS, not the kit's: what a client without them gets.
async fn bare_etcdctl(etcd: &EtcdCluster, endpoint: &str, flags: &[String]) -> Output {
    tokio::process::Command::new(etcd.bin().etcdctl().unwrap())
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_CACERT")
        .env_remove("ETCDCTL_CERT")
        .env_remove("ETCDCTL_KEY")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=2s", "--command-timeout=2s"])
        .args(flags)
        .args(["get", "meridian/key"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tls_member_serves_clients_with_a_certificate_and_only_them() {
    let etcd = EtcdCluster::start_tls(1).await.unwrap();
    let member = etcd.member(0);
    let https = format!("https://127.0.0.1:{}", member.client_port());
    assert_eq!(etcd.endpoints(), vec![https.clone()]);
    let root = etcd.tls_root_cert().unwrap();
    let (cert, key) = (
        etcd.tls_client_cert().unwrap(),
        etcd.tls_client_key().unwrap(),
    );
    for file in [root, cert, key] {
        assert!(file.starts_with(etcd.dir()), "{}", file.display());
    }
    member.health().await.unwrap();
    assert!(member.is_leader().await.unwrap());

    put_then_get(&etcd, "over tls").await;

    // The kit's flags, given by hand, are all a client needs.
    let cacert = format!("--cacert={}", root.display());
    let with_cert = [
        cacert.clone(),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ];
    let output = bare_etcdctl(&etcd, &https, &with_cert).await;
    assert!(output.status.success(), "{}", describe(&output));
    // Verifying the server is not enough: the member asks for a client certificate.
    let output = bare_etcdctl(&etcd, &https, std::slice::from_ref(&cacert)).await;
    assert!(!output.status.success(), "{}", describe(&output));
    // Nor does plain HTTP reach the client port: neither gRPC nor `/health`, which etcd
    // 3.4.23 closes without an answer (the metrics port serves it: `health()` above).
    let http = format!("http://127.0.0.1:{}", member.client_port());
    let output = bare_etcdctl(&etcd, &http, &[]).await;
    assert!(!output.status.success(), "{}", describe(&output));
    let answer = plain_get(member.client_addr(), "/health").await;
    assert!(!answer.contains(r#""health":"true""#), "{answer}");
}

/// What a plain-HTTP `GET path` on `addr` gets back before the server closes (or, past the
/// deadline, so far), as text.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    // A deadline only for a server that neither answers nor closes; either way no health.
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "{}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_stopped_member_starts_again_on_its_data() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let member = etcd.member(0);
    etcd.etcdctl(&["put", "kept", "across a restart"])
        .await
        .unwrap();

    member.stop().await.unwrap();
    assert!(!member.is_running());
    assert!(member.health().await.is_err(), "nothing listens any more");

    member.start().await.unwrap();
    assert_eq!(
        local_value(member, "kept").await.unwrap(),
        "across a restart"
    );
}

#[tokio::test]
async fn three_members_keep_accepting_writes_without_their_leader_which_then_rejoins() {
    let etcd = EtcdCluster::start(3).await.unwrap();
    assert_eq!(etcd.endpoints().len(), 3);
    etcd.etcdctl(&["put", "before", "1"]).await.unwrap();

    let old_leader = etcd.leader().await.unwrap();
    old_leader.kill();
    assert!(!old_leader.is_running());

    // The two others elect a leader among themselves; writes go through again. A write sent
    // while there is no leader is dropped and waits out its timeout: keep each attempt short.
    wait_until(TIMEOUT, "a write without the old leader", || async {
        etcd.etcdctl(&["put", "during", "2", "--command-timeout=1s"])
            .await
            .into()
    })
    .await
    .unwrap();
    let new_leader = etcd.leader().await.unwrap();
    assert_ne!(new_leader.name(), old_leader.name());

    // Back on its data directory: healthy again, and it catches up on what it missed.
    old_leader.start().await.unwrap();
    old_leader.health().await.unwrap();
    wait_until(
        TIMEOUT,
        "the rejoined member to apply the write it missed",
        || async {
            match local_value(old_leader, "during").await {
                Ok(value) => Check::when(value == "2", (), value),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        },
    )
    .await
    .unwrap();
    for member in etcd.members() {
        member.health().await.unwrap();
    }
}

#[tokio::test]
async fn a_fault_link_cuts_one_client_off_from_etcd_and_heals() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let links = etcd.links().unwrap();
    let through_link = links.endpoints();
    assert_ne!(through_link, etcd.endpoints());
    etcd.etcdctl_at(&through_link, &["put", "k", "v"])
        .await
        .unwrap();

    links.blackhole();
    // Nothing comes back through a blackhole: the request cannot succeed, however fast.
    let cut = etcd
        .etcdctl_at(
            &through_link,
            &["get", "k", "--dial-timeout=1s", "--command-timeout=1s"],
        )
        .await;
    assert!(cut.is_err(), "read through a blackholed link: {cut:?}");
    // Only that client is cut off.
    assert_eq!(local_value(etcd.member(0), "k").await.unwrap(), "v");

    links.pass();
    let value = wait_until(TIMEOUT, "a read through the healed link", || async {
        etcd.etcdctl_at(&through_link, &["get", "k", "--print-value-only"])
            .await
            .into()
    })
    .await
    .unwrap();
    assert_eq!(value.trim(), "v");
}

#[tokio::test]
async fn a_paused_member_answers_nothing_until_resumed() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let member = etcd.member(0);
    member.pause();
    assert!(member.is_running(), "paused, not gone");
    assert!(member.health().await.is_err(), "a frozen member answers");

    member.resume();
    wait_until(TIMEOUT, "the resumed member to be healthy", || async {
        member.health().await.into()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_the_cluster_kills_every_member_and_removes_its_directory() {
    let etcd = EtcdCluster::start(3).await.unwrap();
    let pids: Vec<u32> = etcd.members().iter().filter_map(|m| m.pid()).collect();
    let ports: Vec<u16> = etcd
        .members()
        .iter()
        .flat_map(|m| [m.client_port(), m.peer_port()])
        .collect();
    let dir = etcd.dir().to_owned();
    assert_eq!(pids.len(), 3);

    drop(etcd);
    // Drop kills and reaps synchronously: no waiting needed.
    for pid in pids {
        assert_eq!(process_state(pid), None, "etcd {pid} survived the drop");
    }
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections"
        );
    }
    if std::env::var_os(KEEP_ENV).is_none() {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

/// Runs the probe below as a child process with its stderr a pipe whose reading end is
/// already closed, so that anything it prints fails.
fn spawn_probe(mode: Mode, report: &Path) -> Child {
    // Not captured by the test harness (`--nocapture`): prints go to the closed pipe.
    let mut probe = probe::command(PROBE, mode, report)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(probe.stderr.take());
    probe
}

#[tokio::test]
async fn no_member_survives_a_killed_test_process() {
    // The probe's members are orphaned when it dies; make them ours to reap.
    meridian_testkit::adopt_orphans();
    let scratch = tempfile::tempdir().unwrap();
    let report_path = scratch.path().join("report");
    let mut probe = spawn_probe(Mode::Hang, &report_path);
    let report = Report::wait_complete(&report_path).await;
    assert_eq!(report.pids.len(), 3, "{report:?}");

    probe.kill().unwrap();
    probe.wait().unwrap();
    assert_nothing_left(&report).await;
}

#[tokio::test]
async fn no_member_survives_a_panicking_test_that_cannot_print() {
    let scratch = tempfile::tempdir().unwrap();
    let report_path = scratch.path().join("report");
    let status = spawn_probe(Mode::Panic, &report_path).wait().unwrap();
    assert!(!status.success(), "the probe was meant to fail");
    let report = Report::read(&report_path);
    assert!(
        report.complete,
        "the probe did not start its cluster: {report:?}"
    );
    assert_eq!(report.pids.len(), 3, "{report:?}");
    assert_nothing_left(&report).await;
}

/// Run only as a child of the tests above, which set its environment.
#[tokio::test]
#[ignore = "a probe run as a child process by the teardown tests"]
async fn probe_starts_an_etcd_cluster_then_fails() {
    let etcd = EtcdCluster::start(3).await.unwrap();
    let mut report = Report {
        dir: etcd.dir().to_owned(),
        watchdog: Some(etcd.watchdog_pid().expect("a watchdog runs")),
        ..Report::default()
    };
    for member in etcd.members() {
        report
            .ports
            .extend([member.client_port(), member.peer_port()]);
        report.pids.push(member.pid().unwrap());
    }
    probe::report_then_fail(&report).await;
}
