//! Where each transaction of a session runs, and what keeps its reads fresh: the request's
//! classification (a whole extended-protocol batch, a deferred `BEGIN`), the checkout from the
//! node the router picks (waiting out a failover for the primary, rerouting a read whose
//! replica fails, confirming a replica has replayed the session's last write), the WAL
//! position learned after each write, and the reruns of a read a replica refused (25006) or
//! lost before any of its answer reached the client.

use super::*;

impl Session {
    /// Whether a simple-protocol `BEGIN` can wait for the transaction's first statement
    /// before it is routed and sent: a plain `BEGIN` (no READ ONLY/READ WRITE, not
    /// SERIALIZABLE, no hint, alone in its query) in transaction pooling. The proxy answers it
    /// and sends it with the first statement, so a `SET TRANSACTION READ ONLY` after it can
    /// still take the transaction to a replica, the transaction holds no server connection
    /// until it runs something, and the server is spared a round trip per transaction.
    pub(super) fn may_defer_begin(&self, classification: &Classification, sql: &[u8]) -> bool {
        let plain_begin = matches!(
            classification.transaction(),
            Some(TransactionControl::Begin { read_only: None, isolation })
                if isolation != Some(IsolationLevel::Serializable)
        );
        plain_begin
            && classification.statements == 1
            && self.shared.settings.pool_mode == PoolMode::Transaction
            && self.target == RouteTarget::Auto
            && commands::leading_hint(sql) == RouteTarget::Auto
    }

    /// What routing needs to know of the request `message` starts: its classification and
    /// hint. An extended-protocol batch is classified whole, up to its Sync, from what the
    /// client already sent (a batch runs as one transaction on one server); a batch whose
    /// Sync has not arrived yet, or a request the proxy cannot look into, counts as a write.
    pub(super) fn statement_of(
        &self,
        message: &FrontendMessage,
        query: Option<Classification>,
    ) -> Statement {
        let classifier = &self.shared.settings.classifier;
        // The first message's statement, and the name it prepares (the batch's later Binds
        // of that name need no lookup).
        let (first, parsed) = match message {
            FrontendMessage::Query { sql } => {
                return Statement {
                    classification: query.unwrap_or_else(|| classifier.classify(sql)),
                    hint: commands::leading_hint(sql),
                };
            }
            FrontendMessage::Parse { sql, name, .. } => {
                (route_of(classifier, sql), Some(&name[..]))
            }
            FrontendMessage::Bind { statement, .. } => match self.client_statement(statement) {
                Some(def) => (def.route, None),
                None => return opaque("Bind"),
            },
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } => match self.client_statement(name) {
                Some(def) => (def.route, None),
                None => return opaque("Describe"),
            },
            FrontendMessage::FunctionCall(_) => return opaque("FunctionCall"),
            _ => return opaque("message"),
        };
        let mut classification = first.classification;
        match self.rest_of_batch(&mut classification, parsed) {
            true => Statement {
                classification,
                hint: first.hint,
            },
            false => opaque("unfinished batch"),
        }
    }

    /// A client's statement by name (the empty name is its unnamed statement).
    pub(super) fn client_statement(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        if name.is_empty() {
            self.statements.unnamed().map(|(def, _)| def)
        } else {
            self.statements.get(name)
        }
    }

    /// Folds the classifications of the batch's messages still in the input buffer into
    /// `classification`, up to its Sync. False when the Sync is not there, or a message the
    /// proxy cannot look into is.
    pub(super) fn rest_of_batch(
        &self,
        classification: &mut Classification,
        first_parse: Option<&[u8]>,
    ) -> bool {
        let classifier = &self.shared.settings.classifier;
        let mut rest = &self.client_in[..];
        // The names Parsed in this batch so far (a batch rarely prepares more than a few).
        let mut parsed: [&[u8]; 8] = [&[]; 8];
        let mut parsed_count = 0;
        if let Some(name) = first_parse {
            parsed[0] = name;
            parsed_count = 1;
        }
        loop {
            let Some(header) = rest.get(..5) else {
                return false;
            };
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let Some(body) = rest.get(5..1 + len.max(4)) else {
                return false;
            };
            match header[0] {
                b'S' => return true,
                b'P' => {
                    let mut parts = body.splitn(3, |&b| b == 0);
                    let (Some(name), Some(sql)) = (parts.next(), parts.next()) else {
                        return false;
                    };
                    if parsed_count == parsed.len() {
                        return false;
                    }
                    parsed[parsed_count] = name;
                    parsed_count += 1;
                    classification.absorb(classifier.classify(sql));
                }
                b'B' => {
                    let mut parts = body.splitn(3, |&b| b == 0);
                    let (Some(_portal), Some(statement)) = (parts.next(), parts.next()) else {
                        return false;
                    };
                    if parsed[..parsed_count].contains(&statement) {
                        // Parsed earlier in this batch: already absorbed.
                    } else {
                        match self.client_statement(statement) {
                            Some(def) => classification.absorb(def.route.classification),
                            None => return false,
                        }
                    }
                }
                // Describe, Execute, Close, Flush.
                b'D' | b'E' | b'C' | b'H' => {}
                _ => return false,
            }
            rest = &rest[1 + len.max(4)..];
        }
    }

    /// The WAL position this session's reads must see, if any.
    pub(super) fn min_lsn(&self) -> Option<Lsn> {
        let own = match self.shared.settings.read_your_writes {
            ReadYourWrites::Off => None,
            ReadYourWrites::Session => self.write_lsn,
            ReadYourWrites::Global => max_lsn(self.write_lsn, self.shared.router.global_lsn()),
        };
        max_lsn(own, self.client_min_lsn)
    }

    /// Notes what a statement about to run does to the session: a pin keeps the server
    /// connection for the rest of the session; a write on the primary means its WAL position
    /// must be learned when the transaction ends.
    pub(super) fn note_statement(&mut self, classification: &Classification) {
        let Some(attached) = &mut self.server else {
            return;
        };
        if attached.track_writes && classification.is_write() {
            attached.may_write = true;
            attached.writes += 1;
        }
        if self.pinned.is_none()
            && self.shared.settings.pool_mode == PoolMode::Transaction
            && let Some(reason) = self.shared.router.policy().pin(classification)
        {
            self.pinned = Some(reason);
            self.shared.router.pinned(reason);
        }
    }

    /// Waits for the replies to the proxy's silent queries (the client's requests are all
    /// answered).
    /// A server that does not answer within `connect_timeout` is given up, as lost.
    pub(super) async fn finish_silent(&mut self) -> Result<(), Failure> {
        self.flush_server().await?;
        let deadline = Instant::now() + self.shared.settings.connect_timeout;
        while self.server.is_some() && self.tracker.only_silent() {
            match tokio::time::timeout_at(deadline, read_server(&mut self.server)).await {
                Ok(Ok(n)) if n > 0 => self.on_server_bytes().await?,
                _ => self.server_lost().await?,
            }
        }
        Ok(())
    }

    /// The replica refused the read as a write (25006) before any row reached the client:
    /// drop what it answered and run the request again on the primary.
    pub(super) async fn retry_on_primary(&mut self) -> Result<(), Failure> {
        self.shared.router.read_only_retry();
        if let Some(attached) = self.server.take() {
            // Idle again after its ReadyForQuery.
            self.cancel.set_target(None);
            release(&self.shared, attached).await;
        }
        self.rerun(RouteTarget::Primary).await
    }

    /// Runs the request kept for a retry again, routed anew with `hint`, after dropping
    /// whatever its first server answered.
    pub(super) async fn rerun(&mut self, hint: RouteTarget) -> Result<(), Failure> {
        let Some(retry) = self.retry.take() else {
            return Ok(());
        };
        self.client_out.truncate(retry.mark);
        let statement = Statement {
            classification: retry.classification,
            hint,
        };
        match self.checkout(&statement).await {
            Ok(attached) => {
                let reason = match hint {
                    // Refused by a replica: it writes.
                    RouteTarget::Primary => RouteReason::MayWrite,
                    _ => attached.reason,
                };
                self.shared.router.count(attached.conn.node, reason);
                if attached.replica {
                    self.retry = Some(Retry {
                        request: Vec::with_capacity(retry.request.len()),
                        classification: retry.classification,
                        mark: self.client_out.len(),
                        complete: false,
                        refused: false,
                    });
                }
                self.attach(attached);
            }
            Err(failure) if failure.is_fatal() => return Err(failure),
            Err(failure) => {
                // The whole request, up to its Sync or Query, was consumed: one error and
                // one ReadyForQuery answer it.
                backend::encode_error_response(&mut self.client_out, &failure.to_fields());
                backend::encode_ready_for_query(&mut self.client_out, TransactionStatus::Idle);
                return self.flush_client().await.map_err(|_| Failure::ShuttingDown);
            }
        }
        self.replaying = true;
        for raw in retry.request {
            let message = FrontendMessage::decode(Frame {
                tag: raw[0],
                body: raw.slice(5..),
            })?;
            self.forward(message, raw, None);
        }
        self.replaying = false;
        self.flush_server().await?;
        self.tracker.drain_answers(&mut self.client_out);
        self.flush_client().await.map_err(|_| Failure::ShuttingDown)
    }

    /// Right behind a request that may commit a write on the primary, queues the proxy's own
    /// query for the primary's WAL position (read-your-writes without a round trip of its
    /// own). Its answer counts only if its ReadyForQuery shows it ran outside a transaction,
    /// that is, after the commit; otherwise the position is learned when the transaction
    /// ends (`learn_write_lsn`). Not in `global` mode, which learns the position before the
    /// client hears of the commit.
    pub(super) fn capture_write_lsn(&mut self) {
        let Some(attached) = &mut self.server else {
            return;
        };
        if !attached.may_write || self.shared.settings.read_your_writes != ReadYourWrites::Session {
            return;
        }
        frontend::encode_query(&mut self.server_out, WRITE_POSITION.as_bytes());
        self.tracker.silent(
            Expect::Query,
            Some(Undo {
                server: None,
                client: None,
                capture: Some(attached.writes),
            }),
        );
    }

    /// Whether [`learn_write_lsn`](Self::learn_write_lsn) has a position to learn now: the
    /// relay asks before every turn, without building that future for nothing.
    pub(super) fn write_lsn_due(&self) -> bool {
        self.server.as_ref().is_some_and(|attached| {
            attached.may_write
                && attached.status == TransactionStatus::Idle
                && self.tracker.is_idle()
                && attached.streaming.is_none()
                && self.server_out.is_empty()
        })
    }

    /// At the end of a transaction that may have written on the primary, learns the
    /// primary's WAL position (read-your-writes): one query on the same server connection,
    /// after the client already has its answer (before, in `global` mode).
    pub(super) async fn learn_write_lsn(&mut self) {
        if !self.write_lsn_due() {
            return;
        }
        let Some(attached) = &mut self.server else {
            return;
        };
        attached.may_write = false;
        let max = self.shared.settings.max_message_size;
        let timeout = self.shared.settings.connect_timeout;
        let position = tokio::time::timeout(timeout, attached.conn.query_one(WRITE_POSITION, max))
            .await
            .ok()
            .and_then(Result::ok);
        match position.flatten().and_then(|text| text.parse::<Lsn>().ok()) {
            Some(lsn) => {
                self.write_lsn = max_lsn(self.write_lsn, Some(lsn));
                self.shared.router.wrote(lsn);
            }
            None => {
                // The connection failed or the server would not say: send the next read to
                // the primary rather than risk a stale one.
                attached.conn.retire = true;
                self.read_primary_next = true;
            }
        }
    }

    /// Borrows a connection from the pool of the node the router picks for `statement`.
    /// What needs the primary waits for the next view while a failover is under way or the
    /// named primary seems down (see the module notes); a read whose replica cannot be
    /// reached routes again at once, that replica's circuit open; a read that must see the
    /// session's last write waits for its replica to replay it (see [`Self::confirm_replayed`]).
    pub(super) async fn checkout(&mut self, statement: &Statement) -> Result<Attached, Failure> {
        let mut waiting = None;
        let mut caught_up_timed_out = std::mem::take(&mut self.read_primary_next);
        let mut replica_attempts = 0;
        loop {
            let session = SessionRoute {
                target: self.target,
                min_lsn: self.min_lsn(),
                caught_up_timed_out,
            };
            let (decision, generation, nodes, track_writes) = {
                let view = self.view.borrow_and_update();
                let track_writes = self.shared.settings.read_your_writes != ReadYourWrites::Off
                    && view.nodes.iter().any(|n| n.role == Role::Replica);
                let decision = self.shared.router.route(statement, &session, &view);
                (decision, view.generation, view.nodes.len(), track_writes)
            };
            let last_error = match decision {
                RouteDecision::Primary { node, reason } => {
                    match self.checkout_from(node, generation, reason, false).await {
                        Ok(mut attached) => {
                            attached.track_writes = track_writes;
                            return Ok(attached);
                        }
                        Err(failure) if failure.is_node_unavailable() => Some(failure.to_string()),
                        Err(failure) => return Err(failure),
                    }
                }
                RouteDecision::Replica {
                    node,
                    reason,
                    confirm,
                } => {
                    replica_attempts += 1;
                    match self.checkout_from(node, generation, reason, true).await {
                        Ok(mut attached) => {
                            let Some(lsn) = confirm else {
                                return Ok(attached);
                            };
                            match self.confirm_replayed(&mut attached, lsn).await {
                                Ok(true) => return Ok(attached),
                                Ok(false) => {
                                    attached.pool.release(attached.conn, true);
                                    caught_up_timed_out = true;
                                }
                                Err(_) => {
                                    self.shared.router.open_circuit(node);
                                    self.shared.report_unusable(node);
                                    attached.pool.release(attached.conn, false);
                                }
                            }
                        }
                        // Each failure opens that node's circuit: the next route avoids it.
                        Err(failure)
                            if failure.is_node_unavailable() && replica_attempts <= nodes =>
                        {
                            self.shared.router.open_circuit(node);
                        }
                        Err(failure) => return Err(failure),
                    }
                    continue;
                }
                RouteDecision::Unavailable(NoRoute::Paused) => None,
                RouteDecision::Unavailable(NoRoute::NoReplica(why)) => {
                    self.shared.router.no_replica();
                    return Err(Failure::NoReplica { why });
                }
                RouteDecision::Unavailable(NoRoute::NoPrimary) => return Err(Failure::NoPrimary),
            };
            let deadline = match &waiting {
                Some((deadline, _slot)) => *deadline,
                None => {
                    let slot =
                        self.shared
                            .enter_failover_buffer()
                            .ok_or(Failure::FailoverBufferFull {
                                size: self.shared.settings.failover_buffer_size,
                            })?;
                    let deadline = Instant::now() + self.shared.settings.failover_buffer_timeout;
                    waiting = Some((deadline, slot));
                    deadline
                }
            };
            if !self.next_view_before(deadline).await? {
                return Err(Failure::FailoverTimeout {
                    timeout: self.shared.settings.failover_buffer_timeout,
                    last_error,
                });
            }
        }
    }

    /// Read-your-writes on a replica not known to have replayed `lsn`: asks it, at once again
    /// a few times (replay on a nearby replica takes a fraction of a millisecond, less than a
    /// timer tick), then every millisecond, for up to `causal_read_timeout`. True once it has
    /// (and the router learns so for every session); false when the time ran out.
    pub(super) async fn confirm_replayed(
        &self,
        attached: &mut Attached,
        lsn: Lsn,
    ) -> Result<bool, ServerError> {
        let deadline = Instant::now() + self.shared.settings.causal_read_timeout;
        let max = self.shared.settings.max_message_size;
        let mut checks = 0;
        loop {
            checks += 1;
            let replayed = attached
                .conn
                .query_one("SELECT pg_last_wal_replay_lsn()", max)
                .await?
                .and_then(|text| text.parse::<Lsn>().ok());
            if let Some(replayed) = replayed {
                self.shared.router.replayed(attached.conn.node, replayed);
                if replayed >= lsn {
                    self.shared.router.causal_wait(false);
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                self.shared.router.causal_wait(true);
                return Ok(false);
            }
            if checks < CAUSAL_QUICK_CHECKS {
                continue;
            }
            tokio::time::sleep(CAUSAL_POLL.min(deadline - Instant::now())).await;
        }
    }

    /// Waits for a view newer than the last one routed on. False when `deadline` comes
    /// first, or when no view will ever come (the control plane is gone).
    pub(super) async fn next_view_before(&mut self, deadline: Instant) -> Result<bool, Failure> {
        tokio::select! {
            changed = self.view.changed() => Ok(changed.is_ok()),
            // A dropped sender means the proxy itself is gone: stop too.
            _ = self.stopping.wait_for(|stopping| *stopping) => Err(Failure::ShuttingDown),
            () = tokio::time::sleep_until(deadline) => Ok(false),
        }
    }

    /// Borrows a connection opened under `generation` (or later) from `node`'s pool, for a
    /// transaction routed there for `reason`, as a replica or as the primary.
    pub(super) async fn checkout_from(
        &mut self,
        node: NodeId,
        generation: u64,
        reason: RouteReason,
        replica: bool,
    ) -> Result<Attached, Failure> {
        let index = usize::from(node.0);
        let pool = match self.pools.get(index) {
            Some(Some(pool)) => pool.clone(),
            _ => {
                let pool = self
                    .shared
                    .pool_for(node, &self.user, &self.database)
                    .ok_or(Failure::NoPrimary)?;
                if self.pools.len() <= index {
                    self.pools.resize(index + 1, None);
                }
                self.pools[index] = Some(pool.clone());
                pool
            }
        };
        let mut conn = match pool.checkout(generation).await {
            Ok(conn) => conn,
            Err(error) => {
                if matches!(error, PoolError::Connect(_)) {
                    self.shared.report_unusable(node);
                }
                return Err(error.into());
            }
        };
        if conn.standby && !replica {
            // The view calls a hot standby the primary: it is behind. What the transaction
            // reads is still true there (a write fails with 25006, from the server itself);
            // the monitor hears of it now and the connection is not reused.
            self.shared.report_unusable(node);
            conn.retire = true;
        }
        Ok(Attached {
            conn,
            pool,
            dirty: false,
            status: TransactionStatus::Idle,
            streaming: None,
            said_goodbye: false,
            wrote: false,
            replica,
            reason,
            may_write: false,
            track_writes: false,
            writes: 0,
            captured: None,
            _in_flight: self.shared.router.start(node),
        })
    }
}
