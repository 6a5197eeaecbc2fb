//! Which replica to promote, and why each of the others was not chosen.
//!
//! Eligible: healthy, not `no_failover`, no further behind than `max_lag_on_failover` bytes,
//! in the requested region if one was named, and, when the primary replicates synchronously,
//! one of its synchronous replicas (only they are sure to hold every acknowledged commit).
//! Among the eligible, the order is: most WAL received first (the least data lost), then
//! region priority, then node priority, then the lowest probe latency, then the name (so the
//! decision is deterministic). When no eligible replica is left in the primary's own region
//! (the region is lost), the failover is regional: region priority comes first, then the
//! received WAL, so that the cluster moves to the region the operator ranked next rather than
//! to whichever region happened to be a few bytes ahead. The ranking lists every replica with its place or the reason it
//! was excluded, for the failover history and for operators.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::lsn::Lsn;
use crate::topology::{Health, NodeId};

/// What the ranking knows of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Identity.
    pub node: NodeId,
    /// Name.
    pub name: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// The region's priority (higher is preferred).
    pub region_priority: i32,
    /// The node's priority among equals.
    pub node_priority: i32,
    /// Configured never to be promoted.
    pub no_failover: bool,
    /// Judged health.
    pub health: Health,
    /// Last WAL position it received (`pg_last_wal_receive_lsn()`), falling back to replayed.
    pub received: Option<Lsn>,
    /// Latency of its last probe.
    pub latency: Option<Duration>,
    /// It was a synchronous (or quorum) replica of the primary.
    pub synchronous: bool,
}

/// The rules of one ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankingPolicy {
    /// Replicas further behind than this (bytes) are not promoted.
    pub max_lag: u64,
    /// The primary replicated synchronously: only synchronous replicas are eligible.
    pub synchronous: bool,
    /// Only replicas of this region (an operator's regional failover).
    pub region: Option<Arc<str>>,
    /// The failed primary's region: when none of its replicas is eligible, region priority
    /// ranks before received WAL.
    pub primary_region: Option<Arc<str>>,
}

/// Why a replica cannot be promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Not healthy.
    Unhealthy(Health),
    /// Configured `no_failover`.
    NoFailover,
    /// Its WAL position is unknown.
    NoPosition,
    /// Too far behind the most advanced known position.
    TooFarBehind {
        /// Bytes behind.
        behind: u64,
        /// The limit.
        max: u64,
    },
    /// Not a synchronous replica of a synchronously replicating primary.
    NotSynchronous,
    /// Not in the requested region.
    OtherRegion,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Unhealthy(health) => write!(f, "not healthy ({health:?})"),
            Exclusion::NoFailover => f.write_str("configured no_failover"),
            Exclusion::NoPosition => f.write_str("WAL position unknown"),
            Exclusion::TooFarBehind { behind, max } => {
                write!(f, "{behind} bytes behind (max_lag_on_failover {max})")
            }
            Exclusion::NotSynchronous => f.write_str("not a synchronous replica"),
            Exclusion::OtherRegion => f.write_str("not in the requested region"),
        }
    }
}

/// One replica's place in a ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The replica.
    pub candidate: Candidate,
    /// Its place among the eligible (1 = chosen), or why it was excluded.
    pub place: Result<usize, Exclusion>,
}

/// A ranking: every replica, eligible ones first in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ranking {
    /// Every replica.
    pub entries: Vec<Ranked>,
}

impl Ranking {
    /// The replica to promote, if any is eligible.
    pub fn chosen(&self) -> Option<&Candidate> {
        self.entries
            .iter()
            .find(|entry| entry.place == Ok(1))
            .map(|entry| &entry.candidate)
    }
}

impl fmt::Display for Ranking {
    /// One line per replica: `1. eu-west-1 (eu-west, received 0/3000060)` or
    /// `- ap-south-1: not healthy (Down)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let c = &entry.candidate;
            match &entry.place {
                Ok(place) => write!(
                    f,
                    "{place}. {} ({}, priority {}/{}, received {})",
                    c.name,
                    c.region,
                    c.region_priority,
                    c.node_priority,
                    c.received
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "?".into())
                )?,
                Err(exclusion) => write!(f, "-  {}: {exclusion}", c.name)?,
            }
        }
        Ok(())
    }
}

/// Ranks `candidates`. `reference` is the most advanced WAL position known (the primary's last
/// observed position); lag is measured from it or from the best candidate, whichever is ahead.
pub fn rank(candidates: &[Candidate], reference: Option<Lsn>, policy: &RankingPolicy) -> Ranking {
    let best_received = candidates.iter().filter_map(|c| c.received).max();
    let reference = reference.max(best_received);
    let mut eligible = Vec::new();
    let mut excluded = Vec::new();
    for candidate in candidates {
        let exclusion = if let Some(region) = &policy.region
            && candidate.region != *region
        {
            Some(Exclusion::OtherRegion)
        } else if candidate.no_failover {
            Some(Exclusion::NoFailover)
        } else if candidate.health != Health::Healthy {
            Some(Exclusion::Unhealthy(candidate.health))
        } else if policy.synchronous && !candidate.synchronous {
            Some(Exclusion::NotSynchronous)
        } else {
            match (candidate.received, reference) {
                (None, _) | (_, None) => Some(Exclusion::NoPosition),
                (Some(received), Some(reference)) => {
                    let behind = reference.bytes_after(received);
                    (behind > policy.max_lag).then_some(Exclusion::TooFarBehind {
                        behind,
                        max: policy.max_lag,
                    })
                }
            }
        };
        match exclusion {
            None => eligible.push(candidate.clone()),
            Some(exclusion) => excluded.push(Ranked {
                candidate: candidate.clone(),
                place: Err(exclusion),
            }),
        }
    }
    let regional = policy
        .primary_region
        .as_ref()
        .is_some_and(|region| !eligible.iter().any(|c| c.region == *region));
    if regional {
        eligible.sort_by(|a, b| {
            b.region_priority
                .cmp(&a.region_priority)
                .then_with(|| preference(a, b))
        });
    } else {
        eligible.sort_by(preference);
    }
    let mut entries: Vec<Ranked> = eligible
        .into_iter()
        .enumerate()
        .map(|(i, candidate)| Ranked {
            candidate,
            place: Ok(i + 1),
        })
        .collect();
    entries.extend(excluded);
    Ranking { entries }
}

/// Better candidates first.
fn preference(a: &Candidate, b: &Candidate) -> Ordering {
    b.received
        .cmp(&a.received)
        .then(b.region_priority.cmp(&a.region_priority))
        .then(b.node_priority.cmp(&a.node_priority))
        .then(
            a.latency
                .unwrap_or(Duration::MAX)
                .cmp(&b.latency.unwrap_or(Duration::MAX)),
        )
        .then(a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: u16, region: &str, region_priority: i32, received: u64) -> Candidate {
        Candidate {
            node: NodeId(id),
            name: Arc::from(format!("{region}-{id}")),
            region: Arc::from(region),
            region_priority,
            node_priority: 0,
            no_failover: false,
            health: Health::Healthy,
            received: Some(Lsn(received)),
            latency: Some(Duration::from_millis(5)),
            synchronous: false,
        }
    }

    fn policy() -> RankingPolicy {
        RankingPolicy {
            max_lag: 16 * 1024 * 1024,
            synchronous: false,
            region: None,
            primary_region: None,
        }
    }

    fn order(ranking: &Ranking) -> Vec<(u16, Result<usize, Exclusion>)> {
        ranking
            .entries
            .iter()
            .map(|e| (e.candidate.node.0, e.place.clone()))
            .collect()
    }

    /// (node, place or exclusion) in ranking order.
    type Expected = Vec<(u16, Result<usize, Exclusion>)>;
    /// One row of the decision table.
    type Case = (
        &'static str,
        Vec<Candidate>,
        RankingPolicy,
        Option<Lsn>,
        Expected,
    );

    /// Decision table: (what, candidates, policy changes, expected order / exclusions).
    #[test]
    fn ranking_table() {
        let mut far = candidate(3, "ap", 6, 100);
        far.received = Some(Lsn(100));
        let cases: Vec<Case> = vec![
            (
                "most data first, whatever the region",
                vec![candidate(1, "eu", 8, 1000), candidate(2, "ap", 6, 2000)],
                policy(),
                None,
                vec![(2, Ok(1)), (1, Ok(2))],
            ),
            (
                "the primary's region is lost: next region by priority, then data",
                vec![
                    candidate(1, "ap", 6, 3000),
                    candidate(2, "eu", 8, 1000),
                    candidate(3, "eu", 8, 2000),
                ],
                RankingPolicy {
                    primary_region: Some(Arc::from("us")),
                    ..policy()
                },
                None,
                vec![(3, Ok(1)), (2, Ok(2)), (1, Ok(3))],
            ),
            (
                "a replica left in the primary's region: most data first again",
                vec![candidate(1, "us", 10, 1000), candidate(2, "eu", 8, 2000)],
                RankingPolicy {
                    primary_region: Some(Arc::from("us")),
                    ..policy()
                },
                None,
                vec![(2, Ok(1)), (1, Ok(2))],
            ),
            (
                "equal data: region priority",
                vec![candidate(1, "ap", 6, 1000), candidate(2, "eu", 8, 1000)],
                policy(),
                None,
                vec![(2, Ok(1)), (1, Ok(2))],
            ),
            (
                "equal data and region: node priority, then latency",
                {
                    let mut a = candidate(1, "eu", 8, 1000);
                    let mut b = candidate(2, "eu", 8, 1000);
                    let c = candidate(3, "eu", 8, 1000);
                    a.node_priority = 1;
                    b.latency = Some(Duration::from_millis(1));
                    vec![c, b, a]
                },
                policy(),
                None,
                vec![(1, Ok(1)), (2, Ok(2)), (3, Ok(3))],
            ),
            (
                "exclusions name their reason",
                {
                    let mut down = candidate(1, "eu", 8, 1000);
                    down.health = Health::Down;
                    let mut excluded = candidate(2, "eu", 8, 1000);
                    excluded.no_failover = true;
                    let mut unknown = candidate(4, "eu", 8, 0);
                    unknown.received = None;
                    vec![
                        down,
                        excluded,
                        far.clone(),
                        unknown,
                        candidate(5, "us", 10, 20_000_000),
                    ]
                },
                policy(),
                None,
                vec![
                    (5, Ok(1)),
                    (1, Err(Exclusion::Unhealthy(Health::Down))),
                    (2, Err(Exclusion::NoFailover)),
                    (
                        3,
                        Err(Exclusion::TooFarBehind {
                            behind: 19_999_900,
                            max: 16 * 1024 * 1024,
                        }),
                    ),
                    (4, Err(Exclusion::NoPosition)),
                ],
            ),
            (
                "lag is measured from the primary's last position when it is ahead",
                vec![candidate(1, "eu", 8, 1000)],
                RankingPolicy {
                    max_lag: 500,
                    ..policy()
                },
                Some(Lsn(2000)),
                vec![(
                    1,
                    Err(Exclusion::TooFarBehind {
                        behind: 1000,
                        max: 500,
                    }),
                )],
            ),
            (
                "synchronous mode: only synchronous replicas",
                {
                    let mut sync = candidate(1, "us", 10, 1000);
                    sync.synchronous = true;
                    vec![candidate(2, "us", 10, 5000), sync]
                },
                RankingPolicy {
                    synchronous: true,
                    ..policy()
                },
                None,
                vec![(1, Ok(1)), (2, Err(Exclusion::NotSynchronous))],
            ),
            (
                "a named region",
                vec![candidate(1, "eu", 8, 1000), candidate(2, "ap", 6, 2000)],
                RankingPolicy {
                    region: Some(Arc::from("eu")),
                    ..policy()
                },
                None,
                vec![(1, Ok(1)), (2, Err(Exclusion::OtherRegion))],
            ),
            ("nobody", vec![], policy(), None, vec![]),
        ];
        for (what, candidates, policy, reference, expected) in cases {
            let ranking = rank(&candidates, reference, &policy);
            assert_eq!(order(&ranking), expected, "{what}");
            assert_eq!(
                ranking.chosen().map(|c| c.node.0),
                expected.iter().find(|(_, p)| *p == Ok(1)).map(|(n, _)| *n),
                "{what}"
            );
        }
    }

    #[test]
    fn the_ranking_reads_well() {
        let mut down = candidate(2, "ap", 6, 1000);
        down.health = Health::Down;
        let ranking = rank(&[candidate(1, "eu", 8, 0x3000060), down], None, &policy());
        let text = ranking.to_string();
        assert_eq!(
            text,
            "1. eu-1 (eu, priority 8/0, received 0/3000060)\n-  ap-2: not healthy (Down)"
        );
    }
}
