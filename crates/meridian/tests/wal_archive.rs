//! `meridian wal-archive` as a real server's `archive_command`, and `meridian wal-restore`
//! handing a segment back, through the binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};

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
    let archive = tempfile::tempdir().unwrap();
    // The server runs as an unprivileged user when the tests run as root.
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = archive.path().display().to_string();
    // The server runs the command as its own user, who may not reach the build directory
    // (CI builds under root's home): give it a copy it can execute.
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let command = bin.path().join("meridian");
    std::fs::copy(env!("CARGO_BIN_EXE_meridian"), &command).unwrap();
    std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    let segment = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .unwrap()
        .unwrap();
    primary.execute("SELECT pg_switch_wal()").await.unwrap();
    let archived = archive.path().join(&segment);
    wait_until(Duration::from_secs(60), "the segment archived", || async {
        let failed = primary
            .query_one("SELECT last_failed_wal FROM pg_stat_archiver")
            .await
            .ok()
            .flatten();
        Check::when(
            archived.exists() && archive.path().join(format!("{segment}.sha256")).exists(),
            (),
            format!("last failed: {failed:?}"),
        )
    })
    .await
    .unwrap();

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
