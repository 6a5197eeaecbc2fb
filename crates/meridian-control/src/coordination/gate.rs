//! The failover barrier's hold on failover steps.
//!
//! When the leading instance's failover machine publishes a paused view, the monitor asks the
//! gate for a [`Ticket`] and every step it then starts (fence, promote, ...) waits on that
//! ticket; the coordinator publishes the paused view to etcd, runs the barrier (every live
//! proxy acknowledged it or lost its lease) and only then lets the ticket through. A ticket
//! whose gate keeper is gone never passes: without coordination there is no barrier, and
//! without a barrier no step may run (the machine's step timeout then fails the run).
//!
//! The gate also carries the leadership: a step about to start on an instance that has lost
//! its etcd session (so its election key may be gone, and another instance elected) does not
//! start, and fails instead. The coordinator notices a lost session within two thirds of the
//! lease TTL, before the lease can have expired on the server, so no new leader exists yet.

use tokio::sync::watch;

/// The monitor's side: asks for barriers.
#[derive(Debug, Clone)]
pub struct Gate {
    requested: watch::Sender<u64>,
    passed: watch::Receiver<u64>,
    leading: watch::Receiver<bool>,
}

/// The coordinator's side: sees requests and lets them through.
#[derive(Debug)]
pub struct GateKeeper {
    /// The latest barrier asked for (a counter).
    pub requested: watch::Receiver<u64>,
    passed: watch::Sender<u64>,
    leading: watch::Sender<bool>,
}

/// Waits for one barrier.
#[derive(Debug, Clone)]
pub struct Ticket {
    number: u64,
    passed: watch::Receiver<u64>,
    leading: watch::Receiver<bool>,
}

impl Gate {
    /// A gate and its keeper.
    pub fn new() -> (Gate, GateKeeper) {
        let (requested_tx, requested_rx) = watch::channel(0);
        let (passed_tx, passed_rx) = watch::channel(0);
        let (leading_tx, leading_rx) = watch::channel(false);
        (
            Gate {
                requested: requested_tx,
                passed: passed_rx,
                leading: leading_rx,
            },
            GateKeeper {
                requested: requested_rx,
                passed: passed_tx,
                leading: leading_tx,
            },
        )
    }

    /// Asks for a barrier (a paused view was just published); steps wait on the ticket.
    pub fn request(&self) -> Ticket {
        let mut number = 0;
        self.requested.send_modify(|n| {
            *n += 1;
            number = *n;
        });
        Ticket {
            number,
            passed: self.passed.clone(),
            leading: self.leading.clone(),
        }
    }
}

impl GateKeeper {
    /// Whether this instance leads now (holds its election key on a live session).
    pub fn set_leading(&self, leading: bool) {
        self.leading.send_replace(leading);
    }

    /// Barrier `number` (and every earlier one) passed.
    pub fn pass(&self, number: u64) {
        self.passed.send_if_modified(|passed| {
            let newer = number > *passed;
            if newer {
                *passed = number;
            }
            newer
        });
    }
}

impl Ticket {
    /// Returns once its barrier passed — `Ok` if this instance still leads then, an error
    /// saying why the step must not run otherwise; never, if the keeper is gone first.
    pub async fn wait(mut self) -> Result<(), String> {
        let number = self.number;
        if self
            .passed
            .wait_for(|passed| *passed >= number)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err("this instance lost its etcd leadership: the step is left to the new leader".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ticket_waits_for_its_barrier_and_no_longer() {
        let (gate, keeper) = Gate::new();
        keeper.set_leading(true);
        let first = gate.request();
        let second = gate.request();
        assert_eq!(*keeper.requested.borrow(), 2);
        keeper.pass(1);
        tokio::time::timeout(Duration::from_secs(5), first.wait())
            .await
            .expect("the first barrier passed")
            .expect("still leading");
        let waiting = tokio::time::timeout(Duration::from_millis(50), second.clone().wait()).await;
        assert!(waiting.is_err(), "the second has not passed yet");
        keeper.set_leading(false);
        keeper.pass(2);
        let refused = tokio::time::timeout(Duration::from_secs(5), second.wait())
            .await
            .expect("the second barrier passed");
        assert!(refused.is_err(), "no step after the leadership is lost");
    }

    #[tokio::test]
    async fn without_a_keeper_nothing_passes() {
        let (gate, keeper) = Gate::new();
        let ticket = gate.request();
        drop(keeper);
        let waited = tokio::time::timeout(Duration::from_millis(50), ticket.wait()).await;
        assert!(waited.is_err());
    }
}
