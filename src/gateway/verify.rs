//! Online verification of semantic hits: a sampled share of them is also asked upstream, in the
//! background, and the fresh answer compared with the cached one by embedding similarity, so each
//! route's live false-hit rate is a number on `/metrics`. A token bucket over all routes bounds
//! the extra provider calls.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::config::RetryConfig;
use crate::policy::Target;
use crate::state::AppState;
use crate::upstream::{AnswerBody, UpstreamCall};

/// One POST of `body` to `target`'s chat completions for deja's own purposes (a verification,
/// a judge's verdict): a single try, since a measurement is not worth retries on the
/// provider's bill. The whole answer whatever its status; `None` when none came (or it
/// streamed).
pub(super) async fn ask_once(
    state: &AppState,
    route: &str,
    target: &Target,
    body: Bytes,
    timeout: Duration,
) -> Option<(http::StatusCode, Bytes)> {
    let retry = RetryConfig {
        attempts: 0,
        ..RetryConfig::default()
    };
    let forwarded = state
        .forwarder
        .send(UpstreamCall {
            route,
            path: "/chat/completions",
            body: Some(body),
            stream: false,
            timeout,
            retry: &retry,
            auth: target.auth.as_ref(),
            base_url: &target.base_url,
            wire: &target.wire,
        })
        .await;
    let answer = forwarded.result.ok()?;
    let AnswerBody::Full(body) = answer.body else {
        return None;
    };
    Some((answer.status, body))
}

/// At most `rate` verifications a second, with bursts of at most `max(1, rate)`.
pub struct VerifyBudget {
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl VerifyBudget {
    /// A budget refilling at `rate` a second, starting full.
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            bucket: Mutex::new((rate.max(1.0), Instant::now())),
        }
    }

    /// Takes one verification from the budget, if there is one.
    pub fn take(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = *bucket;
        let now = Instant::now();
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            true
        } else {
            *bucket = (refilled, now);
            false
        }
    }
}

/// What verification is asked to check: the request as the client sent it and the answer served.
pub(super) struct Sample {
    pub route: String,
    pub request: Value,
    pub served: Bytes,
    /// Exact key of the request, for the log.
    pub asked_id: String,
    /// Where the request would have gone first, with its credential.
    pub target: Option<crate::policy::Target>,
}

/// Decides whether this hit is verified (the route's sample rate, then the budget) and, if so,
/// verifies it on a task of its own.
pub(super) fn maybe_verify(state: &AppState, sample_rate: f64, sample: impl FnOnce() -> Sample) {
    if sample_rate <= 0.0 || rand::random::<f64>() >= sample_rate {
        return;
    }
    let sample = sample();
    if !state.verify_budget.take() {
        state.metrics.semantic_verified(&sample.route, "skipped");
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let result = verify(&state, &sample).await;
        state.metrics.semantic_verified(&sample.route, result);
    });
}

async fn verify(state: &AppState, sample: &Sample) -> &'static str {
    let mut request = sample.request.clone();
    if let Some(object) = request.as_object_mut() {
        object.remove("stream");
        object.remove("stream_options");
    }
    let Some(target) = &sample.target else {
        return "error";
    };
    // The same body the target would have been sent (its override_params laid over).
    let Ok(body) = super::strategy::with_params(&Bytes::from(request.to_string()), &target.params)
    else {
        return "error";
    };
    let Some((status, fresh)) = ask_once(state, &sample.route, target, body, target.timeout).await
    else {
        return "error";
    };
    if !status.is_success() {
        return "error";
    }
    let (Some(served), Some(fresh), Some(tier)) = (
        answer_text(&sample.served),
        answer_text(&fresh),
        state.cache.semantic(),
    ) else {
        return "error";
    };
    let (Ok(a), Ok(b)) = (tier.embed(&served).await, tier.embed(&fresh).await) else {
        return "error";
    };
    let similarity = crate::eval::cosine(&a.vector, &b.vector);
    if similarity >= state.config.cache.verify_min_similarity {
        "agree"
    } else {
        tracing::warn!(route = %sample.route, asked = %sample.asked_id, similarity,
            "verification: the cached answer disagrees with a fresh one");
        "disagree"
    }
}

/// The first choice's message content.
fn answer_text(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    json.pointer("/choices/0/message/content")?
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_its_rate_and_no_more() {
        let budget = VerifyBudget::new(2.0);
        assert!(budget.take() && budget.take());
        assert!(!budget.take(), "a burst is at most the rate");
        let off = VerifyBudget::new(0.0);
        assert!(!off.take());
        let slow = VerifyBudget::new(0.5);
        assert!(slow.take());
        assert!(!slow.take());
    }
}
