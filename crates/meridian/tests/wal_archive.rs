//! `meridian wal-archive` as a real server's `archive_command`, and `meridian wal-restore`
//! handing a segment back, through the binary.

mod support;

use std::process::Command;

use meridian_testkit::TestCluster;

fn meridian(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_server_archives_its_segments_through_meridian_and_they_restore_verified() {
    let cluster = TestCluster::builder().start().await.unwrap();
    // The server runs as an unprivileged user when the tests run as root: it writes the
    // archive and executes a copy of the binary.
    let archive = support::dir_with_mode(0o777);
    let dir = archive.path().display().to_string();
    let (_bin, command) = support::executable_meridian();
    let primary = cluster.primary();
    primary.stop().await.unwrap();
    primary.set_auto_conf("archive_mode", "on").unwrap();
    primary
        .set_auto_conf(
            "archive_command",
            &format!("{} wal-archive %p %f --dir {dir}", command.display()),
        )
        .unwrap();
    primary.start().await.unwrap();
    primary
        .execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    // The checksum is written before the segment: once the segment is there, both are.
    let segment = support::switch_and_wait_archived(primary, archive.path()).await;
    let archived = archive.path().join(&segment);
    assert!(archive.path().join(format!("{segment}.sha256")).exists());

    // Handed back, verified, byte for byte.
    let restored = archive.path().join("restored");
    let out = meridian(&[
        "wal-restore",
        &segment,
        restored.to_str().unwrap(),
        "--dir",
        &dir,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&archived).unwrap()
    );

    // The same segment again: success; other bytes under its name: refused, original kept.
    let again = meridian(&[
        "wal-archive",
        restored.to_str().unwrap(),
        &segment,
        "--dir",
        &dir,
    ]);
    assert!(again.status.success(), "{again:?}");
    let other = archive.path().join("other");
    std::fs::write(&other, b"not that segment").unwrap();
    let refused = meridian(&[
        "wal-archive",
        other.to_str().unwrap(),
        &segment,
        "--dir",
        &dir,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("already archived with different content"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&archived).unwrap()
    );

    // A missing segment is PostgreSQL's normal "not there": exit 1.
    let missing = meridian(&[
        "wal-restore",
        "0000000100000000000000FF",
        restored.to_str().unwrap(),
        "--dir",
        &dir,
    ]);
    assert_eq!(missing.status.code(), Some(1));
}
