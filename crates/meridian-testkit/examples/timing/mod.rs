//! What the start-time examples share: the number of trials and how times are summed up.

use std::time::Duration;

/// The number of trials: the first argument, 10 without one.
pub fn trials() -> anyhow::Result<usize> {
    Ok(std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10))
}

/// `median …, min …, max …` of `times` (at least one).
pub fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:?}, min {:?}, max {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )
}
