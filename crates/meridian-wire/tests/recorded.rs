//! Decodes a whole recorded conversation: pgbench 15 against PostgreSQL 15.18 (`pgbench -i`
//! queries, then `pgbench -M prepared -S -t 1`), captured by a relay on 2026-11-24.
//!
//! Fixture format: records of one direction byte (`>` client to server, `<` server to client),
//! a big-endian `u32` length, and that many bytes as read from the socket.

use bytes::BytesMut;
use meridian_wire::backend::{BackendMessage, TransactionStatus};
use meridian_wire::frontend::FrontendMessage;
use meridian_wire::startup::{self, StartupPacket};
use meridian_wire::{DEFAULT_MAX_MESSAGE_SIZE, frame};

fn records() -> Vec<(u8, Vec<u8>)> {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pgbench-prepared-select.bin"
    ))
    .unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let len = u32::from_be_bytes(data[i + 1..i + 5].try_into().unwrap()) as usize;
        out.push((data[i], data[i + 5..i + 5 + len].to_vec()));
        i += 5 + len;
    }
    out
}

#[test]
fn every_message_of_a_real_conversation_decodes() {
    let mut from_client = BytesMut::new();
    let mut from_server = BytesMut::new();
    let mut frontend = Vec::new();
    let mut backend = Vec::new();
    let mut startups = 0;
    for (direction, bytes) in records() {
        if direction == b'>' {
            from_client.extend_from_slice(&bytes);
            // A connection's first packet is a startup packet; pgbench opened two.
            if from_client.starts_with(b"\0\0\0") {
                let packet = startup::decode(&mut from_client).unwrap().unwrap();
                assert_eq!(packet.param("application_name"), Some("pgbench"));
                assert!(matches!(packet, StartupPacket::Startup { .. }));
                startups += 1;
            }
            while let Some(f) = frame::decode(&mut from_client, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
                frontend.push(FrontendMessage::decode(f).unwrap());
            }
        } else {
            from_server.extend_from_slice(&bytes);
            while let Some(f) = frame::decode(&mut from_server, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
                backend.push(BackendMessage::decode(f).unwrap());
            }
        }
    }
    assert!(from_client.is_empty() && from_server.is_empty());
    assert_eq!(startups, 2);
    assert!(
        frontend
            .iter()
            .any(|m| matches!(m, FrontendMessage::Parse { name, .. } if &name[..] == b"P_0"))
    );
    assert_eq!(
        frontend
            .iter()
            .filter(|m| matches!(m, FrontendMessage::Terminate))
            .count(),
        2
    );
    let ready = backend
        .iter()
        .filter(|m| matches!(m, BackendMessage::ReadyForQuery(TransactionStatus::Idle)))
        .count();
    let syncs_and_queries = frontend
        .iter()
        .filter(|m| matches!(m, FrontendMessage::Sync | FrontendMessage::Query { .. }))
        .count();
    // One ReadyForQuery per login, per simple Query and per Sync.
    assert_eq!(ready, syncs_and_queries + startups);
    assert!(backend.iter().any(|m| matches!(m, BackendMessage::ParameterStatus { name, value } if name == "in_hot_standby" && value == "off")));
}
