//! The demo's clients, connected to Meridian like any application: writers that insert rows
//! numbered per writer (so that every acknowledged row can be looked for at the end) and
//! readers that ask which server answered them (so that reads can be counted per region).
//!
//! Each client keeps one connection, paced by a timer; after an error it notes the failure and
//! opens a new connection for its next statement. Nothing is retried: a write that failed is
//! not written again, and the log says exactly what the clients were told.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::demo::report::{Outcome, Read, Write};

/// The table the writers fill.
pub const TABLE: &str = "CREATE TABLE demo_writes (\
     writer int NOT NULL, seq bigint NOT NULL, written_at timestamptz NOT NULL DEFAULT now(), \
     PRIMARY KEY (writer, seq))";

/// Every statement the clients sent, with its outcome.
#[derive(Debug, Default)]
pub struct Log {
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
    /// The clients whose statement in flight had no answer when the workload stopped (within
    /// the bound given to [`Workload::stop`]): a statement that hangs is a failure to report,
    /// not one to wait for forever.
    pub unanswered: Vec<String>,
}

/// The running clients.
#[derive(Debug)]
pub struct Workload {
    log: Arc<Mutex<Log>>,
    stop: watch::Sender<bool>,
    /// Each client's name (its `application_name`) and task.
    tasks: Vec<(String, JoinHandle<()>)>,
}

/// How many clients, how often.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub writers: u32,
    pub readers: u32,
    pub write_every: Duration,
    pub read_every: Duration,
}

impl Workload {
    /// Starts the clients against the proxy at `conninfo` (libpq key-value form).
    pub fn start(conninfo: &str, shape: Shape) -> Workload {
        let log = Arc::new(Mutex::new(Log::default()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for writer in 1..=shape.writers {
            let name = format!("demo-writer-{writer}");
            let task = tokio::spawn(write_loop(
                format!("{conninfo} application_name={name}"),
                writer,
                shape.write_every,
                log.clone(),
                stopped.clone(),
            ));
            tasks.push((name, task));
        }
        for reader in 1..=shape.readers {
            let name = format!("demo-reader-{reader}");
            let task = tokio::spawn(read_loop(
                format!("{conninfo} application_name={name}"),
                // Each reader follows one writer's rows.
                (reader - 1) % shape.writers.max(1) + 1,
                shape.read_every,
                log.clone(),
                stopped.clone(),
            ));
            tasks.push((name, task));
        }
        Workload { log, stop, tasks }
    }

    /// The log so far.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.log)
    }

    /// The log, shared, for a reader that outlives this borrow (the live display).
    pub fn log_handle(&self) -> Arc<Mutex<Log>> {
        self.log.clone()
    }

    /// Stops every client after its statement in flight and returns the whole log. A client
    /// still waiting for an answer after `bound` is stopped where it is and named in
    /// [`Log::unanswered`].
    pub async fn stop(self, bound: Duration) -> Log {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + bound;
        let mut unanswered = Vec::new();
        for (name, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                unanswered.push(name);
            }
        }
        let mut log = std::mem::take(&mut *lock(&self.log));
        log.unanswered = unanswered;
        log
    }
}

pub fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a session through the proxy; its connection task runs on the current runtime.
pub async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE of an error, if the server or the proxy sent one.
fn code(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|c| c.code().to_owned())
}

/// One client's rhythm and connection: a statement every `every` until stopped, on one
/// connection, reopened for the next statement after an error.
struct Paced {
    conninfo: String,
    client: Option<Client>,
    tick: tokio::time::Interval,
    stopped: watch::Receiver<bool>,
}

impl Paced {
    fn new(conninfo: String, every: Duration, stopped: watch::Receiver<bool>) -> Paced {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Paced {
            conninfo,
            client: None,
            tick,
            stopped,
        }
    }

    /// Waits for the next statement's turn; `false` once the workload stops.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.stopped.wait_for(|s| *s) => false,
        }
    }

    /// Runs `statement` on the connection (opening one if needed); after an error the
    /// connection is dropped.
    async fn run<T>(
        &mut self,
        statement: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.conninfo).await?,
        };
        let result = statement(&client).await;
        if result.is_ok() {
            self.client = Some(client);
        }
        result
    }
}

async fn write_loop(
    conninfo: String,
    writer: u32,
    every: Duration,
    log: Arc<Mutex<Log>>,
    stopped: watch::Receiver<bool>,
) {
    let mut client = Paced::new(conninfo, every, stopped);
    let mut seq = 0_i64;
    while client.next().await {
        seq += 1;
        let sent = Instant::now();
        let result = client
            .run(async |c| {
                c.execute(
                    "INSERT INTO demo_writes (writer, seq) VALUES ($1, $2)",
                    &[&(writer as i32), &seq],
                )
                .await
            })
            .await;
        let outcome = match result {
            Ok(_) => Outcome::Acknowledged(Instant::now()),
            Err(e) => Outcome::Failed {
                at: Instant::now(),
                code: code(&e),
            },
        };
        lock(&log).writes.push(Write {
            writer,
            seq,
            sent,
            outcome,
        });
    }
}

async fn read_loop(
    conninfo: String,
    writer: u32,
    every: Duration,
    log: Arc<Mutex<Log>>,
    stopped: watch::Receiver<bool>,
) {
    let mut client = Paced::new(conninfo, every, stopped);
    while client.next().await {
        let sent = Instant::now();
        let result = client
            .run(async |c| {
                let row = c
                    .query_one(
                        "SELECT inet_server_port(), max(seq) FROM demo_writes WHERE writer = $1",
                        &[&(writer as i32)],
                    )
                    .await?;
                row.try_get::<_, i32>(0)
            })
            .await;
        let outcome = result
            .map(|port| port as u16)
            .map_err(|e| code(&e).unwrap_or_else(|| e.to_string()));
        lock(&log).reads.push(Read { sent, outcome });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_testkit::{Check, TestCluster, wait_until};

    const SHAPE: Shape = Shape {
        writers: 1,
        readers: 1,
        write_every: Duration::from_millis(10),
        read_every: Duration::from_millis(10),
    };

    /// A statement that never gets its answer (the table locked by another session) does not
    /// hold the stop forever: the clients waiting are stopped after the bound and named.
    #[tokio::test]
    async fn a_stop_names_the_clients_still_waiting_after_its_bound() {
        let cluster = TestCluster::builder().replicas(0).start().await.unwrap();
        let primary = cluster.primary();
        primary.execute(TABLE).await.unwrap();

        // Answered statements: the stop waits for them and names no one.
        let workload = Workload::start(&primary.conninfo(), SHAPE);
        wait_until(Duration::from_secs(30), "a write and a read", || async {
            let log = workload.log();
            let (writes, reads) = (log.writes.len(), log.reads.len());
            Check::when(
                writes > 0 && reads > 0,
                (),
                format!("{writes} writes, {reads} reads"),
            )
        })
        .await
        .unwrap();
        let log = workload.stop(Duration::from_secs(30)).await;
        assert!(log.unanswered.is_empty(), "{:?}", log.unanswered);
        assert!(log.writes.iter().all(|w| w.acknowledged().is_some()));

        // Now every statement waits on a lock held until the end of the test.
        let locker = primary.client().await.unwrap();
        locker
            .batch_execute("BEGIN; LOCK TABLE demo_writes IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let workload = Workload::start(&primary.conninfo(), SHAPE);
        wait_until(
            Duration::from_secs(30),
            "both clients blocked on the lock",
            || async {
                let waiting = primary
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name LIKE 'demo-%' AND wait_event_type = 'Lock'",
                    )
                    .await;
                Check::when(
                    matches!(&waiting, Ok(Some(n)) if n == "2"),
                    (),
                    format!("{waiting:?} waiting"),
                )
            },
        )
        .await
        .unwrap();
        let log = workload.stop(Duration::from_millis(500)).await;
        assert_eq!(log.unanswered, ["demo-writer-1", "demo-reader-1"]);
        assert!(log.writes.is_empty() && log.reads.is_empty(), "{log:?}");
        locker.batch_execute("ROLLBACK").await.unwrap();
    }
}
