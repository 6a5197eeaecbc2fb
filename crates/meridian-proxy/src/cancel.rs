//! Cancel keys: the proxy's own BackendKeyData per client, and where a cancel must go.
//!
//! A client cancels by opening a new connection and sending its key (PostgreSQL docs, 55.2.8
//! "Canceling Requests in Progress"). The key the client has is the proxy's; the query runs on
//! whatever server connection the session holds at that moment, which has its own key. Each
//! session owns a [`CancelSlot`] that it updates when it attaches or detaches a server; the
//! registry maps the client-visible process ID to the slot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where a session's running query can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// The server.
    pub addr: SocketAddr,
    /// The server connection's process ID.
    pub process_id: i32,
    /// Its secret key.
    pub secret_key: [u8; 4],
}

/// One session's cancel key and current target.
#[derive(Debug)]
pub struct CancelSlot {
    secret: [u8; 4],
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    /// The secret key handed to the client.
    pub fn secret(&self) -> [u8; 4] {
        self.secret
    }

    /// Records the server connection the session now uses, or none.
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    fn target(&self) -> Option<CancelTarget> {
        *self.target.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every live session's key.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// A new key for a session: a positive process ID no other session uses, and a random
    /// secret.
    pub fn register(&self) -> (i32, Arc<CancelSlot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let process_id = (rand::random::<u32>() >> 1) as i32;
            if process_id == 0 || slots.contains_key(&process_id) {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                secret: rand::random(),
                target: Mutex::new(None),
            });
            slots.insert(process_id, slot.clone());
            return (process_id, slot);
        }
    }

    /// Forgets a session's key when it ends.
    pub fn unregister(&self, process_id: i32) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&process_id);
    }

    /// Where a cancel with this key must go: `None` for an unknown key, a wrong secret, or a
    /// session that runs nothing right now (PostgreSQL ignores those silently too).
    pub fn lookup(&self, process_id: i32, secret: &[u8]) -> Option<CancelTarget> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&process_id)?
            .clone();
        // Constant-time comparison: the secret is what stops strangers cancelling queries.
        if secret.len() != slot.secret.len()
            || secret
                .iter()
                .zip(slot.secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return None;
        }
        slot.target()
    }
}

/// Sends a CancelRequest to the server, as libpq's `PQcancel` does: a new connection carrying
/// only the request, closed right after.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(target.addr).await?;
    let mut packet = BytesMut::new();
    meridian_wire::startup::encode_cancel_request(
        &mut packet,
        target.process_id,
        &target.secret_key,
    );
    stream.write_all(&packet).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_right_secret_and_a_target() {
        let registry = CancelRegistry::default();
        let (pid, slot) = registry.register();
        assert!(pid > 0);
        assert_eq!(
            registry.lookup(pid, &slot.secret()),
            None,
            "no server attached yet"
        );
        let target = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            process_id: 77,
            secret_key: [1, 2, 3, 4],
        };
        slot.set_target(Some(target));
        assert_eq!(registry.lookup(pid, &slot.secret()), Some(target));
        let mut wrong = slot.secret();
        wrong[0] ^= 1;
        assert_eq!(registry.lookup(pid, &wrong), None);
        assert_eq!(registry.lookup(pid, &[0; 8]), None);
        registry.unregister(pid);
        assert_eq!(registry.lookup(pid, &slot.secret()), None);
    }

    #[test]
    fn process_ids_are_unique() {
        let registry = CancelRegistry::default();
        let ids: std::collections::HashSet<i32> =
            (0..1000).map(|_| registry.register().0).collect();
        assert_eq!(ids.len(), 1000);
    }
}
