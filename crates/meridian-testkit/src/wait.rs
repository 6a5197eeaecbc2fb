//! Waiting for a condition without sleeping for correctness.
//!
//! A test never sleeps and hopes; it polls an observation until it holds or a deadline passes,
//! and when the deadline passes it says what it was waiting for and what it last saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one poll saw.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds; the value is returned to the caller.
    Ready(T),
    /// Not yet; the text describes what was seen, for the timeout message.
    NotYet(String),
}

impl<T> Check<T> {
    /// `Ready(value)` when `holds`, else `NotYet` with `seen` formatted.
    pub fn when(holds: bool, value: T, seen: impl Debug) -> Check<T> {
        if holds {
            Check::Ready(value)
        } else {
            Check::NotYet(format!("{seen:?}"))
        }
    }
}

impl<T, E: std::fmt::Display> From<Result<T, E>> for Check<T> {
    /// A successful observation is ready; an error is "not yet", reported if it is the last.
    fn from(result: Result<T, E>) -> Check<T> {
        match result {
            Ok(value) => Check::Ready(value),
            Err(e) => Check::NotYet(format!("error: {e}")),
        }
    }
}

/// Polls `probe` until it is ready or `timeout` has passed.
///
/// Polls start 5 ms apart and back off to 100 ms. On timeout the error reads
/// `timed out after 10s waiting for <what>; last seen: <observation>`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let mut polls = 0u32;
    loop {
        let seen = match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Check::Ready(value)) => return Ok(value),
            Ok(Check::NotYet(seen)) => seen,
            Err(_) => "the last poll itself did not finish before the deadline".to_owned(),
        };
        polls += 1;
        if Instant::now() + pause > deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what} ({polls} polls); last seen: {seen}"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_ready() {
        let mut n = 0;
        let value = wait_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            let now = n;
            async move { Check::when(now >= 3, now * 10, now) }
        })
        .await
        .unwrap();
        assert_eq!(value, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_reports_what_was_last_seen() {
        let err = wait_until(Duration::from_secs(1), "the moon", || async {
            Check::<()>::NotYet("still cheese".into())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the moon"), "{err}");
        assert!(err.contains("last seen: still cheese"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_is_cut_at_the_deadline() {
        let err = wait_until(Duration::from_secs(1), "a reply", || {
            std::future::pending::<Check<()>>()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("did not finish before the deadline"), "{err}");
    }
}
