//! The one retry loop of the HTTP sources (S3, IMS): a bounded number of attempts,
//! an exponential backoff capped at `MAX_PAUSE`, and jitter.
//!
//! Jitter, because every worker runs the same agent on the same period against the
//! same S3 and API gateway: when those stumble, all agents fail in the same second,
//! and a fixed backoff would bring them back in the same second too. Each pause is
//! drawn in [ceiling/2, ceiling] ("equal jitter"): spread out, yet never shorter
//! than half the backoff the policy asked for.
//!
//! The draw comes from `Jitter`, a SplitMix64 generator: a few lines, no new
//! dependency, and seedable so the tests see exactly the pauses they check. It is
//! not for secrets.
//!
//! What is worth another attempt stays with each source (`retryable` in `s3.rs` and
//! `ims.rs`; the status and transport rules are in [`crate::http`]). The Kubernetes
//! client does not retry (the next scan is its retry), and the ledger's conflict loop
//! (`ledger/kube.rs`) re-reads and writes again at once: waiting would not make a
//! stale `resourceVersion` fresh.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest pause between two attempts, whatever the policy says.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry; 0 counts as 1).
    pub attempts: u32,
    /// Ceiling of the pause before the second attempt; doubled each further attempt.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn once() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        }
    }

    /// The longest pause before attempt `n` (1-based, `n >= 2`): `backoff · 2^(n-2)`,
    /// at most [`MAX_PAUSE`].
    pub(crate) fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(2).min(16);
        self.backoff.saturating_mul(factor).min(MAX_PAUSE)
    }

    /// The pause before attempt `n`: drawn from `jitter` in `[ceiling/2, ceiling]`.
    pub(crate) fn pause(&self, n: u32, jitter: &mut Jitter) -> Duration {
        let hi = self.ceiling(n);
        jitter.between(hi / 2, hi)
    }
}

/// A small pseudo-random source for backoff jitter (SplitMix64). Not cryptographic.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    /// A fixed sequence: the same seed gives the same pauses.
    pub(crate) fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    /// Seeded from the clock, the process ID and a process-wide counter, so that
    /// two agents, or two requests of one agent, that failed together draw apart.
    pub(crate) fn from_clock() -> Jitter {
        static DRAWS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = DRAWS.fetch_add(1, Ordering::Relaxed);
        Jitter::seeded(nanos ^ (u64::from(std::process::id()) << 32) ^ n.rotate_left(17))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[lo, hi]` (`lo` when `hi <= lo`), to the nanosecond.
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi
            .saturating_sub(lo)
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64;
        lo + Duration::from_nanos(self.next_u64() % (span + 1))
    }
}

/// Runs `op` (handed the attempt number, from 1) until it succeeds, fails with an
/// error `retryable` refuses, or `policy.attempts` are spent, pausing with jittered
/// backoff in between. Each retry is a warning naming `what`; the last error is
/// returned as it came.
pub(crate) async fn retry<T, E, Op, Fut>(
    policy: RetryPolicy,
    what: &str,
    retryable: impl Fn(&E) -> bool,
    op: Op,
) -> Result<T, E>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    retry_with(policy, Jitter::from_clock(), what, retryable, op).await
}

/// [`retry`] with a given jitter source (tests: a seeded one).
pub(crate) async fn retry_with<T, E, Op, Fut>(
    policy: RetryPolicy,
    mut jitter: Jitter,
    what: &str,
    retryable: impl Fn(&E) -> bool,
    mut op: Op,
) -> Result<T, E>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Err(e) if attempt < attempts && retryable(&e) => {
                let pause = policy.pause(attempt + 1, &mut jitter);
                tracing::warn!(attempt, error = %e, ?pause, "{what} request failed; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Instant;

    #[test]
    fn the_ceiling_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(p.ceiling(2), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(400));
        assert_eq!(p.ceiling(10), MAX_PAUSE);
        assert_eq!(p.ceiling(u32::MAX), MAX_PAUSE, "no overflow");
        let huge = RetryPolicy {
            attempts: 2,
            backoff: Duration::from_secs(u64::MAX / 2),
        };
        assert_eq!(huge.ceiling(9), MAX_PAUSE, "no overflow");
        assert_eq!(RetryPolicy::once().ceiling(2), Duration::ZERO);
    }

    /// Every pause lies in [ceiling/2, ceiling], for every attempt and many seeds, and
    /// the pauses really vary (the point of the jitter).
    #[test]
    fn jittered_pauses_stay_within_their_bounds_and_spread() {
        let p = RetryPolicy {
            attempts: 12,
            backoff: Duration::from_millis(100),
        };
        for n in 2..=12 {
            let hi = p.ceiling(n);
            let mut seen = BTreeSet::new();
            for seed in 0..500 {
                let d = p.pause(n, &mut Jitter::seeded(seed));
                assert!(d >= hi / 2 && d <= hi, "attempt {n}, seed {seed}: {d:?}");
                seen.insert(d);
            }
            assert!(
                seen.len() > 400,
                "attempt {n}: {} distinct pauses",
                seen.len()
            );
            let lower_half = seen.iter().filter(|d| **d < hi * 3 / 4).count();
            assert!(
                (150..=350).contains(&lower_half),
                "attempt {n}: {lower_half} of {} in the lower half",
                seen.len()
            );
        }
        assert_eq!(
            RetryPolicy::once().pause(2, &mut Jitter::seeded(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_seed_fixes_the_sequence_and_clock_seeds_differ() {
        let draw = |mut j: Jitter| (0..8).map(|_| j.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(Jitter::seeded(42)), draw(Jitter::seeded(42)));
        assert_ne!(draw(Jitter::seeded(42)), draw(Jitter::seeded(43)));
        assert_ne!(draw(Jitter::from_clock()), draw(Jitter::from_clock()));
        let mut j = Jitter::seeded(7);
        let d = Duration::from_millis(3);
        assert_eq!(j.between(d, d), d);
        assert_eq!(j.between(d, Duration::ZERO), d);
    }

    /// The loop: retries only what `retryable` accepts, stops at the attempt count,
    /// hands each call its attempt number, and waits the seeded pauses in between.
    #[tokio::test]
    async fn the_loop_retries_what_is_retryable_up_to_the_attempts() {
        let p = RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(40),
        };
        // Always retryable: four attempts, then the last error.
        let mut calls = Vec::new();
        let t = Instant::now();
        let r: Result<(), String> = retry_with(
            p,
            Jitter::seeded(9),
            "test",
            |_| true,
            |n| {
                calls.push(n);
                async move { Err(format!("fail {n}")) }
            },
        )
        .await;
        let waited = t.elapsed();
        assert_eq!(r, Err("fail 4".to_string()));
        assert_eq!(calls, [1, 2, 3, 4]);
        let mut j = Jitter::seeded(9);
        let expected: Duration = (2..=4).map(|n| p.pause(n, &mut j)).sum();
        assert!(expected >= Duration::from_millis(140), "{expected:?}");
        assert!(waited >= expected, "{waited:?} < {expected:?}");
        assert!(waited < expected + Duration::from_secs(2), "{waited:?}");

        // Not retryable: one attempt.
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            p,
            "test",
            |e: &&str| *e != "fatal",
            |_| {
                calls += 1;
                async { Err("fatal") }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("fatal"), 1));

        // Success after a retry.
        let r: Result<u32, &str> = retry(
            RetryPolicy {
                attempts: 3,
                backoff: Duration::from_millis(1),
            },
            "test",
            |_| true,
            |n| async move {
                if n < 2 {
                    Err("flaky")
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(r, Ok(2));

        // Zero attempts still makes the one call.
        let mut calls = 0;
        let _ = retry(
            RetryPolicy {
                attempts: 0,
                backoff: Duration::ZERO,
            },
            "test",
            |_: &&str| true,
            |_| {
                calls += 1;
                async { Err::<(), _>("x") }
            },
        )
        .await;
        assert_eq!(calls, 1);
    }
}
