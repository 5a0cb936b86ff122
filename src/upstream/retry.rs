//! The only backoff code: which outcomes are retried, how long to wait (exponential with full
//! jitter, or the upstream's `Retry-After`), and the loop that runs attempts.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use http::HeaderMap;
use rand::Rng;

use super::UpstreamError;
use crate::config::RetryConfig;

/// What one attempt produced when the upstream answered at all.
#[derive(Debug)]
pub struct Attempt<T> {
    /// HTTP status of the answer.
    pub status: u16,
    /// Wait the upstream asked for, from `retry-after-ms` or `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The answer itself, returned when no retry follows.
    pub value: T,
}

/// Runs `attempt(budget)` until it succeeds, fails in a way not retried, `policy.attempts`
/// retries are spent, or the next wait would pass `policy.deadline`. `budget` is the time left
/// before the deadline (`None` without one), so an attempt can shorten its own timeout.
/// Returns the last outcome and the number of retries made.
pub async fn run<T, F, Fut>(
    policy: &RetryConfig,
    mut attempt: F,
) -> (Result<Attempt<T>, UpstreamError>, u32)
where
    F: FnMut(Option<Duration>) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, UpstreamError>>,
{
    let started = Instant::now();
    let left = || policy.deadline.map(|d| d.saturating_sub(started.elapsed()));
    let mut retries = 0;
    loop {
        let outcome = attempt(left()).await;
        if retries >= policy.attempts {
            return (outcome, retries);
        }
        match wait_before_retry(policy, retries, &outcome) {
            // Waiting past the deadline only to be cut off would waste the caller's time.
            Some(wait) if left().is_none_or(|l| wait < l) => {
                tokio::time::sleep(wait).await;
                retries += 1;
            }
            _ => return (outcome, retries),
        }
    }
}

/// How long to wait before retry number `retries + 1`, or `None` when `outcome` is final.
pub fn wait_before_retry<T>(
    policy: &RetryConfig,
    retries: u32,
    outcome: &Result<Attempt<T>, UpstreamError>,
) -> Option<Duration> {
    match outcome {
        Ok(answer) if policy.retries_status(answer.status) => {
            match answer.retry_after.filter(|_| policy.use_retry_after_header) {
                // A provider asking for a longer pause than we allow gets its answer returned.
                Some(asked) if asked > policy.max_retry_after => None,
                Some(asked) => Some(asked),
                None => Some(backoff(policy, retries, &mut rand::rng())),
            }
        }
        Ok(_) => None,
        Err(e) if e.is_retryable() => Some(backoff(policy, retries, &mut rand::rng())),
        Err(_) => None,
    }
}

/// Backoff before retry `n + 1`: `base_delay * 2^n` capped by `max_delay`, fully jittered.
pub fn backoff(policy: &RetryConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let step = policy
        .base_delay
        .checked_mul(2u32.saturating_pow(n))
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay);
    if policy.jitter && !step.is_zero() {
        step.mul_f64(rng.random::<f64>())
    } else {
        step
    }
}

/// Reads `retry-after-ms` (OpenAI's) or `Retry-After` (seconds or an HTTP date) from `headers`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let raw = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy(attempts: u32) -> RetryConfig {
        RetryConfig {
            attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_and_caps_without_jitter() {
        let p = RetryConfig {
            jitter: false,
            ..policy(5)
        };
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<u128> = (0..6)
            .map(|n| backoff(&p, n, &mut rng).as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&p, 200, &mut rng), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_stays_within_the_step() {
        let p = policy(5);
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen_small = false;
        for n in 0..8 {
            for _ in 0..200 {
                let w = backoff(&p, n, &mut rng);
                let cap = Duration::from_millis((100u64 << n).min(1000));
                assert!(w <= cap, "{w:?} > {cap:?}");
                seen_small |= w < cap / 2;
            }
        }
        assert!(seen_small, "jitter never drew below half the step");
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_ms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(now + Duration::from_secs(12))
                .parse()
                .unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(12)));
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(now - Duration::from_secs(5))
                .parse()
                .unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
    }

    fn answer(status: u16, retry_after: Option<u64>) -> Result<Attempt<()>, UpstreamError> {
        Ok(Attempt {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            value: (),
        })
    }

    #[test]
    fn decisions_follow_the_policy() {
        let p = policy(3);
        assert_eq!(wait_before_retry(&p, 0, &answer(200, None)), None);
        assert_eq!(wait_before_retry(&p, 0, &answer(400, None)), None);
        assert!(wait_before_retry(&p, 0, &answer(503, None)).is_some());
        assert_eq!(
            wait_before_retry(&p, 0, &answer(429, Some(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            wait_before_retry(&p, 0, &answer(429, Some(61))),
            None,
            "over max_retry_after"
        );
        let ignore = RetryConfig {
            use_retry_after_header: false,
            ..policy(3)
        };
        assert!(
            wait_before_retry(&ignore, 0, &answer(429, Some(61))).unwrap()
                <= Duration::from_millis(100)
        );
        let timeout: Result<Attempt<()>, _> = Err(UpstreamError::Timeout(Duration::from_secs(1)));
        assert!(wait_before_retry(&p, 0, &timeout).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn run_counts_retries_and_stops_at_the_limit() {
        let p = policy(2);
        let mut calls = 0;
        let (out, retries) = run(&p, |_| {
            calls += 1;
            async { answer(503, None) }
        })
        .await;
        assert_eq!((calls, retries), (3, 2));
        assert_eq!(out.unwrap().status, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_before_a_wait_that_passes_the_deadline() {
        let p = RetryConfig {
            deadline: Some(Duration::from_secs(5)),
            ..policy(5)
        };
        let mut budgets = Vec::new();
        let (out, retries) = run(&p, |budget| {
            budgets.push(budget);
            async { answer(429, Some(2)) }
        })
        .await;
        // Waits of 2s at t=0 and t=2; the third (t=4 -> 6) would pass the 5s deadline.
        assert_eq!(retries, 2);
        assert_eq!(out.unwrap().status, 429);
        assert_eq!(
            budgets,
            vec![
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(1))
            ]
        );
    }
}
