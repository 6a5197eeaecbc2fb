//! Which replies a server still owes, and what to do with each: the protocol-state tracker.
//!
//! The proxy rewrites the client's stream on its way to a server: it injects a Parse the
//! client never sent (its statement lives on another server connection), answers some
//! messages itself (a Close of a statement shared by other clients), and adds queries of its
//! own (`SET` of the client's parameters). The client must still see exactly the replies
//! PostgreSQL would have sent it, in order. This module keeps one entry per message that
//! expects a terminal reply (PostgreSQL docs, 55.2.3 "Extended Query"):
//!
//! | message  | terminal reply |
//! |----------|----------------|
//! | Parse    | ParseComplete `1` |
//! | Bind     | BindComplete `2` |
//! | Describe | RowDescription `T` or NoData `n` (after ParameterDescription `t` for a statement) |
//! | Execute  | CommandComplete `C`, EmptyQueryResponse `I` or PortalSuspended `s` |
//! | Close    | CloseComplete `3` |
//! | Sync, Query, FunctionCall | ReadyForQuery `Z` |
//!
//! During COPY FROM STDIN the server ignores Sync (55.2.6: libpq sends one right after the
//! Execute, before it knows the statement is a COPY), so the Syncs a client sends between the
//! start of a copy-in and its CopyDone or CopyFail are owed nothing.
//!
//! An ErrorResponse ends the extended-protocol message it answers, and the server then skips
//! every message until the next Sync: the tracker drops those entries too (a statement the
//! server never prepared must be forgotten: each entry may carry an *undo* payload handed
//! back when the entry fails or is skipped). Inside a simple Query an error does not end the
//! entry; the ReadyForQuery does. NoticeResponse, ParameterStatus and NotificationResponse can
//! arrive at any time and are always forwarded.
//!
//! Pure: bytes in, bytes out, no I/O. The session feeds it each server frame and the client
//! output buffer.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use meridian_wire::backend::TransactionStatus;

/// A message that expects a terminal reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parse.
    Parse,
    /// Bind.
    Bind,
    /// Describe of a statement or a portal.
    Describe,
    /// Execute.
    Execute,
    /// Close.
    Close,
    /// Sync.
    Sync,
    /// A simple Query (or a FunctionCall): replies end with ReadyForQuery.
    Query,
    /// Not a reply: the client ended a COPY FROM STDIN (CopyDone or CopyFail) before the
    /// server said the copy started. Marks where the Syncs the server ignores end.
    CopyEnd,
}

impl Expect {
    fn is_terminal(self, tag: u8) -> bool {
        match self {
            Expect::Parse => tag == b'1',
            Expect::Bind => tag == b'2',
            Expect::Describe => tag == b'T' || tag == b'n',
            Expect::Execute => matches!(tag, b'C' | b'I' | b's'),
            Expect::Close => tag == b'3',
            Expect::Sync | Expect::Query => tag == b'Z',
            Expect::CopyEnd => false,
        }
    }
}

/// What happens to the replies of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// The client sent this message: relay the replies.
    Forward,
    /// The proxy added this message: drop its replies, except errors (the client must learn
    /// why its own next message fails).
    Swallow,
    /// The proxy added this message for itself: drop every reply, errors too (nothing the
    /// client sent depends on it).
    Silent,
    /// The proxy answers for the server: write these bytes when the entry comes up.
    Answer(Bytes),
    /// The proxy fails the client's message itself: write this ErrorResponse when the entry
    /// comes up, then skip to the next Sync as the server would. (The session does not send
    /// the server anything after such a message until the Sync.)
    AnswerError(Bytes),
}

#[derive(Debug)]
struct Entry<U> {
    expect: Expect,
    action: Action,
    undo: Option<U>,
}

/// What one server message did.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// ReadyForQuery that ended a client's Sync or Query, with its transaction status.
    pub ready: Option<TransactionStatus>,
}

/// The server sent something the tracker did not expect: the stream is out of step and the
/// server connection cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server sent {:?} when {expected:?} was pending", char::from(*tag))]
pub struct Desync {
    /// The message type received.
    pub tag: u8,
    /// What the head entry was, if any.
    pub expected: Option<Expect>,
}

/// The replies one server connection owes its client, in order.
#[derive(Debug)]
pub struct Tracker<U> {
    queue: VecDeque<Entry<U>>,
    /// Undo payloads of entries that failed or were skipped, until taken.
    undo: Vec<U>,
    /// The server is in copy-in mode: Syncs from the client are ignored by it.
    copy_in: bool,
}

impl<U> Default for Tracker<U> {
    fn default() -> Self {
        Tracker {
            queue: VecDeque::new(),
            undo: Vec::new(),
            copy_in: false,
        }
    }
}

impl<U> Tracker<U> {
    /// The client sent `expect`; its replies are relayed.
    pub fn forward(&mut self, expect: Expect, undo: Option<U>) {
        if self.copy_in && expect == Expect::Sync {
            // Ignored by a server in copy-in mode: nothing will answer it.
            return;
        }
        self.queue.push_back(Entry {
            expect,
            action: Action::Forward,
            undo,
        });
    }

    /// The proxy sent `expect` on its own; its replies are dropped (errors are relayed).
    pub fn swallow(&mut self, expect: Expect, undo: Option<U>) {
        self.queue.push_back(Entry {
            expect,
            action: Action::Swallow,
            undo,
        });
    }

    /// The proxy sent `expect` for its own purposes; every reply is dropped, errors too.
    pub fn silent(&mut self, expect: Expect, undo: Option<U>) {
        self.queue.push_back(Entry {
            expect,
            action: Action::Silent,
            undo,
        });
    }

    /// The proxy answers the client's `expect` itself with `reply`, in order.
    pub fn answer(&mut self, expect: Expect, reply: Bytes, undo: Option<U>) {
        self.queue.push_back(Entry {
            expect,
            action: Action::Answer(reply),
            undo,
        });
    }

    /// The client sent CopyDone or CopyFail.
    pub fn copy_ended(&mut self) {
        if self.copy_in {
            self.copy_in = false;
        } else {
            // The server has not said the copy started yet: mark where it will end.
            self.queue.push_back(Entry {
                expect: Expect::CopyEnd,
                action: Action::Forward,
                undo: None,
            });
        }
    }

    /// The server started a copy-in (CopyInResponse): the Syncs queued since, up to the
    /// client's CopyDone or CopyFail if it came already, will not be answered.
    fn copy_in_started(&mut self) {
        let mut index = 1;
        while index < self.queue.len() {
            match self.queue[index].expect {
                Expect::Sync => {
                    self.queue.remove(index);
                }
                Expect::CopyEnd => {
                    self.queue.remove(index);
                    return;
                }
                _ => index += 1,
            }
        }
        self.copy_in = true;
    }

    /// The proxy fails the client's `expect` itself with this ErrorResponse, in order.
    pub fn answer_error(&mut self, expect: Expect, error: Bytes, undo: Option<U>) {
        self.queue.push_back(Entry {
            expect,
            action: Action::AnswerError(error),
            undo,
        });
    }

    /// Writes the answers that have come up (everything before them is done), so a client
    /// waiting on a Flush is not left hanging.
    pub fn drain_answers(&mut self, client: &mut BytesMut) {
        loop {
            match self.queue.front().map(|e| &e.action) {
                Some(Action::Answer(_)) => {
                    if let Some(Entry {
                        action: Action::Answer(reply),
                        ..
                    }) = self.queue.pop_front()
                    {
                        client.extend_from_slice(&reply);
                    }
                }
                Some(Action::AnswerError(_)) => {
                    if let Some(Entry {
                        action: Action::AnswerError(error),
                        undo,
                        ..
                    }) = self.queue.pop_front()
                    {
                        client.extend_from_slice(&error);
                        self.undo.extend(undo);
                        self.skip_to_sync();
                    }
                }
                // A copy-end marker owes nothing once it comes up.
                Some(Action::Forward)
                    if self.queue.front().map(|e| e.expect) == Some(Expect::CopyEnd) =>
                {
                    self.queue.pop_front();
                }
                _ => return,
            }
        }
    }

    /// Drops the entries the server skips after an error: everything before the next Sync.
    fn skip_to_sync(&mut self) {
        while let Some(next) = self.queue.front() {
            if next.expect == Expect::Sync {
                break;
            }
            let skipped = self.queue.pop_front().expect("front exists");
            self.undo.extend(skipped.undo);
        }
    }

    /// Undo payloads of entries that failed or were skipped since the last call.
    pub fn take_undo(&mut self) -> Vec<U> {
        std::mem::take(&mut self.undo)
    }

    /// Whether the only replies still owed are to the proxy's silent queries: the client's
    /// requests are all answered.
    pub fn only_silent(&self) -> bool {
        !self.queue.is_empty() && self.queue.iter().all(|e| e.action == Action::Silent)
    }

    /// The payload of the entry whose replies are arriving now, if it has one.
    pub fn head_payload(&self) -> Option<&U> {
        self.queue.front().and_then(|e| e.undo.as_ref())
    }

    /// Whether the replies now arriving belong to a message the client sent (and are relayed).
    pub fn head_forwards(&self) -> bool {
        self.queue
            .front()
            .is_some_and(|e| e.action == Action::Forward)
    }

    /// Handles one whole server message `frame` (tag, length and body): relays it to
    /// `client` or not, and retires entries.
    pub fn on_server_message(
        &mut self,
        frame: &[u8],
        client: &mut BytesMut,
    ) -> Result<Outcome, Desync> {
        let tag = frame[0];
        let mut outcome = Outcome { ready: None };
        self.drain_answers(client);
        // Asynchronous messages (55.2.7): relayed whatever is pending.
        if matches!(tag, b'N' | b'S' | b'A') {
            client.extend_from_slice(frame);
            return Ok(outcome);
        }
        let Some(head) = self.queue.front() else {
            return Err(Desync {
                tag,
                expected: None,
            });
        };
        let expect = head.expect;
        let forward = head.action == Action::Forward;
        let silent = head.action == Action::Silent;
        if tag == b'G' {
            self.copy_in_started();
        }
        if tag == b'E' {
            if !silent {
                client.extend_from_slice(frame);
            }
            // An error ends copy-in mode; the server then discards input up to a Sync.
            self.copy_in = false;
            if expect != Expect::Query && expect != Expect::Sync {
                // The message failed, and the server skips everything up to the next Sync.
                let failed = self.queue.pop_front().expect("head exists");
                self.undo.extend(failed.undo);
                self.skip_to_sync();
            }
            return Ok(outcome);
        }
        if forward {
            client.extend_from_slice(frame);
        }
        if expect.is_terminal(tag) {
            self.queue.pop_front();
            if tag == b'Z' && forward {
                let status = frame.get(5).copied().unwrap_or(b'I');
                outcome.ready = TransactionStatus::from_byte(status).ok();
            }
            self.drain_answers(client);
        } else if is_terminal_of_any(tag) && !matches!(expect, Expect::Query | Expect::Execute) {
            // A terminal reply for some other message: the streams no longer line up.
            // (Inside a Query or an Execute, CommandComplete and friends are ordinary.)
            return Err(Desync {
                tag,
                expected: Some(expect),
            });
        }
        Ok(outcome)
    }

    /// No reply is owed: the server connection may be given back.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many ReadyForQuery the client is still owed (its pending Sync and Query messages).
    pub fn owed_ready(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| {
                matches!(e.expect, Expect::Sync | Expect::Query)
                    && !matches!(e.action, Action::Swallow | Action::Silent)
            })
            .count()
    }

    /// Whether entries follow the last pending Sync or Query: the client is in the middle of
    /// an extended-protocol batch whose Sync has not arrived.
    pub fn in_unfinished_batch(&self) -> bool {
        self.queue
            .iter()
            .rev()
            .find(|e| e.expect != Expect::CopyEnd)
            .is_some_and(|e| !matches!(e.expect, Expect::Sync | Expect::Query))
    }

    /// Empties the tracker (the server connection is gone), returning every undo payload.
    pub fn abandon(&mut self) -> Vec<U> {
        self.copy_in = false;
        let mut undo = std::mem::take(&mut self.undo);
        undo.extend(self.queue.drain(..).filter_map(|e| e.undo));
        undo
    }
}

fn is_terminal_of_any(tag: u8) -> bool {
    matches!(
        tag,
        b'1' | b'2' | b'3' | b'Z' | b'T' | b'n' | b'C' | b'I' | b's'
    )
}

#[cfg(test)]
mod tests {
    //! Traces: what the client sent (as tracker calls), what the server answered, what the
    //! client received.
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Feeds server messages; returns the tags the client received and the outcomes.
    fn feed(t: &mut Tracker<&'static str>, server: &[Vec<u8>]) -> (String, Vec<Outcome>) {
        let mut client = BytesMut::new();
        let mut outcomes = Vec::new();
        for m in server {
            outcomes.push(t.on_server_message(m, &mut client).unwrap());
        }
        (tags(&client), outcomes)
    }

    fn tags(mut bytes: &[u8]) -> String {
        let mut out = String::new();
        while bytes.len() >= 5 {
            let len = i32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            out.push(bytes[0] as char);
            bytes = &bytes[1 + len..];
        }
        out
    }

    fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }

    #[test]
    fn simple_query_relays_everything_up_to_ready() {
        let mut t = Tracker::default();
        t.forward(Expect::Query, None);
        let (client, outcomes) = feed(
            &mut t,
            &[
                msg(b'T', b"x"),
                msg(b'D', b"y"),
                msg(b'C', b"SELECT 1\0"),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "TDCZ");
        assert_eq!(outcomes[3].ready, Some(TransactionStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn a_silent_query_after_the_clients_relays_nothing_not_even_its_error() {
        let mut t = Tracker::default();
        t.forward(Expect::Query, None);
        t.silent(Expect::Query, Some("position"));
        assert_eq!(t.owed_ready(), 1, "the client is owed one ReadyForQuery");
        let (client, _) = feed(&mut t, &[msg(b'C', b"INSERT 0 1\0"), ready(b'I')]);
        assert_eq!(client, "CZ");
        assert_eq!(t.head_payload(), Some(&"position"));
        assert!(t.only_silent());
        let (client, outcomes) = feed(&mut t, &[msg(b'E', b"x"), ready(b'I')]);
        assert_eq!(client, "", "the proxy's own query is invisible");
        assert_eq!(outcomes[1].ready, None);
        assert!(t.is_idle());
    }

    #[test]
    fn an_error_inside_a_simple_query_does_not_end_it() {
        let mut t = Tracker::default();
        t.forward(Expect::Query, None);
        let (client, outcomes) = feed(
            &mut t,
            &[msg(b'C', b"BEGIN\0"), msg(b'E', b"x"), ready(b'E')],
        );
        assert_eq!(client, "CEZ");
        assert_eq!(outcomes[2].ready, Some(TransactionStatus::Failed));
    }

    #[test]
    fn injected_parse_is_swallowed_and_the_client_sees_its_own_replies() {
        // Client: Bind s1 / Execute / Sync, but s1 lives elsewhere: the proxy injects Parse.
        let mut t = Tracker::default();
        t.swallow(Expect::Parse, Some("server lacks s1"));
        t.forward(Expect::Bind, None);
        t.forward(Expect::Execute, None);
        t.forward(Expect::Sync, None);
        let (client, outcomes) = feed(
            &mut t,
            &[
                msg(b'1', b""),
                msg(b'2', b""),
                msg(b'D', b""),
                msg(b'C', b"SELECT 1\0"),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "2DCZ");
        assert_eq!(outcomes[4].ready, Some(TransactionStatus::Idle));
        assert!(t.take_undo().is_empty());
        assert!(t.is_idle());
    }

    #[test]
    fn answers_come_out_in_order_and_at_once_when_nothing_is_before_them() {
        let mut t = Tracker::default();
        let close_complete = Bytes::from(msg(b'3', b""));
        t.answer(Expect::Close, close_complete.clone(), None);
        let mut client = BytesMut::new();
        t.drain_answers(&mut client);
        assert_eq!(tags(&client), "3");

        // Behind a pending Parse, the answer waits for the ParseComplete.
        t.forward(Expect::Parse, None);
        t.answer(Expect::Close, close_complete, None);
        t.forward(Expect::Sync, None);
        let mut client = BytesMut::new();
        t.drain_answers(&mut client);
        assert_eq!(tags(&client), "");
        let (client, _) = feed(&mut t, &[msg(b'1', b""), ready(b'I')]);
        assert_eq!(client, "13Z");
    }

    #[test]
    fn an_error_skips_to_sync_and_hands_back_undo_payloads() {
        // Parse a (fails), Bind, answered ParseComplete for b, Execute, Sync; then Parse c, Sync.
        let mut t = Tracker::default();
        t.forward(Expect::Parse, Some("a"));
        t.forward(Expect::Bind, None);
        t.answer(Expect::Parse, Bytes::from(msg(b'1', b"")), Some("b"));
        t.forward(Expect::Execute, None);
        t.forward(Expect::Sync, None);
        t.forward(Expect::Parse, Some("c"));
        t.forward(Expect::Sync, None);
        assert_eq!(t.owed_ready(), 2);
        let mut client = BytesMut::new();
        t.on_server_message(&msg(b'E', b"x"), &mut client).unwrap();
        // The answered ParseComplete is skipped like the server skips messages after an error.
        assert_eq!(t.take_undo(), vec!["a", "b"]);
        let (rest, _) = feed(&mut t, &[ready(b'I'), msg(b'1', b""), ready(b'I')]);
        assert_eq!(tags(&client) + &rest, "EZ1Z");
        assert!(t.take_undo().is_empty(), "c succeeded");
        assert!(t.is_idle());
    }

    #[test]
    fn an_error_for_an_injected_message_still_reaches_the_client() {
        let mut t = Tracker::default();
        t.swallow(Expect::Parse, Some("injected"));
        t.forward(Expect::Bind, None);
        t.forward(Expect::Sync, None);
        let (client, _) = feed(
            &mut t,
            &[msg(b'E', b"relation does not exist"), ready(b'I')],
        );
        assert_eq!(client, "EZ");
        assert_eq!(t.take_undo(), vec!["injected"]);
    }

    #[test]
    fn a_swallowed_query_is_invisible_but_its_ready_is_not_the_clients() {
        let mut t = Tracker::<&str>::default();
        t.swallow(Expect::Query, None);
        t.forward(Expect::Query, None);
        assert_eq!(t.owed_ready(), 1);
        let (client, outcomes) = feed(
            &mut t,
            &[
                msg(b'C', b"SET\0"),
                ready(b'I'),
                msg(b'C', b"SELECT 0\0"),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "CZ");
        assert_eq!(
            outcomes[1].ready, None,
            "the injected query's ReadyForQuery is not the client's"
        );
        assert_eq!(outcomes[3].ready, Some(TransactionStatus::Idle));
    }

    #[test]
    fn describe_statement_ends_at_row_description_or_no_data() {
        let mut t = Tracker::<&str>::default();
        t.forward(Expect::Describe, None);
        t.forward(Expect::Describe, None);
        t.forward(Expect::Sync, None);
        let (client, _) = feed(
            &mut t,
            &[
                msg(b't', b""),
                msg(b'T', b""),
                msg(b't', b""),
                msg(b'n', b""),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "tTtnZ");
        assert!(t.is_idle());
    }

    #[test]
    fn asynchronous_messages_pass_through_at_any_time() {
        let mut t = Tracker::<&str>::default();
        t.swallow(Expect::Query, None);
        let (client, _) = feed(
            &mut t,
            &[
                msg(b'S', b"TimeZone\0UTC\0"),
                msg(b'N', b""),
                msg(b'A', b""),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "SNA");
    }

    #[test]
    fn a_reply_nobody_asked_for_is_a_desync() {
        let mut t = Tracker::<&str>::default();
        let mut client = BytesMut::new();
        assert_eq!(
            t.on_server_message(&ready(b'I'), &mut client),
            Err(Desync {
                tag: b'Z',
                expected: None
            })
        );
        t.forward(Expect::Bind, None);
        assert_eq!(
            t.on_server_message(&msg(b'1', b""), &mut client),
            Err(Desync {
                tag: b'1',
                expected: Some(Expect::Bind)
            })
        );
    }

    #[test]
    fn copy_inside_a_query_flows_until_ready() {
        let mut t = Tracker::<&str>::default();
        t.forward(Expect::Query, None);
        let (client, _) = feed(
            &mut t,
            &[
                msg(b'H', b""),
                msg(b'd', b"row"),
                msg(b'c', b""),
                msg(b'C', b"COPY 1\0"),
                ready(b'I'),
            ],
        );
        assert_eq!(client, "HdcCZ");
    }

    #[test]
    fn an_answered_error_skips_like_a_server_error() {
        // Parse s1 (fine), Parse s1 again (the proxy fails it: duplicate), Bind (never sent),
        // Sync.
        let mut t = Tracker::default();
        t.forward(Expect::Parse, Some("first"));
        t.answer_error(Expect::Parse, Bytes::from(msg(b'E', b"42P05")), Some("dup"));
        t.answer(Expect::Bind, Bytes::from(msg(b'2', b"")), Some("bind"));
        t.forward(Expect::Sync, None);
        assert!(!t.in_unfinished_batch());
        let (client, _) = feed(&mut t, &[msg(b'1', b""), ready(b'I')]);
        assert_eq!(client, "1EZ");
        assert_eq!(t.take_undo(), vec!["dup", "bind"]);
    }

    #[test]
    fn an_earlier_server_error_swallows_a_later_answered_error() {
        let mut t = Tracker::default();
        t.forward(Expect::Parse, Some("first"));
        t.answer_error(Expect::Parse, Bytes::from(msg(b'E', b"42P05")), Some("dup"));
        t.forward(Expect::Sync, None);
        let (client, _) = feed(&mut t, &[msg(b'E', b"syntax"), ready(b'I')]);
        assert_eq!(client, "EZ", "only the first error of a batch is reported");
        assert_eq!(t.take_undo(), vec!["first", "dup"]);
    }

    #[test]
    fn head_forwards_and_unfinished_batches() {
        let mut t = Tracker::<&str>::default();
        assert!(!t.head_forwards());
        t.swallow(Expect::Parse, None);
        assert!(!t.head_forwards());
        t.forward(Expect::Bind, None);
        assert!(t.in_unfinished_batch());
        t.forward(Expect::Sync, None);
        assert!(!t.in_unfinished_batch());
        let (_, _) = feed(&mut t, &[msg(b'1', b"")]);
        assert!(t.head_forwards());
    }

    #[test]
    fn syncs_sent_during_copy_in_are_owed_nothing() {
        // libpq: Parse/Bind/Execute/Sync, then (after CopyInResponse) data, CopyDone, Sync.
        let mut t = Tracker::<&str>::default();
        t.forward(Expect::Parse, None);
        t.forward(Expect::Bind, None);
        t.forward(Expect::Execute, None);
        t.forward(Expect::Sync, None);
        let (client, _) = feed(
            &mut t,
            &[msg(b'1', b""), msg(b'2', b""), msg(b'G', b"\0\0\0")],
        );
        assert_eq!(client, "12G");
        t.forward(Expect::Sync, None); // a Flush/Sync mid-copy: ignored by the server too
        t.copy_ended();
        t.forward(Expect::Sync, None);
        assert_eq!(t.owed_ready(), 1);
        let (client, outcomes) = feed(&mut t, &[msg(b'C', b"COPY 2\0"), ready(b'I')]);
        assert_eq!(client, "CZ");
        assert_eq!(outcomes[1].ready, Some(TransactionStatus::Idle));
        assert!(t.is_idle());
    }

    #[test]
    fn a_copy_ended_before_the_server_said_it_started_keeps_the_later_sync() {
        // The client pipelined everything: Execute, Sync, data, CopyDone, Sync.
        let mut t = Tracker::<&str>::default();
        t.forward(Expect::Execute, None);
        t.forward(Expect::Sync, None);
        t.copy_ended();
        t.forward(Expect::Sync, None);
        let (client, _) = feed(
            &mut t,
            &[msg(b'G', b"\0\0\0"), msg(b'C', b"COPY 1\0"), ready(b'I')],
        );
        assert_eq!(client, "GCZ");
        assert!(t.is_idle());
    }

    #[test]
    fn an_error_during_copy_in_waits_for_the_sync_after_copy_done() {
        let mut t = Tracker::<&str>::default();
        t.forward(Expect::Execute, None);
        t.forward(Expect::Sync, None);
        let (client, _) = feed(&mut t, &[msg(b'G', b"\0\0\0"), msg(b'E', b"22P02")]);
        assert_eq!(client, "GE");
        t.copy_ended();
        t.forward(Expect::Sync, None);
        let (client, _) = feed(&mut t, &[ready(b'I')]);
        assert_eq!(client, "Z");
        assert!(t.is_idle());
    }

    #[test]
    fn abandon_returns_every_undo() {
        let mut t = Tracker::default();
        t.forward(Expect::Parse, Some("p"));
        t.answer(Expect::Parse, Bytes::new(), Some("q"));
        t.forward(Expect::Sync, None);
        assert_eq!(t.abandon(), vec!["p", "q"]);
        assert!(t.is_idle());
    }
}
