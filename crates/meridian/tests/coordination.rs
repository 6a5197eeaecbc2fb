//! Three Meridian instances coordinated through a real etcd, in front of a test-kit cluster:
//! exactly one leads, a dead leader is replaced within the lease TTL, exactly one promotion
//! when the primary dies with every proxy following it, a proxy cut off from etcd stops
//! writes, and with etcd stopped no failover happens while writes go on.

mod support;

use std::time::{Duration, Instant};

use meridian_testkit::{Check, EtcdCluster, FaultLink, TestCluster, wait_until};
use serde_json::Value;

use support::{DataDirs, RunningMeridian, cluster_toml, connect, http_json};

const TIMEOUT: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(2);
const TOKEN: &str = "coordination-test";

/// An instance's configuration: fast probes, `[coordination]` on `endpoints`.
fn settings(cluster: &TestCluster, endpoints: &[String], instance: &str) -> String {
    settings_with(cluster, endpoints, instance, DataDirs::Unmanaged)
}

fn settings_with(
    cluster: &TestCluster,
    endpoints: &[String],
    instance: &str,
    data_dirs: DataDirs,
) -> String {
    let etcd = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "admin_token = \"{TOKEN}\"\n[monitor]\nprobe_interval = \"200ms\"\n\
         [failover]\nmin_interval = \"0s\"\n\
         [proxy]\nfailover_buffer_timeout = \"2s\"\n\
         [coordination]\netcd = [{etcd}]\nprefix = \"/meridian/test\"\ninstance = \"{instance}\"\n\
         lease_ttl = \"{}s\"\n{}",
        TTL.as_secs(),
        cluster_toml(cluster, data_dirs)
    )
}

/// A one-member etcd and a cluster with the `numbered` table.
async fn setup(cluster: meridian_testkit::ClusterBuilder) -> (EtcdCluster, TestCluster) {
    (
        EtcdCluster::start(1).await.unwrap(),
        with_table(cluster).await,
    )
}

/// The cluster `builder` describes, with the `numbered` table.
async fn with_table(builder: meridian_testkit::ClusterBuilder) -> TestCluster {
    let cluster = builder.start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE numbered (value bigint)")
        .await
        .unwrap();
    cluster
}

/// `/api/database/status` of an instance.
async fn status(meridian: &RunningMeridian) -> Result<Value, String> {
    match http_json(meridian.admin, "GET", "/api/database/status", None, None).await {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("{code} {body}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Which of `instances` lead, by their own account, once all agree on one leader.
async fn the_leader(instances: &[&RunningMeridian]) -> usize {
    wait_until(TIMEOUT, "exactly one leading instance", || async {
        let mut leading = Vec::new();
        let mut seen = Vec::new();
        for (i, meridian) in instances.iter().enumerate() {
            match status(meridian).await {
                Ok(body) => {
                    if body["coordination"]["leading"] == true {
                        leading.push(i);
                    }
                    seen.push(body["coordination"].clone());
                }
                Err(e) => return Check::NotYet(e),
            }
        }
        Check::when(
            leading.len() == 1,
            leading.first().copied().unwrap_or(0),
            seen,
        )
    })
    .await
    .unwrap()
}

/// The port of the server a write through `proxy` committed on.
async fn write_through(proxy: u16, value: i64) -> Result<u16, String> {
    let client = connect(proxy).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "INSERT INTO numbered (value) VALUES ($1) RETURNING inet_server_port()",
            &[&value],
        )
        .await
        .map_err(|e| e.to_string())?;
    let port: i32 = row.get(0);
    Ok(u16::try_from(port).unwrap())
}

async fn in_recovery(node: &meridian_testkit::Node) -> Option<bool> {
    node.is_in_recovery().await.ok()
}

/// Waits until exactly one replica of `cluster` other than `old` answers as writable, and
/// returns it; fails if two do.
async fn promoted_once(cluster: &TestCluster, old: u16) -> u16 {
    let promoted = wait_until(TIMEOUT, "a replica promoted", || async {
        let mut writable = Vec::new();
        for node in cluster.nodes() {
            if node.port() != old && in_recovery(node).await == Some(false) {
                writable.push(node.port());
            }
        }
        Check::when(!writable.is_empty(), writable.clone(), writable)
    })
    .await
    .unwrap();
    assert_eq!(promoted.len(), 1, "exactly one promotion: {promoted:?}");
    promoted[0]
}

/// Every instance routes writes to `primary`.
async fn all_write_to(instances: &[&RunningMeridian], primary: u16) {
    for meridian in instances {
        let proxy = meridian.port;
        let port = meridian.or_log(
            wait_until(TIMEOUT, "writes on the new primary", || async {
                match write_through(proxy, 2).await {
                    Ok(port) if port == primary => Check::Ready(port),
                    other => Check::NotYet(format!("{other:?}")),
                }
            })
            .await,
        );
        assert_eq!(port, primary);
    }
}

/// Failover runs in each instance's history.
async fn runs(meridian: &RunningMeridian) -> usize {
    let (code, runs) = http_json(
        meridian.admin,
        "GET",
        "/api/database/failover-history",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    runs.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_fails_over_once_for_all_and_a_dead_leader_is_replaced_within_the_ttl() {
    let (etcd, cluster) = setup(TestCluster::builder().replicas(2)).await;
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(Some(
            RunningMeridian::start(&settings(&cluster, &etcd.endpoints(), name), TIMEOUT).await,
        ));
    }
    let leader = {
        let all: Vec<&RunningMeridian> = instances.iter().flatten().collect();
        let leader = the_leader(&all).await;
        all_write_to(&all, cluster.primary().port()).await;

        // The primary dies: exactly one replica is promoted, by the leader alone, and all
        // three proxies send writes there.
        let old = cluster.primary().port();
        cluster.primary().kill();
        let new_primary = promoted_once(&cluster, old).await;
        all_write_to(&all, new_primary).await;
        for (i, meridian) in all.iter().enumerate() {
            assert_eq!(
                runs(meridian).await,
                usize::from(i == leader),
                "instance {i}"
            );
        }
        leader
    };
    // The leader dies: another leads within the lease TTL (and a margin for a busy machine),
    // and still fails a dead primary over correctly.
    let killed = Instant::now();
    instances[leader] = None;
    let rest: Vec<&RunningMeridian> = instances.iter().flatten().collect();
    let new_leader = the_leader(&rest).await;
    let took = killed.elapsed();
    assert!(took < TTL * 5, "a new leader after {took:?}");
    let current = status(rest[new_leader]).await.unwrap();
    let primary_name = current["primary"].as_str().unwrap().to_owned();
    let primary = cluster.node(&primary_name);
    assert_eq!(in_recovery(primary).await, Some(false));
    primary.kill();
    let newest = promoted_once(&cluster, primary.port()).await;
    all_write_to(&rest, newest).await;
    assert_eq!(
        runs(rest[new_leader]).await,
        1,
        "the new leader ran this one"
    );
}

/// Writes numbers `base + 1, base + 2, ...` through `proxy` until `stop`, one at a time;
/// returns the numbers acknowledged (committed, as the proxy said) and when.
fn numbered_writer(
    proxy: u16,
    base: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(i64, Instant)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut next = base;
        while !*stop.borrow() {
            next += 1;
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), write_through(proxy, next)).await;
            if let Ok(Ok(_)) = attempt {
                acked.push((next, Instant::now()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_from_etcd_stops_writes_within_its_lease_and_a_switchover_meanwhile_loses_nothing()
 {
    let (etcd, cluster) = setup(TestCluster::builder().replicas(1)).await;
    let link = FaultLink::start(etcd.member(0).client_addr()).unwrap();
    let a = RunningMeridian::start(
        &settings_with(&cluster, &etcd.endpoints(), "a", DataDirs::Managed),
        TIMEOUT,
    )
    .await;
    let cut_off = RunningMeridian::start(
        &settings_with(
            &cluster,
            &[format!("http://{}", link.addr())],
            "cut-off",
            DataDirs::Managed,
        ),
        TIMEOUT,
    )
    .await;
    the_leader(&[&a, &cut_off]).await;
    all_write_to(&[&a, &cut_off], cluster.primary().port()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writers = [
        numbered_writer(a.port, 1_000_000, stopped.clone()),
        numbered_writer(cut_off.port, 2_000_000, stopped),
    ];

    link.blackhole();
    let cut = Instant::now();
    let fenced_after = cut_off.or_log(
        wait_until(TIMEOUT, "the cut-off proxy to fence itself", || async {
            match status(&cut_off).await {
                Ok(body) if body["coordination"]["fenced"] == true => Check::Ready(cut.elapsed()),
                other => Check::NotYet(format!("{other:?}")),
            }
        })
        .await,
    );
    let fenced_at = Instant::now();
    assert!(
        fenced_after <= TTL + Duration::from_secs(1),
        "fenced after {fenced_after:?}"
    );
    // The alert comes when the session is found lost, which may be a moment after the fence.
    cut_off.or_log(
        wait_until(TIMEOUT, "the coordination_lost alert", || async {
            match http_json(
                cut_off.admin,
                "GET",
                "/api/database/alerts?active=true",
                None,
                None,
            )
            .await
            {
                Ok((_, body)) => {
                    Check::when(body.to_string().contains("coordination_lost"), (), body)
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await,
    );

    // Meanwhile the primary changes: `a` leads (the cut-off one cannot keep its lease), and
    // its switchover waits for the barrier before touching the servers.
    a.or_log(
        wait_until(TIMEOUT, "a to lead", || async {
            match status(&a).await {
                Ok(body) if body["coordination"]["leading"] == true => Check::Ready(()),
                other => Check::NotYet(format!("{other:?}")),
            }
        })
        .await,
    );
    let (code, run) = http_json(
        a.admin,
        "POST",
        "/api/database/switchover",
        Some(TOKEN),
        Some("{}"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{run}\n{}", a.log());
    assert_eq!(run["outcome"], "completed", "{run}");
    let new_primary = cluster.replicas()[0].port();
    all_write_to(&[&a], new_primary).await;

    link.pass();
    let healed_at = Instant::now();
    all_write_to(&[&cut_off], new_primary).await;
    stop.send(true).unwrap();
    let mut acked = Vec::new();
    for writer in writers {
        acked.push(writer.await.unwrap());
    }
    // The cut-off proxy acknowledged nothing while fenced.
    let while_fenced: Vec<i64> = acked[1]
        .iter()
        .filter(|(_, at)| *at > fenced_at && *at < healed_at)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        while_fenced.is_empty(),
        "writes while fenced: {while_fenced:?}"
    );
    // Every acknowledged write, through either proxy, is on the new primary: none went to
    // the old one after the switch.
    let on_new: std::collections::BTreeSet<i64> = cluster.replicas()[0]
        .query("SELECT value FROM numbered WHERE value > 1")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|row| row[0].as_deref().and_then(|v| v.parse().ok()))
        .collect();
    let missing: Vec<i64> = acked
        .iter()
        .flatten()
        .map(|(n, _)| *n)
        .filter(|n| !on_new.contains(n))
        .collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    assert!(
        acked[0].len() > 10 && !acked[1].is_empty(),
        "the writers wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stopped_writes_go_on_to_the_known_primary_and_no_failover_happens() {
    let (etcd, cluster) = setup(TestCluster::builder().replicas(1)).await;
    let a = RunningMeridian::start(&settings(&cluster, &etcd.endpoints(), "a"), TIMEOUT).await;
    let b = RunningMeridian::start(&settings(&cluster, &etcd.endpoints(), "b"), TIMEOUT).await;
    the_leader(&[&a, &b]).await;
    all_write_to(&[&a, &b], cluster.primary().port()).await;

    etcd.member(0).stop().await.unwrap();
    for meridian in [&a, &b] {
        meridian.or_log(
            wait_until(TIMEOUT, "etcd seen down", || async {
                match status(meridian).await {
                    Ok(body) if body["coordination"]["etcd_down"] == true => Check::Ready(()),
                    other => Check::NotYet(format!("{other:?}")),
                }
            })
            .await,
        );
    }
    // Past the lease TTL, writes still go to the known primary through both proxies.
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    for proxy in [a.port, b.port] {
        assert_eq!(
            write_through(proxy, 2).await.unwrap(),
            cluster.primary().port()
        );
    }
    let (_, alerts) = http_json(
        a.admin,
        "GET",
        "/api/database/alerts?active=true",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(alerts.to_string().contains("coordination_lost"), "{alerts}");

    // The primary dies: with no etcd, nobody can publish a failover, and nobody promotes.
    cluster.primary().kill();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            in_recovery(&cluster.replicas()[0]).await,
            Some(true),
            "promoted without etcd"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // etcd is back: the leader fails the dead primary over.
    etcd.member(0).start().await.unwrap();
    a.or_log(
        wait_until(
            TIMEOUT,
            "the replica promoted once etcd is back",
            || async {
                Check::when(
                    in_recovery(&cluster.replicas()[0]).await == Some(false),
                    (),
                    "in recovery",
                )
            },
        )
        .await,
    );
    for proxy in [a.port, b.port] {
        let port = wait_until(TIMEOUT, "writes on the new primary", || async {
            match write_through(proxy, 3).await {
                Ok(port) if port == cluster.replicas()[0].port() => Check::Ready(port),
                other => Check::NotYet(format!("{other:?}")),
            }
        })
        .await
        .unwrap();
        assert_eq!(port, cluster.replicas()[0].port());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_the_leader_cannot_reach_but_another_instance_can_is_not_failed_over() {
    let (etcd, cluster) = setup(TestCluster::builder().replicas(1).replication_links()).await;
    let primary = cluster.primary();
    // The leader reaches the primary through a link of its own.
    let leader_link = FaultLink::start(primary.addr()).unwrap();
    let leader_view = settings(&cluster, &etcd.endpoints(), "leader").replace(
        &format!("port = {}\n", primary.port()),
        &format!("port = {}\n", leader_link.port()),
    );
    let leader = RunningMeridian::start(&leader_view, TIMEOUT).await;
    the_leader(&[&leader]).await;
    let other =
        RunningMeridian::start(&settings(&cluster, &etcd.endpoints(), "other"), TIMEOUT).await;
    assert_eq!(the_leader(&[&leader, &other]).await, 0);

    // The leader loses the primary, and so does the replica's stream: only the other instance
    // still reaches it.
    leader_link.blackhole();
    cluster
        .replication_link(cluster.replicas()[0].name())
        .unwrap()
        .blackhole();
    leader.or_log(
        wait_until(
            TIMEOUT,
            "the leader to hold back on the other's sighting",
            || async {
                Check::when(
                    leader.log().contains("another instance reached it"),
                    (),
                    "not yet",
                )
            },
        )
        .await,
    );
    assert_eq!(in_recovery(&cluster.replicas()[0]).await, Some(true));

    // The other instance goes: nobody reaches the primary any more, and the leader fails it
    // over.
    drop(other);
    leader.or_log(
        wait_until(TIMEOUT, "the replica promoted", || async {
            Check::when(
                in_recovery(&cluster.replicas()[0]).await == Some(false),
                (),
                "in recovery",
            )
        })
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_coordinate_over_tls_with_client_certificates_and_one_without_is_refused() {
    let etcd = EtcdCluster::start_tls(1).await.unwrap();
    let cluster = with_table(TestCluster::builder().replicas(1)).await;
    let path = |p: Option<&std::path::Path>| p.expect("a TLS cluster").display().to_string();
    let ca = path(etcd.tls_root_cert());
    let tls = |instance: &str, with_client_cert: bool| {
        let mut text = settings(&cluster, &etcd.endpoints(), instance).replacen(
            "lease_ttl",
            &format!("ca_cert = \"{ca}\"\nlease_ttl"),
            1,
        );
        if with_client_cert {
            text = text.replacen(
                "lease_ttl",
                &format!(
                    "cert = \"{}\"\nkey = \"{}\"\nlease_ttl",
                    path(etcd.tls_client_cert()),
                    path(etcd.tls_client_key())
                ),
                1,
            );
        }
        text
    };
    assert!(etcd.endpoints()[0].starts_with("https://"));
    let a = RunningMeridian::start(&tls("a", true), TIMEOUT).await;
    the_leader(&[&a]).await;
    all_write_to(&[&a], cluster.primary().port()).await;

    // Without a client certificate etcd refuses the session: never a leader, writes fenced.
    let b = RunningMeridian::start(&tls("b", false), TIMEOUT).await;
    let refused = b.or_log(
        wait_until(TIMEOUT, "the session refused", || async {
            match status(&b).await {
                Ok(body) if body["coordination"]["last_error"].is_string() => {
                    Check::Ready(body["coordination"].clone())
                }
                other => Check::NotYet(format!("{other:?}")),
            }
        })
        .await,
    );
    assert_eq!(refused["session"], false, "{refused}");
    assert_eq!(refused["leading"], false, "{refused}");
    assert_eq!(refused["fenced"], true, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_only_instance_leads_and_serves_no_clients_while_a_proxy_only_one_never_leads() {
    let (etcd, cluster) = setup(TestCluster::builder().replicas(1)).await;
    let with_roles = |instance: &str, roles: &str| {
        settings(&cluster, &etcd.endpoints(), instance).replacen(
            "lease_ttl",
            &format!("roles = [{roles}]\nlease_ttl"),
            1,
        )
    };
    // The proxy-only instance starts first: it still never leads.
    let proxy = RunningMeridian::start(&with_roles("proxy-only", "\"proxy\""), TIMEOUT).await;
    let control =
        RunningMeridian::start_control_only(&with_roles("control-only", "\"control\""), TIMEOUT)
            .await;
    assert_eq!(the_leader(&[&control, &proxy]).await, 0);
    assert!(
        connect(control.port).await.is_err(),
        "a control-only instance serves no clients"
    );
    all_write_to(&[&proxy], cluster.primary().port()).await;

    // The primary dies: the control-only leader fails it over, the proxy follows.
    let old = cluster.primary().port();
    cluster.primary().kill();
    let new_primary = promoted_once(&cluster, old).await;
    all_write_to(&[&proxy], new_primary).await;
    assert_eq!(runs(&control).await, 1);
    assert_eq!(runs(&proxy).await, 0);
    let status = status(&proxy).await.unwrap();
    assert_eq!(status["coordination"]["leader"], "control-only");
    assert_eq!(status["coordination"]["leading"], false);
}
