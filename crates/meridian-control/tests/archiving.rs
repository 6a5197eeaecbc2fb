//! Reading and configuring WAL archiving on a real server: what `configure` changes (and that
//! a second run changes nothing), the restart `archive_mode` needs, and the statistics judged
//! before and after a segment is archived and while an archive command fails.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use meridian_control::archiving::{ArchiveSettings, configure, inspect, read_stats};
use meridian_core::archiving::{ArchiveMode, ArchiveState, judge};
use meridian_core::observation::Timestamp;
use meridian_testkit::{Check, TestCluster, wait_until};

const MAX_RPO: Duration = Duration::from_secs(300);

fn now() -> Timestamp {
    meridian_control::probe::wall_clock()
}

#[tokio::test]
async fn configure_sets_what_differs_reports_the_restart_and_the_statistics_judge_it() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    let archive = tempfile::tempdir().unwrap();
    // The server runs the command as its own (unprivileged, when tests run as root) user.
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let client = primary.client().await.unwrap();

    // Off at first.
    let stats = read_stats(&client).await.unwrap();
    assert_eq!(stats.archive_mode, ArchiveMode::Off);
    assert!(!stats.in_recovery);
    assert!(stats.current_lsn.is_some() && stats.current_wal.is_some());
    assert_eq!(stats.segment_size, 16 * 1024 * 1024);
    assert_eq!(judge(&stats, now(), MAX_RPO).state, ArchiveState::Off);

    // A plain copy is enough here: the binary's own command is tested through the binary.
    let settings = ArchiveSettings {
        command: format!(
            "test ! -f '{dir}/%f' && cp %p '{dir}/%f'",
            dir = archive.path().display()
        ),
        timeout: Duration::from_secs(30),
    };
    let planned = inspect(&client, &settings).await.unwrap();
    assert!(planned.changed && planned.restart_needed, "{planned:?}");
    assert_eq!(
        planned.changes,
        ["archive_mode", "archive_command", "archive_timeout"]
    );
    // inspect changed nothing.
    assert_eq!(inspect(&client, &settings).await.unwrap(), planned);

    let done = configure(&client, &settings).await.unwrap();
    assert_eq!(done, planned);
    // archive_command and archive_timeout apply at the reload; archive_mode waits.
    let applied = wait_until(Duration::from_secs(10), "the reload", || async {
        let seen = primary
            .query_one("SELECT current_setting('archive_timeout')")
            .await
            .ok()
            .flatten();
        Check::when(seen.as_deref() == Some("30s"), (), seen)
    })
    .await;
    applied.unwrap();
    // A session applies a reload only between commands, one command late: a new one sees it.
    let client = primary.client().await.unwrap();
    let stats = read_stats(&client).await.unwrap();
    assert!(stats.archive_mode_pending_restart && stats.archive_command_set);
    let judged = judge(&stats, now(), MAX_RPO);
    assert_eq!(judged.state, ArchiveState::Off);
    assert!(judged.detail.contains("restart"), "{}", judged.detail);
    // Only archive_mode is left to do, and only a restart does it.
    let again = configure(&client, &settings).await.unwrap();
    assert_eq!(again.changes, ["archive_mode"]);

    drop(client);
    primary.restart().await.unwrap();
    let client = primary.client().await.unwrap();
    let after = configure(&client, &settings).await.unwrap();
    assert!(!after.changed && !after.restart_needed, "{after:?}");

    // Nothing archived yet: behind, with no RPO to tell.
    let stats = read_stats(&client).await.unwrap();
    assert_eq!(stats.archive_mode, ArchiveMode::On);
    let judged = judge(&stats, now(), MAX_RPO);
    assert_eq!((judged.state, judged.rpo), (ArchiveState::Behind, None));

    // A switch: the segment is archived and nothing is left unarchived.
    client
        .batch_execute("CREATE TABLE t AS SELECT 1 AS x")
        .await
        .unwrap();
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();
    let judged = wait_until(Duration::from_secs(30), "the segment archived", || async {
        let stats = read_stats(&client).await.unwrap();
        let judged = judge(&stats, now(), MAX_RPO);
        Check::when(
            stats.last_archived_wal.as_deref() == Some(segment.as_str()),
            judged,
            stats,
        )
    })
    .await
    .unwrap();
    assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
    assert!(archive.path().join(&segment).exists());

    // The archive refuses the next segment: failing, naming it.
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (2); SELECT pg_switch_wal()")
        .await
        .unwrap();
    let (stats, judged) = wait_until(Duration::from_secs(30), "a failed archiving", || async {
        let stats = read_stats(&client).await.unwrap();
        let judged = judge(&stats, now(), MAX_RPO);
        Check::when(
            judged.state == ArchiveState::Failing,
            (stats.clone(), judged),
            stats,
        )
    })
    .await
    .unwrap();
    let failed = stats.last_failed_wal.clone().unwrap();
    assert!(judged.detail.contains(&failed), "{judged:?}");
    assert_eq!(judged.unarchived_segments, 1, "{judged:?}");

    // Writable again: PostgreSQL's retry succeeds and it is healthy again. After three
    // failed attempts the archiver waits up to a minute; a new segment wakes it sooner.
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (3); SELECT pg_switch_wal()")
        .await
        .unwrap();
    let recovered = wait_until(Duration::from_secs(120), "archiving to recover", || async {
        let stats = read_stats(&client).await.unwrap();
        let judged = judge(&stats, now(), MAX_RPO);
        Check::when(judged.state == ArchiveState::Healthy, (), judged)
    })
    .await;
    recovered.unwrap();
    assert!(archive.path().join(&failed).exists());
}
