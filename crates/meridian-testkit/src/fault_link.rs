//! `FaultLink`: a TCP relay to put between a client and a server, whose faults are switched
//! at run time, per direction.
//!
//! - [`Fault::Pass`]: bytes flow as they come.
//! - [`Fault::Latency`]: each chunk is delivered that long after it was read (one way; set both
//!   directions for a round trip of twice the value). Order is always kept.
//! - [`Fault::Blackhole`]: nothing is delivered, but nothing is lost either: bytes wait (and
//!   TCP back-pressure builds up) until the fault is lifted, as over a network partition that
//!   heals before TCP gives up. New connections are accepted but the server is not contacted.
//! - [`Fault::Reset`]: every open connection is closed with a TCP RST and new ones are reset
//!   as soon as they are accepted, as when a host's kernel answers for a dead process.
//!
//! The relay runs on its own thread with its own single-threaded tokio runtime, so that it
//! keeps relaying whatever the test's runtime is doing (even a blocking call), and it stops
//! when the `FaultLink` is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link does to the bytes of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay unchanged.
    Pass,
    /// Deliver each chunk this long after it was read.
    Latency(Duration),
    /// Deliver nothing until the fault changes; keep what was sent.
    Blackhole,
    /// Close connections with a TCP RST.
    Reset,
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the side that connects to the link) to the server.
    ToServer,
    /// From the server back to the client.
    ToClient,
    /// Both ways.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkState {
    target: SocketAddr,
    to_server: Fault,
    to_client: Fault,
}

impl LinkState {
    fn fault(&self, towards_server: bool) -> Fault {
        if towards_server {
            self.to_server
        } else {
            self.to_client
        }
    }

    fn resetting(&self) -> bool {
        self.to_server == Fault::Reset || self.to_client == Fault::Reset
    }
}

/// A controllable TCP relay from a loopback port to a target address.
#[derive(Debug)]
pub struct FaultLink {
    addr: SocketAddr,
    state: watch::Sender<LinkState>,
    open_connections: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultLink {
    /// Starts relaying from a new loopback port to `target`, passing everything.
    pub fn start(target: SocketAddr) -> anyhow::Result<FaultLink> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot bind a loopback port for a FaultLink")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (state, state_rx) = watch::channel(LinkState {
            target,
            to_server: Fault::Pass,
            to_client: Fault::Pass,
        });
        let open_connections = Arc::new(AtomicUsize::new(0));
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the FaultLink runtime")?;
        let counter = open_connections.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-link-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = accept_loop(listener, state_rx, counter) => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime cancels every connection task and closes its sockets.
            })
            .context("cannot start the FaultLink thread")?;
        Ok(FaultLink {
            addr,
            state,
            open_connections,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sets the fault of one or both directions; open connections follow at once.
    pub fn set(&self, direction: Direction, fault: Fault) {
        self.state.send_modify(|state| match direction {
            Direction::ToServer => state.to_server = fault,
            Direction::ToClient => state.to_client = fault,
            Direction::Both => {
                state.to_server = fault;
                state.to_client = fault;
            }
        });
    }

    /// Both directions pass.
    pub fn pass(&self) {
        self.set(Direction::Both, Fault::Pass);
    }

    /// Adds `one_way` of latency to each direction (a round trip gains twice that).
    pub fn latency(&self, one_way: Duration) {
        self.set(Direction::Both, Fault::Latency(one_way));
    }

    /// Blackholes both directions: a network partition.
    pub fn blackhole(&self) {
        self.set(Direction::Both, Fault::Blackhole);
    }

    /// Resets every connection, now and until the fault changes.
    pub fn reset(&self) {
        self.set(Direction::Both, Fault::Reset);
    }

    /// The fault currently applied to `direction` (for `Both`, the one towards the server).
    pub fn fault(&self, direction: Direction) -> Fault {
        self.state.borrow().fault(direction != Direction::ToClient)
    }

    /// Sends new connections to another address; open connections keep their server.
    pub fn retarget(&self, target: SocketAddr) {
        self.state.send_modify(|state| state.target = target);
    }

    /// The address new connections are relayed to.
    pub fn target(&self) -> SocketAddr {
        self.state.borrow().target
    }

    /// How many client connections the link holds open.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultLink {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: watch::Receiver<LinkState>,
    open_connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let open_connections = open_connections.clone();
        open_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            relay(client, state).await;
            open_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Relays one client connection until either side closes or the link resets it.
async fn relay(mut client: TcpStream, mut state: watch::Receiver<LinkState>) {
    let _ = client.set_nodelay(true);
    // Do not contact the server while the way to it is blackholed or resetting.
    let target = loop {
        let current = *state.borrow_and_update();
        if current.resetting() {
            let _ = client.set_zero_linger();
            return;
        }
        if current.to_server != Fault::Blackhole {
            break current.target;
        }
        if state.changed().await.is_err() {
            return;
        }
    };
    let Ok(mut server) = TcpStream::connect(target).await else {
        // The server refused: the client sees its connection reset, as it would directly.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    let reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let mut reset_watch = state.clone();
        tokio::select! {
            _ = async {
                tokio::join!(
                    pump(client_read, server_write, true, state.clone()),
                    pump(server_read, client_write, false, state.clone()),
                )
            } => false,
            _ = reset_watch.wait_for(LinkState::resetting) => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// One direction: a reader that timestamps chunks and a writer that delivers each when due
/// and while the direction is not blackholed. A zero-length chunk carries end-of-stream.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    towards_server: bool,
    state: watch::Receiver<LinkState>,
) {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader_state = state.clone();
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buffer).await.unwrap_or(0);
            let delay = match reader_state.borrow().fault(towards_server) {
                Fault::Latency(delay) => delay,
                _ => Duration::ZERO,
            };
            if queue
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .await
                .is_err()
                || n == 0
            {
                return;
            }
        }
    };
    let writer = async move {
        let mut state = state;
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if state
                .wait_for(|s| s.fault(towards_server) != Fault::Blackhole)
                .await
                .is_err()
            {
                return;
            }
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
