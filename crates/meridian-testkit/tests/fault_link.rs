//! Each FaultLink mode does to a TCP stream what it says, against a real echo server and a
//! real replication connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meridian_testkit::{Check, Direction, Fault, FaultLink, TestCluster, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An echo server counting accepted connections and bytes received.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
}

async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let (a, r) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            r.fetch_add(n, Ordering::SeqCst);
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Echo {
        addr,
        accepted,
        received,
    }
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut reply = vec![0u8; message.len()];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

/// Reads nothing for `window` (a bounded check that the link holds the bytes back).
async fn assert_silent(stream: &mut TcpStream, window: Duration) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(window, stream.read(&mut byte)).await;
    assert!(
        read.is_err(),
        "the link delivered while it should hold: {read:?}"
    );
}

/// A new connection is reset: at connect if the RST beats the handshake's completion, else at
/// the first read.
async fn assert_new_connection_reset(addr: SocketAddr) {
    let error = match TcpStream::connect(addr).await {
        Err(error) => error,
        Ok(mut stream) => {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
                .await
                .unwrap();
            read.expect_err("a new connection should be reset, not served or closed cleanly")
        }
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

#[tokio::test]
async fn pass_relays_both_ways() {
    let echo = echo_server().await;
    let link = FaultLink::start(echo.addr).unwrap();
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");
    assert_eq!(link.open_connections(), 1);
    assert_eq!(link.fault(Direction::ToServer), Fault::Pass);
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let echo = echo_server().await;
    let link = FaultLink::start(echo.addr).unwrap();
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut stream, b"warm").await;

    link.latency(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").await, b"slow");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200),
        "round trip took {elapsed:?}"
    );

    link.set(Direction::ToClient, Fault::Pass);
    let started = Instant::now();
    round_trip(&mut stream, b"half").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(100),
        "round trip took {elapsed:?}"
    );
}

#[tokio::test]
async fn blackhole_holds_bytes_and_loses_none() {
    let echo = echo_server().await;
    let link = FaultLink::start(echo.addr).unwrap();
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut stream, b"before").await;

    link.blackhole();
    stream.write_all(b"during").await.unwrap();
    assert_silent(&mut stream, Duration::from_millis(300)).await;
    assert_eq!(
        echo.received.load(Ordering::SeqCst),
        b"before".len(),
        "the server got bytes"
    );
    // A new connection is accepted by the link but does not reach the server.
    let mut late = TcpStream::connect(link.addr()).await.unwrap();
    late.write_all(b"late").await.unwrap();
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);

    link.pass();
    let mut reply = [0u8; 6];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"during");
    let mut reply = [0u8; 4];
    tokio::time::timeout(TIMEOUT, late.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"late");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn blackhole_of_one_direction_lets_the_other_through() {
    let echo = echo_server().await;
    let link = FaultLink::start(echo.addr).unwrap();
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut stream, b"x").await;

    link.set(Direction::ToClient, Fault::Blackhole);
    stream.write_all(b"one-way").await.unwrap();
    wait_until(TIMEOUT, "the server to receive the bytes", || async {
        let n = echo.received.load(Ordering::SeqCst);
        Check::when(n == 1 + b"one-way".len(), (), n)
    })
    .await
    .unwrap();
    assert_silent(&mut stream, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn reset_cuts_open_connections_and_refuses_new_ones() {
    let echo = echo_server().await;
    let link = FaultLink::start(echo.addr).unwrap();
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    round_trip(&mut stream, b"ok").await;

    link.reset();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
        .await
        .unwrap();
    let error = read.expect_err("an open connection should be reset, not closed cleanly");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);

    assert_new_connection_reset(link.addr()).await;
    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        1,
        "a reset link contacted the server"
    );

    link.pass();
    let mut healed = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(round_trip(&mut healed, b"again").await, b"again");
}

#[tokio::test]
async fn a_dead_target_resets_the_client_and_retarget_moves_new_connections() {
    let echo = echo_server().await;
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let link = FaultLink::start(dead).unwrap();
    assert_new_connection_reset(link.addr()).await;

    link.retarget(echo.addr);
    assert_eq!(link.target(), echo.addr);
    let mut stream = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"moved").await, b"moved");
}

#[tokio::test]
async fn a_blackholed_replication_link_stops_replay_until_it_heals() {
    let cluster = TestCluster::builder()
        .replicas(1)
        .replication_links()
        .start()
        .await
        .unwrap();
    let primary = cluster.primary();
    let replica = cluster.node("main-2");
    let link = cluster.replication_link("main-2").unwrap();
    assert_eq!(link.target(), primary.addr());
    primary.execute("CREATE TABLE t (id int)").await.unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();

    link.blackhole();
    primary
        .execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    let written = primary.lsn().await.unwrap();
    // The replica cannot see the write while partitioned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        replica.lsn().await.unwrap() < written,
        "the write crossed a blackholed link"
    );
    assert_eq!(
        replica
            .query_one("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );

    link.pass();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    assert_eq!(
        replica
            .query_one("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("1000")
    );
}
