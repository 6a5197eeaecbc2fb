//! One client session: the relay between a client and the server connections it borrows.
//!
//! The session runs in one task that reads both sockets. Client messages are decoded only as
//! far as needed to rewrite prepared-statement names and to know which replies are owed
//! (see [`crate::tracker`]); server messages are scanned by header and copied to the client,
//! with ParameterStatus, CommandComplete and ReadyForQuery looked into. Frames larger than
//! [`STREAM_ABOVE`] (big rows, COPY data) are streamed through as they arrive instead of
//! being buffered whole.
//!
//! In transaction pooling the server connection is borrowed when the client sends something
//! that needs a server and given back at the ReadyForQuery that leaves it idle with nothing
//! owed; before another client gets it, the connection is reset if this client changed
//! session state (see [`crate::session_state`]). Client run-time parameters (startup packet,
//! `SET` of reported parameters) are re-applied on whichever connection the session borrows.
//!
//! Each transaction is routed on its own (submodule `routing`): reads to replicas, the rest to
//! the primary, with read-your-writes, pins that keep a session on its server connection, and
//! reruns of reads a replica refused or lost. `SET`/`SHOW meridian.*` are answered by the
//! proxy itself (submodule `local`).
//!
//! When a server connection dies under a session, the client gets an error per pending
//! request and keeps its connection (its next transaction goes to a fresh server
//! connection), except in session pooling, where its session state died with the server and
//! the connection is closed.
//!
//! Failover. A session that needs a server while the view is paused (a failover is under
//! way), or whose connection attempt to the named primary fails as if the node were down
//! (the primary just died and the monitor has not published that yet: the node is reported
//! on the fast signal), waits for the next view and routes again, for at most
//! `failover_buffer_timeout` in all, holding one of `failover_buffer_size` places; it stops
//! waiting at once when the proxy shuts down. Waiting is the session's own task: nothing else
//! waits with it. While a server is attached, the session also watches the view: when the
//! generation moves past the one its server connection was opened under (the primary was
//! replaced), it abandons that connection, even if the old server hangs, and answers the
//! client as for a lost server, with [`Failure::FailedOver`]. A server that reports a change
//! of `in_hot_standby`, or is a hot standby when the view calls it the primary, is reported
//! and its connection is not reused.

mod local;
mod routing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use meridian_config::{PoolMode, ReadYourWrites};
use meridian_core::Lsn;
use meridian_core::classify::{
    Classification, IsolationLevel, Name, PinReason, Reason, StatementClass, TransactionControl,
};
use meridian_core::routing::commands::{self, CommandError, SessionCommand, Setting};
use meridian_core::routing::{
    NoRoute, RouteDecision, RouteReason, SessionRoute, Statement, Target as RouteTarget,
};
use meridian_core::topology::{ClusterView, NodeId, Role};
use meridian_wire::backend::{self, TransactionStatus};
use meridian_wire::frontend::{self, FrontendMessage, Target};
use meridian_wire::{Frame, WireError, frame};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Shared;
use crate::cancel::{CancelSlot, CancelTarget};
use crate::failure::Failure;
use crate::login::{Authenticated, send_error};
use crate::pool::{Pool, PoolError, PoolKey};
use crate::router::InFlight;
use crate::server::{
    IN_HOT_STANDBY, ServerConnection, ServerError, ServerLogin, first_column, hot_standby_change,
};
use crate::session_state::{
    sql_changes_session, tag_changes_session, tag_clears_prepared, tag_writes_rows,
};
use crate::settings::User;
use crate::statements::{ClientStatements, StatementDef, StatementId, route_of};
use crate::stream::Stream;
use crate::tracker::{Expect, Tracker};
use crate::woken::Woken;

/// The primary's WAL position, for read-your-writes: at or past the end of every commit
/// acknowledged before it runs.
const WRITE_POSITION: &str = "SELECT pg_current_wal_insert_lsn()";

/// How often a read that must see the session's last write asks its replica again, after
/// the first `CAUSAL_QUICK_CHECKS` checks made back to back.
const CAUSAL_POLL: std::time::Duration = std::time::Duration::from_millis(1);
const CAUSAL_QUICK_CHECKS: u32 = 8;

/// Frames above this size are streamed to the client as they arrive.
const STREAM_ABOVE: usize = 64 * 1024;
/// Flush to the client once this much is buffered, to bound memory on big results.
const FLUSH_ABOVE: usize = 64 * 1024;
/// Read buffers get at least this much room before a read.
const READ_CHUNK: usize = 8 * 1024;

/// Run-time parameters a client owns: it may set them at startup or with `SET`, the server
/// reports them (GUC_REPORT), and the proxy re-applies them on every server connection the
/// session borrows. Other reported parameters (`server_version`, `in_hot_standby`, ...) are
/// facts about the server.
const CLIENT_REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
    "search_path",
];

/// What to undo when a Parse fails or is skipped by the server.
#[derive(Debug, Default)]
struct Undo {
    /// The server does not have this statement after all.
    server: Option<StatementId>,
    /// The client's statement of this name was not created.
    client: Option<Bytes>,
    /// Not an undo: marks the proxy's own query for the primary's WAL position, sent after
    /// the write numbered so (see [`Attached::writes`]).
    capture: Option<u64>,
}

/// A borrowed server connection and the state of its use.
#[derive(Debug)]
struct Attached {
    conn: Box<ServerConnection>,
    pool: Arc<Pool>,
    /// The client changed session state: reset before the connection is reused.
    dirty: bool,
    /// The server's transaction status at its last ReadyForQuery.
    status: TransactionStatus,
    /// The rest of a large frame being streamed: bytes left, and whether they go to the client.
    streaming: Option<(usize, bool)>,
    /// The server announced it is closing (a FATAL error, relayed to the client as ERROR):
    /// the request it answered needs no second error when the connection then drops.
    said_goodbye: bool,
    /// The open transaction wrote rows under a generation whose first write is not reported
    /// yet: report it when the transaction commits.
    wrote: bool,
    /// Routed to a replica: a failover does not invalidate it, and nothing it runs writes.
    replica: bool,
    /// Why it was routed where it is.
    reason: RouteReason,
    /// A statement that may write ran on it since the last read-your-writes position was
    /// learned: learn the primary's position when the transaction ends.
    may_write: bool,
    /// Reads may go elsewhere (read-your-writes is on and the view has replicas): watch for
    /// writes.
    track_writes: bool,
    /// Writes noted on it so far, numbering the WAL-position queries sent after them.
    writes: u64,
    /// The position the last such query returned, until its ReadyForQuery says it ran
    /// outside a transaction (after the commit).
    captured: Option<Lsn>,
    /// Counts the transaction in the node's load while it lives.
    _in_flight: InFlight,
}

/// A read sent to a replica, kept until its first row reaches the client so that it can run
/// again on the primary if the replica refuses it as a write (SQLSTATE 25006): the safety net
/// for what the classifier cannot see, such as a user-defined function that writes.
#[derive(Debug)]
struct Retry {
    /// The client's messages of the request, as received.
    request: Vec<Bytes>,
    /// How the request was classified.
    classification: Classification,
    /// Where the request's replies start in the client's output buffer (held until then).
    mark: usize,
    /// The request's Sync or Query was received: later messages are another request.
    complete: bool,
    /// The replica answered 25006: retry at its ReadyForQuery.
    refused: bool,
}

/// One client session.
pub(crate) struct Session {
    shared: Arc<Shared>,
    id: u64,
    client: Stream,
    client_in: BytesMut,
    client_out: BytesMut,
    user: User,
    database: Arc<str>,
    /// The client's run-time parameters (lower-case names); see `CLIENT_REPORTED`.
    params: Arc<BTreeMap<String, String>>,
    statements: ClientStatements,
    server: Option<Attached>,
    /// Replies the attached server owes (empty whenever no server is attached). Kept here,
    /// not per connection, so its allocation is reused across transactions.
    tracker: Tracker<Undo>,
    /// Bytes waiting to be written to the attached server.
    server_out: BytesMut,
    /// The pools used so far, by node index, kept to avoid a lookup per transaction (reads
    /// move between replicas from one transaction to the next).
    pools: Vec<Option<Arc<Pool>>>,
    cancel_pid: i32,
    cancel: Arc<CancelSlot>,
    /// After an error the proxy raised itself, client messages are dropped up to the Sync.
    discard_until_sync: bool,
    /// The server connection was lost or abandoned while the client was idle inside a
    /// transaction: tell it on its next message.
    lost_transaction: Option<Failure>,
    /// The cluster view, for routing and for waiting out a failover.
    view: watch::Receiver<Arc<ClusterView>>,
    /// The proxy's shutdown signal, for waiting out a failover.
    stopping: watch::Receiver<bool>,
    /// Shutdown was requested: close at the next moment no transaction is open.
    closing: bool,
    /// `SET meridian.route`.
    target: RouteTarget,
    /// The primary's WAL position after this session's last write (read-your-writes).
    write_lsn: Option<Lsn>,
    /// `SET meridian.min_lsn`: a position handed to the session by its client.
    client_min_lsn: Option<Lsn>,
    /// The position after a write could not be learned: the next read goes to the primary.
    read_primary_next: bool,
    /// The session holds state on its server connection and keeps it until it ends.
    pinned: Option<PinReason>,
    /// The read that may be retried on the primary (see [`Retry`]).
    retry: Option<Retry>,
    /// Re-sending a retried request: its Parse of a named statement is not a redefinition.
    replaying: bool,
    /// A plain `BEGIN` answered but not sent yet: the transaction's first statement decides
    /// where it runs (see [`Session::may_defer_begin`]).
    deferred_begin: Option<Bytes>,
    /// Statements (by the client's name) that are Meridian's own commands, answered by the
    /// proxy (see [`Session::answer_local_extended`]), and the portals bound to them.
    local_statements: HashMap<Bytes, Result<SessionCommand, CommandError>>,
    local_portals: HashMap<Bytes, Result<SessionCommand, CommandError>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.cancels.unregister(self.cancel_pid);
    }
}

impl Session {
    /// Completes the login (server parameters, cancel key) and relays until the client
    /// leaves, the proxy shuts down, or a fatal error.
    pub(crate) async fn run(
        shared: Arc<Shared>,
        login: Authenticated,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (cancel_pid, cancel) = shared.cancels.register();
        let id = shared.next_session_id();
        let params = shared.parameter_sets.intern(login.params);
        // Watched while a server is attached; marked seen before the first checkout, so that
        // a view published after it is noticed.
        let mut views = shared.view.clone();
        views.mark_unchanged();
        let view = shared.view.clone();
        let stopping = shutdown.clone();
        let mut session = Session {
            shared,
            id,
            client: login.stream,
            client_in: login.buffered,
            client_out: BytesMut::with_capacity(1024),
            user: login.user,
            database: Arc::from(login.database),
            params,
            statements: ClientStatements::default(),
            server: None,
            tracker: Tracker::default(),
            server_out: BytesMut::with_capacity(1024),
            pools: Vec::new(),
            cancel_pid,
            cancel,
            discard_until_sync: false,
            lost_transaction: None,
            view,
            stopping,
            closing: *shutdown.borrow(),
            target: RouteTarget::Auto,
            write_lsn: None,
            client_min_lsn: None,
            read_primary_next: false,
            pinned: None,
            retry: None,
            replaying: false,
            deferred_begin: None,
            local_statements: HashMap::new(),
            local_portals: HashMap::new(),
        };
        if let Err(failure) = session.start().await {
            // A failure during login ends the connection, as PostgreSQL's login errors do.
            send_error(&mut session.client, &failure.to_fatal_fields()).await;
            session.detach_after_failure();
            return;
        }
        let result = session.relay(&mut shutdown, views).await;
        session.finish(result).await;
    }

    /// Borrows a server connection, applies the client's parameters there (their errors are
    /// the client's login errors, as from PostgreSQL), and sends ParameterStatus,
    /// BackendKeyData and ReadyForQuery.
    async fn start(&mut self) -> Result<(), Failure> {
        // Logging in only needs a server's parameters: in transaction pooling any node will
        // do, so clients can connect while the primary is being replaced. A session-pooled
        // client keeps this server for its whole life: the primary.
        let login = Statement {
            classification: self.shared.settings.classifier.classify(b""),
            hint: match self.shared.settings.pool_mode {
                PoolMode::Transaction => RouteTarget::Auto,
                PoolMode::Session => RouteTarget::Primary,
            },
        };
        let mut conn = match self.checkout(&login).await {
            Err(Failure::NoReplica { .. }) => {
                self.checkout(&Statement {
                    hint: RouteTarget::Primary,
                    ..login
                })
                .await?
            }
            other => other?,
        };
        if let Some(sql) = parameter_sql(&self.params, &conn.conn.overrides) {
            let result = conn
                .conn
                .run_internal(&sql, self.shared.settings.max_message_size)
                .await;
            if let Err(e) = result {
                conn.pool.release(conn.conn, false);
                return Err(Failure::Pool(e.into()));
            }
        }
        conn.conn.overrides = self.params.clone();
        for (name, value) in &conn.conn.params {
            // Through Meridian the client reaches the primary for writes, wherever this
            // login ran: drivers that want a read-write server (libpq's
            // target_session_attrs) must not take Meridian for a standby.
            let value = if name == IN_HOT_STANDBY { "off" } else { value };
            backend::encode_parameter_status(&mut self.client_out, name, value);
        }
        backend::encode_backend_key_data(
            &mut self.client_out,
            self.cancel_pid,
            &self.cancel.secret(),
        );
        backend::encode_ready_for_query(&mut self.client_out, TransactionStatus::Idle);
        self.cancel.set_target(Some(cancel_target(&conn.conn)));
        self.server = Some(conn);
        self.flush_client()
            .await
            .map_err(|_| Failure::ShuttingDown)?;
        Ok(())
    }

    async fn relay(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        views: watch::Receiver<Arc<ClusterView>>,
    ) -> Result<(), Failure> {
        // One future for the whole session, not one per loop turn: registering a waiter on
        // the channel at every message showed up in profiles; and polled only once the
        // channel woke it (`Woken`), as checking the waiter did too.
        let stop = Woken::new(async {
            // A dropped sender means the proxy itself is gone: shut down too.
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        });
        tokio::pin!(stop);
        // The same for the view, renewed only when a view is published. It is looked at only
        // while a server is attached.
        let view_change = Woken::new(next_view(views));
        tokio::pin!(view_change);
        loop {
            if self.write_lsn_due() {
                self.learn_write_lsn().await;
            }
            if self.release_due() {
                self.release_if_done().await;
            }
            if self.closing && self.server_is_idle() {
                return Err(Failure::ShuttingDown);
            }
            if self.client_in.capacity() - self.client_in.len() < READ_CHUNK / 2 {
                self.client_in.reserve(READ_CHUNK);
            }
            let attached = self.server.is_some();
            let event = {
                let client = &mut self.client;
                let client_in = &mut self.client_in;
                let server = &mut self.server;
                tokio::select! {
                    // Server replies first: they are what clients wait for, and a fixed order
                    // spares the random draw on every turn.
                    biased;
                    read = read_server(server) => Event::Server(read),
                    read = client.fill(client_in) => Event::Client(read),
                    () = &mut stop, if !self.closing => Event::Shutdown,
                    views = &mut view_change, if attached => Event::View(views),
                }
            };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return Ok(()),
                Event::Client(Ok(_)) => {
                    if self.on_client_bytes().await? {
                        return Ok(());
                    }
                }
                Event::Server(Ok(n)) if n > 0 => self.on_server_bytes().await?,
                Event::Server(_) => self.server_lost().await?,
                Event::Shutdown => self.closing = true,
                Event::View(views) => {
                    let replaced = self.replaced_primary(&views.borrow());
                    view_change.set(Woken::new(next_view(views)));
                    if let Some(failure) = replaced {
                        self.abandon_server(failure).await?;
                    }
                }
            }
        }
    }

    /// When the view's generation has moved past the attached server connection's, the
    /// primary was replaced: what to tell the client.
    fn replaced_primary(&self, view: &ClusterView) -> Option<Failure> {
        let attached = self.server.as_ref()?;
        if attached.replica || attached.conn.generation >= view.generation {
            return None;
        }
        Some(Failure::FailedOver {
            old: attached.pool.node_name().to_owned(),
            new: view
                .primary
                .and_then(|id| view.node(id))
                .map(|node| node.name.to_string()),
        })
    }

    fn server_is_idle(&self) -> bool {
        match &self.server {
            None => true,
            Some(attached) => self.tracker.is_idle() && attached.status == TransactionStatus::Idle,
        }
    }

    /// Handles every whole message the client has sent. Returns true when the client
    /// terminated.
    async fn on_client_bytes(&mut self) -> Result<bool, Failure> {
        let max = self.shared.settings.max_message_size;
        while let Some(header) = frame::check(&self.client_in, max)? {
            if self.client_in.len() < header.frame_len {
                self.client_in
                    .reserve(header.frame_len - self.client_in.len());
                break;
            }
            let raw = self.client_in.split_to(header.frame_len).freeze();
            if self.on_client_message(raw).await? {
                return Ok(true);
            }
        }
        self.flush_server().await?;
        self.tracker.drain_answers(&mut self.client_out);
        self.flush_client()
            .await
            .map_err(|_| Failure::ShuttingDown)?;
        Ok(false)
    }

    /// One client message. Returns true for Terminate.
    async fn on_client_message(&mut self, raw: Bytes) -> Result<bool, Failure> {
        let message = FrontendMessage::decode(Frame {
            tag: raw[0],
            body: raw.slice(5..),
        })?;
        match &message {
            FrontendMessage::Terminate => return Ok(true),
            FrontendMessage::Password(_) => {
                return Err(Failure::Protocol(WireError::UnexpectedTag(b'p')));
            }
            _ => {}
        }
        if self.discard_until_sync {
            if matches!(message, FrontendMessage::Sync) {
                self.discard_until_sync = false;
                self.reply_ready_without_server();
            }
            return Ok(false);
        }
        if self.tracker.only_silent() {
            // The transaction is over but the proxy's own query after it is still out: let
            // it finish, so that this new request is routed on its own and sees
            // the position it learns.
            self.finish_silent().await?;
            self.release_if_done().await;
        }
        let query = match &message {
            FrontendMessage::Query { sql } => {
                // Meridian's own settings are answered here, in order with anything pending.
                if let Some(command) = commands::session_command(sql) {
                    self.answer_command(command);
                    return Ok(false);
                }
                Some(self.shared.settings.classifier.classify(sql))
            }
            _ => None,
        };
        if (!self.local_statements.is_empty() || query.is_none())
            && self.answer_local_extended(&message)
        {
            return Ok(false);
        }
        if self.server.is_none() {
            match message {
                // Nothing owed and nothing running: answer without borrowing a server.
                FrontendMessage::Sync if self.lost_transaction.is_none() => {
                    let status = if self.deferred_begin.is_some() {
                        TransactionStatus::InTransaction
                    } else {
                        TransactionStatus::Idle
                    };
                    backend::encode_ready_for_query(&mut self.client_out, status);
                    return Ok(false);
                }
                FrontendMessage::Flush => return Ok(false),
                FrontendMessage::Close { target, name } if self.lost_transaction.is_none() => {
                    if target == Target::Statement && !name.is_empty() {
                        self.statements.remove(&name);
                    }
                    backend::encode_close_complete(&mut self.client_out);
                    return Ok(false);
                }
                // The rest of a COPY whose server died: dropped, the error was reported.
                FrontendMessage::CopyData(_)
                | FrontendMessage::CopyDone
                | FrontendMessage::CopyFail { .. } => {
                    return Ok(false);
                }
                _ => {}
            }
            if let Some(failure) = self.lost_transaction.take() {
                self.fail_message(&message, &failure);
                return Ok(false);
            }
            if let (Some(classification), FrontendMessage::Query { sql }) = (&query, &message)
                && self.may_defer_begin(classification, sql)
            {
                // Where a plain BEGIN runs depends on what follows it: answer it now, send it
                // with the transaction's first statement.
                self.deferred_begin = Some(raw);
                backend::encode_command_complete(&mut self.client_out, b"BEGIN");
                backend::encode_ready_for_query(
                    &mut self.client_out,
                    TransactionStatus::InTransaction,
                );
                return Ok(false);
            }
            let mut statement = self.statement_of(&message, query);
            if let Some(begin) = &self.deferred_begin {
                let control = query.and_then(|c| c.transaction());
                match control {
                    // An empty transaction: nothing ran, nothing to send.
                    Some(TransactionControl::Commit { chain: false })
                    | Some(TransactionControl::Rollback { chain: false })
                        if query.is_some_and(|c| c.statements == 1) =>
                    {
                        let tag: &[u8] =
                            if matches!(control, Some(TransactionControl::Commit { .. })) {
                                b"COMMIT"
                            } else {
                                b"ROLLBACK"
                            };
                        self.deferred_begin = None;
                        backend::encode_command_complete(&mut self.client_out, tag);
                        backend::encode_ready_for_query(
                            &mut self.client_out,
                            TransactionStatus::Idle,
                        );
                        return Ok(false);
                    }
                    // BEGIN; SET TRANSACTION READ ONLY: a read-only transaction, for a replica.
                    Some(control) if control.is_read_only() && !control.needs_primary() => {}
                    // Anything else makes it a read-write transaction.
                    _ => {
                        let classifier = &self.shared.settings.classifier;
                        statement = Statement {
                            classification: classifier.classify(
                                begin
                                    .get(5..begin.len().saturating_sub(1))
                                    .unwrap_or_default(),
                            ),
                            hint: statement.hint,
                        };
                    }
                }
            }
            match self.checkout(&statement).await {
                Ok(attached) => {
                    self.shared
                        .router
                        .count(attached.conn.node, attached.reason);
                    if attached.replica {
                        self.retry = Some(Retry {
                            request: Vec::with_capacity(5),
                            classification: statement.classification,
                            mark: self.client_out.len(),
                            complete: false,
                            refused: false,
                        });
                    }
                    self.attach(attached);
                    if let Some(begin) = self.deferred_begin.take() {
                        // Its reply was given; an error from it still reaches the client.
                        self.server_out.extend_from_slice(&begin);
                        self.tracker.swallow(Expect::Query, None);
                    }
                }
                Err(failure) => {
                    if failure.is_fatal() {
                        return Err(failure);
                    }
                    // The transaction the client began fails with its first statement.
                    self.deferred_begin = None;
                    self.fail_message(&message, &failure);
                    return Ok(false);
                }
            }
        }
        self.forward(message, raw, query);
        Ok(false)
    }

    /// Reports `failure` for a message that never reached a server, as PostgreSQL reports an
    /// error: a simple Query gets its ReadyForQuery; an extended-protocol message makes the
    /// session skip to the next Sync.
    fn fail_message(&mut self, message: &FrontendMessage, failure: &Failure) {
        backend::encode_error_response(&mut self.client_out, &failure.to_fields());
        match message {
            FrontendMessage::Query { .. }
            | FrontendMessage::FunctionCall(_)
            | FrontendMessage::Sync => {
                backend::encode_ready_for_query(&mut self.client_out, TransactionStatus::Idle);
            }
            _ => self.discard_until_sync = true,
        }
    }

    fn reply_ready_without_server(&mut self) {
        match &self.server {
            // The Sync must still reach the server if one is attached: it owes the reply.
            Some(_) => {
                frontend::encode_sync(&mut self.server_out);
                self.tracker.forward(Expect::Sync, None);
            }
            None => backend::encode_ready_for_query(&mut self.client_out, TransactionStatus::Idle),
        }
    }

    /// Translates one client message for the attached server. `query` is the classification
    /// of a simple Query's text, when it was already made.
    fn forward(&mut self, message: FrontendMessage, raw: Bytes, query: Option<Classification>) {
        match &mut self.retry {
            Some(retry) if !retry.complete => {
                retry.request.push(raw.clone());
                retry.complete = matches!(
                    message,
                    FrontendMessage::Sync | FrontendMessage::Query { .. }
                );
                if matches!(message, FrontendMessage::Close { .. }) {
                    // Closing a statement cannot be replayed as it was: no safety net.
                    self.retry = None;
                }
            }
            // The client pipelines a second request behind the first: no safety net.
            Some(_) => self.retry = None,
            None => {}
        }
        let mut query_transaction = None;
        let mut pins = false;
        match &message {
            FrontendMessage::Query { sql } => {
                let classification =
                    query.unwrap_or_else(|| self.shared.settings.classifier.classify(sql));
                self.note_statement(&classification);
                query_transaction = classification.transaction();
                pins = classification.pin.is_some();
            }
            FrontendMessage::Bind { statement, .. } => {
                if let Some(def) = self.client_statement(statement) {
                    let classification = def.route.classification;
                    self.note_statement(&classification);
                }
            }
            FrontendMessage::FunctionCall(_) => {
                self.note_statement(&opaque("FunctionCall").classification);
            }
            _ => {}
        }
        let transaction_pooling = self.shared.settings.pool_mode == PoolMode::Transaction;
        let session_id = self.id;
        let attached = self.server.as_mut().expect("attached before forwarding");
        match message {
            FrontendMessage::Query { sql } => {
                // The calls `sql_changes_session` looks for (`set_config(..., false)`, the
                // session advisory locks) always make the classifier report a pin, whatever
                // the router's policy does with it: a text without one is not searched.
                attached.dirty |= transaction_pooling && pins && sql_changes_session(&sql);
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Query, None);
                let ends = match query_transaction {
                    Some(TransactionControl::Commit { chain: false }) => true,
                    Some(_) => false,
                    None => attached.status == TransactionStatus::Idle,
                };
                if ends {
                    self.capture_write_lsn();
                }
            }
            FrontendMessage::FunctionCall(_) => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Query, None);
            }
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                if !self.local_statements.is_empty() {
                    self.local_statements.remove(&name);
                }
                if name.is_empty() {
                    let def = Arc::new(StatementDef::unnamed(
                        sql,
                        param_types,
                        &self.shared.settings.classifier,
                    ));
                    let seq = self.statements.set_unnamed(def);
                    attached.conn.unnamed = Some((session_id, seq));
                    self.server_out.extend_from_slice(&raw);
                    self.tracker.forward(Expect::Parse, None);
                } else if self.replaying
                    && let Some(def) = self.statements.get(&name)
                {
                    // A retried request's Parse: the statement exists since its first run.
                    ensure_prepared(
                        &mut attached.conn,
                        &mut self.tracker,
                        &mut self.server_out,
                        def,
                    );
                    self.tracker.answer(Expect::Parse, parse_complete(), None);
                } else if self.statements.get(&name).is_some() {
                    // PostgreSQL: a named statement cannot be redefined (42P05).
                    let error = meridian_wire::backend::ErrorFields::new(
                        meridian_wire::backend::Severity::Error,
                        meridian_wire::sqlstate::DUPLICATE_PREPARED_STATEMENT,
                        format!(
                            "prepared statement \"{}\" already exists",
                            String::from_utf8_lossy(&name)
                        ),
                    );
                    let mut bytes = BytesMut::new();
                    backend::encode_error_response(&mut bytes, &error);
                    self.tracker
                        .answer_error(Expect::Parse, bytes.freeze(), None);
                    self.discard_until_sync = true;
                } else {
                    let def = self.shared.statements.intern(
                        sql,
                        param_types,
                        &self.shared.settings.classifier,
                    );
                    self.statements.insert(name.clone(), def.clone());
                    if attached.conn.prepared.contains(&def.id) {
                        self.tracker.answer(
                            Expect::Parse,
                            parse_complete(),
                            Some(Undo {
                                server: None,
                                client: Some(name),
                                capture: None,
                            }),
                        );
                    } else {
                        frontend::encode_parse(
                            &mut self.server_out,
                            &def.server_name,
                            &def.sql,
                            &def.param_types,
                        );
                        attached.conn.prepared.insert(def.id);
                        self.tracker.forward(
                            Expect::Parse,
                            Some(Undo {
                                server: Some(def.id),
                                client: Some(name),
                                capture: None,
                            }),
                        );
                    }
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                if !self.local_portals.is_empty() {
                    self.local_portals.remove(&portal);
                }
                if statement.is_empty() {
                    if let Some((def, seq)) = self.statements.unnamed() {
                        if attached.conn.unnamed != Some((session_id, *seq)) {
                            frontend::encode_parse(
                                &mut self.server_out,
                                b"",
                                &def.sql,
                                &def.param_types,
                            );
                            self.tracker.swallow(Expect::Parse, None);
                            attached.conn.unnamed = Some((session_id, *seq));
                        }
                        attached.dirty |= transaction_pooling && def.changes_session;
                    }
                    self.server_out.extend_from_slice(&raw);
                } else if let Some(def) = self.statements.get(&statement) {
                    ensure_prepared(
                        &mut attached.conn,
                        &mut self.tracker,
                        &mut self.server_out,
                        def,
                    );
                    attached.dirty |= transaction_pooling && def.changes_session;
                    frontend::encode_bind(&mut self.server_out, &portal, &def.server_name, &rest);
                } else {
                    // Unknown to us: the server answers 26000 naming the client's statement.
                    self.server_out.extend_from_slice(&raw);
                }
                self.tracker.forward(Expect::Bind, None);
            }
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                match self.statements.get(&name) {
                    Some(def) => {
                        ensure_prepared(
                            &mut attached.conn,
                            &mut self.tracker,
                            &mut self.server_out,
                            def,
                        );
                        frontend::encode_describe(
                            &mut self.server_out,
                            Target::Statement,
                            &def.server_name,
                        );
                    }
                    None => self.server_out.extend_from_slice(&raw),
                }
                self.tracker.forward(Expect::Describe, None);
            }
            FrontendMessage::Describe { .. } => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Describe, None);
            }
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                // Other clients may share the server statement: forget the client's name only.
                self.statements.remove(&name);
                self.tracker.answer(Expect::Close, close_complete(), None);
            }
            FrontendMessage::Close { .. } => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Close, None);
            }
            FrontendMessage::Execute { .. } => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Execute, None);
            }
            FrontendMessage::Sync => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.forward(Expect::Sync, None);
                if attached.status == TransactionStatus::Idle {
                    self.capture_write_lsn();
                }
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => {
                self.server_out.extend_from_slice(&raw);
                self.tracker.copy_ended();
            }
            // Flush and CopyData expect no reply of their own.
            _ => self.server_out.extend_from_slice(&raw),
        }
    }

    /// Handles every whole (or streamable) message the server has sent.
    async fn on_server_bytes(&mut self) -> Result<(), Failure> {
        let max = self.shared.settings.max_message_size;
        let transaction_pooling = self.shared.settings.pool_mode == PoolMode::Transaction;
        let mut retry_now = false;
        loop {
            let attached = self
                .server
                .as_mut()
                .expect("reading from an attached server");
            let buf = &mut attached.conn.read_buf;
            if let Some((left, to_client)) = &mut attached.streaming {
                let n = (*left).min(buf.len());
                if *to_client {
                    self.client_out.extend_from_slice(&buf[..n]);
                }
                buf.advance(n);
                *left -= n;
                if *left > 0 {
                    break;
                }
                attached.streaming = None;
                continue;
            }
            let header = match frame::check(buf, max) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(_) => return self.server_lost().await,
            };
            if buf.len() < header.frame_len {
                if matches!(header.tag, b'D' | b'd') && header.frame_len > STREAM_ABOVE {
                    self.tracker.drain_answers(&mut self.client_out);
                    attached.streaming = Some((header.frame_len, self.tracker.head_forwards()));
                    continue;
                }
                buf.reserve(header.frame_len - buf.len());
                break;
            }
            let message = &buf[..header.frame_len];
            if let Some(writes) = self.tracker.head_payload().and_then(|u| u.capture) {
                match header.tag {
                    b'D' => {
                        attached.captured =
                            first_column(&message[5..]).and_then(|text| text.parse::<Lsn>().ok());
                    }
                    b'Z' => {
                        let captured = attached.captured.take();
                        if message.get(5) == Some(&b'I')
                            && let Some(lsn) = captured
                        {
                            self.write_lsn = max_lsn(self.write_lsn, Some(lsn));
                            self.shared.router.wrote(lsn);
                            if attached.writes == writes {
                                attached.may_write = false;
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(retry) = &mut self.retry {
                // Replies to the proxy's own messages (re-applied parameters) do not count.
                if self.tracker.head_forwards() || header.tag == b'E' {
                    match header.tag {
                        b'1' | b'2' | b't' | b'T' | b'n' | b'S' | b'N' => {}
                        b'E' if !retry.refused && is_read_only_refusal(message) => {
                            retry.refused = true;
                        }
                        b'Z' if retry.refused => retry_now = true,
                        // A row, a completion, an error of another kind: the client sees it.
                        _ if !retry.refused => self.retry = None,
                        _ => {}
                    }
                }
            }
            match header.tag {
                b'S' => {
                    if let Some((name, value)) = parameter_status(message) {
                        let key = name.to_ascii_lowercase();
                        if self.tracker.head_forwards()
                            && CLIENT_REPORTED.contains(&key.as_str())
                            && self.params.get(&key) != Some(&value)
                        {
                            let mut params = (*self.params).clone();
                            params.insert(key, value.clone());
                            self.params = self.shared.parameter_sets.intern(params);
                        }
                        if let Some(standby) = hot_standby_change(&name, &value) {
                            // The server entered or left hot standby under this connection:
                            // a promotion or a demotion the monitor must look at now.
                            attached.conn.standby = standby;
                            attached.conn.retire = true;
                            self.shared.report_unusable(attached.conn.node);
                        }
                        attached.conn.params.insert(name, value);
                    }
                }
                b'C' if self.tracker.head_forwards() => {
                    let tag = &message[5..message.len().saturating_sub(1)];
                    attached.dirty |= transaction_pooling && tag_changes_session(tag);
                    if tag_clears_prepared(tag) {
                        attached.conn.prepared.clear();
                        attached.conn.unnamed = None;
                    }
                    // Rows written and then rolled back (or rolled back to a savepoint: a
                    // report is then missed, never made wrongly) were not accepted.
                    attached.wrote = tag != b"ROLLBACK"
                        && (attached.wrote
                            || self.shared.first_write_unreported(attached.conn.generation)
                                && tag_writes_rows(tag));
                }
                // An error ends the statement's implicit transaction, or fails the explicit one.
                b'E' => attached.wrote = false,
                b'Z' => {
                    if let Some(&status) = message.get(5) {
                        attached.status = TransactionStatus::from_byte(status)?;
                    }
                    if attached.wrote {
                        match attached.status {
                            TransactionStatus::Idle => {
                                attached.wrote = false;
                                self.shared
                                    .report_write(attached.conn.node, attached.conn.generation);
                            }
                            TransactionStatus::Failed => attached.wrote = false,
                            TransactionStatus::InTransaction => {}
                        }
                    }
                }
                _ => {}
            }
            let goodbye;
            let message = match header.tag {
                // A server that ends the connection (terminated backend, shutdown) says so
                // with FATAL. The client's connection to the proxy survives it, so the client
                // hears it as an ERROR of the same code; in session pooling the session dies
                // with the server and FATAL is the truth.
                b'E' if transaction_pooling && is_fatal(message) => {
                    attached.said_goodbye = true;
                    goodbye = as_error(message);
                    &goodbye[..]
                }
                _ => message,
            };
            let relayed = self
                .tracker
                .on_server_message(message, &mut self.client_out);
            buf.advance(header.frame_len);
            if relayed.is_err() {
                return self.server_lost().await;
            }
            if retry_now {
                return self.retry_on_primary().await;
            }
            for undo in self.tracker.take_undo() {
                if let Some(id) = undo.server {
                    attached.conn.prepared.remove(&id);
                }
                if let Some(name) = undo.client {
                    self.statements.remove(&name);
                }
            }
            if self.client_out.len() > FLUSH_ABOVE {
                self.flush_client()
                    .await
                    .map_err(|_| Failure::ShuttingDown)?;
            }
        }
        if self.shared.settings.read_your_writes == ReadYourWrites::Global {
            // Any session's read after this commit is acknowledged must see it: learn its
            // position before the client hears of the commit.
            self.learn_write_lsn().await;
        }
        self.flush_client()
            .await
            .map_err(|_| Failure::ShuttingDown)?;
        Ok(())
    }

    /// The server connection failed: tell the client what it was waiting for.
    async fn server_lost(&mut self) -> Result<(), Failure> {
        let Some(attached) = &self.server else {
            return Ok(());
        };
        self.shared.report_unusable(attached.pool.node());
        let rerunnable = attached.replica
            && self.pinned.is_none()
            && self
                .retry
                .as_ref()
                .is_some_and(|r| r.complete && !r.refused);
        if rerunnable {
            // A read lost with its replica before any of its answer reached the client: run
            // it again elsewhere, the replica's circuit open.
            self.shared.router.open_circuit(attached.pool.node());
            let attached = self.server.take().expect("checked");
            self.cancel.set_target(None);
            self.server_out.clear();
            for undo in self.tracker.abandon() {
                if let Some(name) = undo.client {
                    self.statements.remove(&name);
                }
            }
            attached.pool.release(attached.conn, false);
            // Boxed: the rerun flushes to its new server, whose loss comes back here.
            return Box::pin(self.rerun(RouteTarget::Auto)).await;
        }
        let node = attached.pool.node_name().to_owned();
        // Requests were unanswered and the transaction had not failed already: one of them may
        // have been a commit (an autocommit statement, COMMIT) that took effect. Nothing
        // commits on a replica.
        let in_flight = (self.tracker.owed_ready() > 0 || self.tracker.in_unfinished_batch())
            && attached.status != TransactionStatus::Failed
            && !attached.replica;
        self.abandon_server(Failure::ServerLost { node, in_flight })
            .await
    }

    /// Closes the attached server connection (the server rolls back whatever was open on it)
    /// and tells the client `failure` for each request still unanswered, or at its next
    /// message when it was idle inside a transaction. In session pooling the client's session
    /// state is gone with the connection: the failure ends the session.
    async fn abandon_server(&mut self, failure: Failure) -> Result<(), Failure> {
        let Some(attached) = self.server.take() else {
            return Ok(());
        };
        self.retry = None;
        self.cancel.set_target(None);
        let owed = self.tracker.owed_ready();
        let unfinished = self.tracker.in_unfinished_batch();
        let in_transaction = attached.status != TransactionStatus::Idle;
        let was_busy = !self.tracker.is_idle();
        let said_goodbye = attached.said_goodbye;
        self.server_out.clear();
        for undo in self.tracker.abandon() {
            if let Some(name) = undo.client {
                self.statements.remove(&name);
            }
        }
        attached.pool.release(attached.conn, false);
        if self.shared.settings.pool_mode == PoolMode::Session || self.pinned.is_some() {
            // The session's state (SET, prepared statements, temporary tables) died with the
            // server: the client cannot go on as if nothing happened. `finish` says so, FATAL.
            return Err(failure);
        }
        for n in 0..owed {
            // The server's own goodbye already answered the first pending request.
            if n > 0 || !said_goodbye {
                backend::encode_error_response(&mut self.client_out, &failure.to_fields());
            }
            backend::encode_ready_for_query(&mut self.client_out, TransactionStatus::Idle);
        }
        if unfinished {
            backend::encode_error_response(&mut self.client_out, &failure.to_fields());
            self.discard_until_sync = true;
        }
        if !was_busy && in_transaction {
            self.lost_transaction = Some(failure);
        }
        self.flush_client()
            .await
            .map_err(|_| Failure::ShuttingDown)?;
        Ok(())
    }

    /// In transaction pooling, gives the server connection back once the transaction is over
    /// and nothing is owed, resetting it first if this client changed session state.
    async fn release_if_done(&mut self) {
        if self.release_due() {
            let attached = self.server.take().expect("checked");
            self.cancel.set_target(None);
            release(&self.shared, attached).await;
        }
    }

    /// Whether [`release_if_done`](Self::release_if_done) gives the server connection back
    /// now: the relay asks before every turn, without building that future for nothing.
    fn release_due(&self) -> bool {
        self.shared.settings.pool_mode == PoolMode::Transaction
            && self.pinned.is_none()
            && self.server_out.is_empty()
            && self.server.as_ref().is_some_and(|a| {
                self.tracker.is_idle()
                    && a.status == TransactionStatus::Idle
                    && a.streaming.is_none()
            })
    }

    /// Makes `attached` the session's server, first re-applying the client's parameters.
    fn attach(&mut self, mut attached: Attached) {
        if let Some(sql) = parameter_sql(&self.params, &attached.conn.overrides) {
            frontend::encode_query(&mut self.server_out, sql.as_bytes());
            self.tracker.swallow(Expect::Query, None);
        }
        attached.conn.overrides = self.params.clone();
        self.cancel.set_target(Some(cancel_target(&attached.conn)));
        self.server = Some(attached);
    }

    async fn flush_server(&mut self) -> Result<(), Failure> {
        let Some(attached) = &mut self.server else {
            return Ok(());
        };
        if self.server_out.is_empty() {
            return Ok(());
        }
        let write = attached.conn.stream.send(&self.server_out).await;
        self.server_out.clear();
        if write.is_err() {
            return self.server_lost().await;
        }
        Ok(())
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if self.client_out.is_empty() || self.retry.is_some() {
            // While a retry is possible the replica's answer is held back (see `Retry`).
            return Ok(());
        }
        let result = self.client.send(&self.client_out).await;
        self.client_out.clear();
        if self.client_out.capacity() > 4 * FLUSH_ABOVE {
            // A big result grew the buffer; do not keep it for an idle client.
            self.client_out = BytesMut::with_capacity(1024);
        }
        result
    }

    /// The session ends: give the server back (or drop it if mid-transaction) and say
    /// goodbye when the proxy is the one ending it.
    async fn finish(&mut self, result: Result<(), Failure>) {
        self.retry = None;
        if let Err(failure) = &result {
            send_error(&mut self.client, &failure.to_fatal_fields()).await;
        }
        if let Some(attached) = self.server.take() {
            self.cancel.set_target(None);
            let idle = self.tracker.is_idle() && attached.status == TransactionStatus::Idle;
            if idle {
                // In session pooling, this is where the session's state is reset.
                let shared = self.shared.clone();
                tokio::spawn(async move { release(&shared, attached).await });
            } else {
                // Mid-transaction: closing the connection makes the server roll it back.
                attached.pool.release(attached.conn, false);
            }
        }
        let _ = self.client.shutdown().await;
    }

    fn detach_after_failure(&mut self) {
        if let Some(attached) = self.server.take() {
            attached.pool.release(attached.conn, false);
        }
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Shutdown,
    /// A view was published; the receiver comes back to be watched again.
    View(watch::Receiver<Arc<ClusterView>>),
}

/// Resolves when a view newer than the last one `views` saw is published, handing `views`
/// back; never, once the control plane is gone.
async fn next_view(
    mut views: watch::Receiver<Arc<ClusterView>>,
) -> watch::Receiver<Arc<ClusterView>> {
    if views.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    views
}

/// Reads from the attached server, or waits forever when there is none.
async fn read_server(server: &mut Option<Attached>) -> std::io::Result<usize> {
    match server {
        Some(attached) => {
            let buf = &mut attached.conn.read_buf;
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            attached.conn.stream.fill(buf).await
        }
        None => std::future::pending().await,
    }
}

/// Gives a connection back to its pool, resetting it first when the session left state on
/// it (always in session pooling).
async fn release(shared: &Shared, mut attached: Attached) {
    if attached.conn.retire || attached.pool.is_stale(&attached.conn) {
        // Closed by the pool anyway (retired, or replaced by a failover or a recycle): no
        // reset to wait for.
        attached.pool.release(attached.conn, false);
        return;
    }
    let must_reset = attached.dirty || shared.settings.pool_mode == PoolMode::Session;
    let mut reusable = true;
    if must_reset && let Some(reset) = &shared.settings.server_reset_query {
        match attached
            .conn
            .run_internal(reset, shared.settings.max_message_size)
            .await
        {
            Ok(tags) => {
                if tags.iter().any(|t| tag_clears_prepared(t.as_bytes())) {
                    attached.conn.prepared.clear();
                    attached.conn.unnamed = None;
                }
                if tags.iter().any(|t| t == "DISCARD ALL" || t == "RESET") {
                    attached.conn.overrides = Arc::default();
                }
            }
            Err(_) => reusable = false,
        }
    }
    attached.pool.release(attached.conn, reusable);
}

fn ensure_prepared(
    conn: &mut ServerConnection,
    tracker: &mut Tracker<Undo>,
    out: &mut BytesMut,
    def: &StatementDef,
) {
    if !conn.prepared.contains(&def.id) {
        frontend::encode_parse(out, &def.server_name, &def.sql, &def.param_types);
        tracker.swallow(
            Expect::Parse,
            Some(Undo {
                server: Some(def.id),
                client: None,
                capture: None,
            }),
        );
        conn.prepared.insert(def.id);
    }
}

/// `SET`/`RESET` statements that make a server connection's overrides equal the client's
/// parameters, or `None` when they already are.
fn parameter_sql(
    client: &Arc<BTreeMap<String, String>>,
    overrides: &Arc<BTreeMap<String, String>>,
) -> Option<String> {
    if Arc::ptr_eq(client, overrides) || client == overrides {
        return None;
    }
    let mut sql = String::new();
    for (name, value) in client.iter() {
        if overrides.get(name) != Some(value) {
            sql.push_str(&format!(
                "SET {} TO {};",
                quote_ident(name),
                quote_literal(value)
            ));
        }
    }
    for name in overrides.keys() {
        if !client.contains_key(name) {
            sql.push_str(&format!("RESET {};", quote_ident(name)));
        }
    }
    (!sql.is_empty()).then_some(sql)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn cancel_target(conn: &ServerConnection) -> CancelTarget {
    CancelTarget {
        addr: conn.addr,
        process_id: conn.cancel_key.0,
        secret_key: conn.cancel_key.1,
    }
}

fn parse_complete() -> Bytes {
    let mut bytes = BytesMut::new();
    backend::encode_parse_complete(&mut bytes);
    bytes.freeze()
}

fn close_complete() -> Bytes {
    let mut bytes = BytesMut::new();
    backend::encode_close_complete(&mut bytes);
    bytes.freeze()
}

/// The classification of a request the proxy cannot look into: treated as a write.
fn opaque(what: &str) -> Statement {
    Statement {
        classification: Classification::new(
            StatementClass::Unknown,
            Reason::UnknownStatement(Name::exact(what.as_bytes())),
        ),
        hint: RouteTarget::Auto,
    }
}

/// The later of two optional positions.
fn max_lsn(a: Option<Lsn>, b: Option<Lsn>) -> Option<Lsn> {
    a.max(b)
}

/// Whether an ErrorResponse frame is a hot standby refusing a write (SQLSTATE 25006).
fn is_read_only_refusal(message: &[u8]) -> bool {
    error_fields(message)
        .is_some_and(|fields| fields.code() == meridian_wire::sqlstate::READ_ONLY_SQL_TRANSACTION)
}

/// Whether an ErrorResponse frame has severity FATAL or PANIC.
fn is_fatal(message: &[u8]) -> bool {
    error_fields(message).is_some_and(|fields| matches!(fields.severity(), "FATAL" | "PANIC"))
}

/// The same ErrorResponse with severity ERROR.
fn as_error(message: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    if let Some(fields) = error_fields(message) {
        let error = meridian_wire::backend::ErrorFields::new(
            meridian_wire::backend::Severity::Error,
            fields.code(),
            fields.message(),
        );
        backend::encode_error_response(&mut out, &error);
    }
    out
}

fn error_fields(message: &[u8]) -> Option<meridian_wire::backend::ErrorFields> {
    let frame = Frame {
        tag: message[0],
        body: Bytes::copy_from_slice(&message[5..]),
    };
    match meridian_wire::backend::BackendMessage::decode(frame) {
        Ok(meridian_wire::backend::BackendMessage::ErrorResponse(fields)) => Some(fields),
        _ => None,
    }
}

/// Name and value of a ParameterStatus frame.
fn parameter_status(message: &[u8]) -> Option<(String, String)> {
    let body = &message[5..];
    let mut parts = body.split(|&b| b == 0);
    let name = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let value = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((name, value))
}

impl Shared {
    /// The pool for a node, user and database, created on first use.
    pub(crate) fn pool_for(
        &self,
        node: meridian_core::topology::NodeId,
        user: &User,
        database: &Arc<str>,
    ) -> Option<Arc<Pool>> {
        let view = self.view.borrow();
        let node_view = view.node(node)?;
        let key = PoolKey {
            node,
            user: user.server_user.clone(),
            database: database.clone(),
        };
        Some(self.pools.get_or_create(key, || {
            Pool::new(
                ServerLogin {
                    node,
                    host: node_view.host.clone(),
                    port: node_view.port,
                    user: user.server_user.clone(),
                    database: database.clone(),
                    password: user.server_password.clone(),
                    tls: self
                        .settings
                        .server_tls
                        .for_region(&node_view.region)
                        .clone(),
                    connect_timeout: self.settings.connect_timeout,
                    max_message_size: self.settings.max_message_size,
                },
                node_view.name.to_string(),
                self.settings.pool.clone(),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sql_sets_what_differs_and_resets_what_is_extra() {
        let client: Arc<BTreeMap<String, String>> = Arc::new(
            [
                ("application_name".to_owned(), "app's".to_owned()),
                ("timezone".to_owned(), "UTC".to_owned()),
            ]
            .into(),
        );
        let mut overrides = Arc::default();
        assert_eq!(
            parameter_sql(&client, &overrides).unwrap(),
            "SET \"application_name\" TO 'app''s';SET \"timezone\" TO 'UTC';"
        );
        overrides = Arc::new((*client).clone());
        assert_eq!(parameter_sql(&client, &overrides), None, "equal contents");
        assert_eq!(parameter_sql(&client, &client.clone()), None, "same map");
        Arc::make_mut(&mut overrides).insert("search_path".into(), "x".into());
        assert_eq!(
            parameter_sql(&client, &overrides).unwrap(),
            "RESET \"search_path\";"
        );
    }

    #[test]
    fn parameter_status_is_read_from_the_frame() {
        let mut bytes = BytesMut::new();
        backend::encode_parameter_status(&mut bytes, "TimeZone", "Europe/Paris");
        assert_eq!(
            parameter_status(&bytes),
            Some(("TimeZone".into(), "Europe/Paris".into()))
        );
    }
}
