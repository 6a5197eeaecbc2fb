//! Meridian's own commands, answered by the proxy without a server: `SET`, `RESET` and
//! `SHOW` of `meridian.route`, `meridian.lsn` and `meridian.min_lsn` (parsed in
//! `meridian_core::routing::commands`), over the simple and the extended protocol, each reply
//! in order with what a server still owes the client.

use super::*;

impl Session {
    /// Runs one of Meridian's own commands (see [`commands`]): its reply without the
    /// ReadyForQuery (with a RowDescription first when `describe`), or its ErrorResponse.
    pub(super) fn run_command(
        &mut self,
        command: Result<SessionCommand, CommandError>,
        describe: bool,
    ) -> Result<BytesMut, BytesMut> {
        let mut reply = BytesMut::new();
        let command = match command {
            Ok(command) => command,
            Err(error) => {
                let fields = meridian_wire::backend::ErrorFields::new(
                    meridian_wire::backend::Severity::Error,
                    error.sqlstate,
                    error.message,
                );
                backend::encode_error_response(&mut reply, &fields);
                return Err(reply);
            }
        };
        match command {
            SessionCommand::SetRoute(target) => self.target = target,
            SessionCommand::SetMinLsn(lsn) => self.client_min_lsn = lsn,
            SessionCommand::Show(setting) => {
                let value = match setting {
                    Setting::Route => self.target.as_str().to_owned(),
                    Setting::Lsn => max_lsn(self.write_lsn, self.client_min_lsn)
                        .unwrap_or(Lsn::INVALID)
                        .to_string(),
                    Setting::MinLsn => self.client_min_lsn.unwrap_or(Lsn::INVALID).to_string(),
                };
                if describe {
                    backend::encode_text_row_description(&mut reply, &[setting.name()]);
                }
                backend::encode_data_row(&mut reply, &[Some(value.as_bytes())]);
            }
        }
        backend::encode_command_complete(&mut reply, command.tag().as_bytes());
        Ok(reply)
    }

    /// Answers one of Meridian's own commands sent as a simple query, without a server.
    pub(super) fn answer_command(&mut self, command: Result<SessionCommand, CommandError>) {
        let mut reply = match self.run_command(command, true) {
            Ok(reply) | Err(reply) => reply,
        };
        match &self.server {
            Some(attached) => {
                backend::encode_ready_for_query(&mut reply, attached.status);
                self.tracker.answer(Expect::Query, reply.freeze(), None);
                self.tracker.drain_answers(&mut self.client_out);
            }
            None => {
                let status = if self.lost_transaction.is_some() {
                    TransactionStatus::Failed
                } else if self.deferred_begin.is_some() {
                    TransactionStatus::InTransaction
                } else {
                    TransactionStatus::Idle
                };
                backend::encode_ready_for_query(&mut reply, status);
                self.client_out.extend_from_slice(&reply);
            }
        }
    }

    /// Meridian's own commands over the extended protocol (a Parse of `SET meridian.route =
    /// replica`, and the Bind, Describe, Execute and Close that use it, as JDBC sends them):
    /// answered here, in order with anything a server owes. False for any other message.
    pub(super) fn answer_local_extended(&mut self, message: &FrontendMessage) -> bool {
        let (expect, reply) = match message {
            FrontendMessage::Parse { name, sql, .. } => {
                let Some(command) = commands::session_command(sql) else {
                    return false;
                };
                self.local_statements.insert(name.clone(), command);
                (Expect::Parse, parse_complete())
            }
            FrontendMessage::Bind {
                portal, statement, ..
            } => {
                let Some(command) = self.local_statements.get(statement).cloned() else {
                    return false;
                };
                self.local_portals.insert(portal.clone(), command);
                let mut reply = BytesMut::new();
                backend::encode_bind_complete(&mut reply);
                (Expect::Bind, reply.freeze())
            }
            FrontendMessage::Describe { target, name } => {
                let command = match target {
                    Target::Statement => self.local_statements.get(name),
                    Target::Portal => self.local_portals.get(name),
                };
                let Some(command) = command else {
                    return false;
                };
                let mut reply = BytesMut::new();
                if *target == Target::Statement {
                    backend::encode_parameter_description(&mut reply, &[]);
                }
                match command {
                    Ok(SessionCommand::Show(setting)) => {
                        backend::encode_text_row_description(&mut reply, &[setting.name()]);
                    }
                    _ => backend::encode_no_data(&mut reply),
                }
                (Expect::Describe, reply.freeze())
            }
            FrontendMessage::Execute { portal, .. } => {
                let Some(command) = self.local_portals.get(portal).cloned() else {
                    return false;
                };
                match self.run_command(command, false) {
                    Ok(reply) => (Expect::Execute, reply.freeze()),
                    Err(error) => {
                        // As the server does after an error: skip to the Sync.
                        match self.server {
                            Some(_) => {
                                self.tracker
                                    .answer_error(Expect::Execute, error.freeze(), None);
                                self.tracker.drain_answers(&mut self.client_out);
                            }
                            None => self.client_out.extend_from_slice(&error),
                        }
                        self.discard_until_sync = true;
                        return true;
                    }
                }
            }
            FrontendMessage::Close { target, name } => {
                let removed = match target {
                    Target::Statement => self.local_statements.remove(name),
                    Target::Portal => self.local_portals.remove(name),
                };
                if removed.is_none() {
                    return false;
                }
                (Expect::Close, close_complete())
            }
            _ => return false,
        };
        match self.server {
            Some(_) => {
                self.tracker.answer(expect, reply, None);
                self.tracker.drain_answers(&mut self.client_out);
            }
            None => self.client_out.extend_from_slice(&reply),
        }
        true
    }
}
