//! The grey zone's judge: a semantic candidate the verifier is unsure of is put to a small model
//! through the call's own first target ("do these two questions have the same answer? yes/no"),
//! within a per-route budget, with each verdict remembered for the pair. Anything but a clear
//! "yes" in time refuses the candidate: the judge can only let more hits through on its say-so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::verify::{VerifyBudget, ask_once};
use crate::config::{Config, JudgeConfig};
use crate::policy::Target;
use crate::state::AppState;

/// Verdicts remembered per route; past it the memory starts over (a verdict is cheap to ask
/// again, and the bound keeps a flood of distinct pairs from growing it).
const REMEMBERED: usize = 10_000;

const SYSTEM: &str = "You decide whether two user questions have the same answer: whether an \
answer written for the first would be a correct and complete answer to the second. Reply with \
one word: yes or no.";

/// Per route: its budget and the verdicts it has had.
pub struct Judges {
    routes: HashMap<String, RouteJudge>,
}

struct RouteJudge {
    budget: VerifyBudget,
    verdicts: Mutex<HashMap<[u8; 32], bool>>,
}

impl Judges {
    /// One budget and memory per route whose judge is on.
    pub fn new(config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .filter(|r| r.cache.judge.enabled)
            .map(|r| {
                let judge = RouteJudge {
                    budget: VerifyBudget::new(r.cache.judge.max_per_second),
                    verdicts: Mutex::new(HashMap::new()),
                };
                (r.name.clone(), judge)
            })
            .collect();
        Self { routes }
    }
}

/// What the judge was asked about.
pub(super) struct Question<'a> {
    pub route: &'a str,
    /// The request's cache partition: a verdict is remembered within it only, so one tenant's
    /// judge (on a host it chose) never answers for another's.
    pub partition: &'a str,
    pub judge: &'a JudgeConfig,
    /// The request's own model, the judge's when the route names none.
    pub model: &'a str,
    pub asked: &'a str,
    pub stored: &'a str,
    pub target: Option<&'a Target>,
}

/// What asking the judge cost a request, for its log row and analytics.
#[derive(Debug, Clone)]
pub struct JudgeCost {
    /// The model asked.
    pub model: String,
    /// Its answer's `usage.total_tokens` (0 when none came).
    pub tokens: u64,
    /// How long the request waited for it.
    pub took: Duration,
}

/// The verdict: `Ok(())` serves the candidate; `Err` names why not (`no`, `skipped`, `error`).
/// With it, what the call cost when the judge was asked (a remembered verdict or a spent budget
/// cost nothing).
pub(super) async fn decide(
    state: &AppState,
    q: &Question<'_>,
) -> (Result<(), &'static str>, Option<JudgeCost>) {
    let Some(judge) = state.judges.routes.get(q.route) else {
        return (Err("error"), None);
    };
    let key = pair_key(q);
    let remembered = lock(&judge.verdicts).get(&key).copied();
    if let Some(yes) = remembered {
        state.metrics.judge(q.route, "cached", None);
        return (if yes { Ok(()) } else { Err("no") }, None);
    }
    if !judge.budget.take() {
        state.metrics.judge(q.route, "skipped", None);
        return (Err("skipped"), None);
    }
    let started = Instant::now();
    let asked = tokio::time::timeout(q.judge.timeout, ask(state, q)).await;
    let took = started.elapsed();
    let (verdict, tokens) = asked.unwrap_or((None, 0));
    let label = match verdict {
        Some(true) => "yes",
        Some(false) => "no",
        None => "error",
    };
    state.metrics.judge(q.route, label, Some((tokens, took)));
    let cost = Some(JudgeCost {
        model: judge_model(q).to_owned(),
        tokens,
        took,
    });
    let Some(yes) = verdict else {
        return (Err("error"), cost);
    };
    let mut verdicts = lock(&judge.verdicts);
    if verdicts.len() >= REMEMBERED {
        verdicts.clear();
    }
    verdicts.insert(key, yes);
    (if yes { Ok(()) } else { Err("no") }, cost)
}

/// The route's judge model, else the request's own.
fn judge_model<'q>(q: &Question<'q>) -> &'q str {
    q.judge.model.as_deref().unwrap_or(q.model)
}

/// One call, no retries: the verdict (`None` when no clear one came) and the tokens the call
/// cost, which a provider charges for whatever it answered.
async fn ask(state: &AppState, q: &Question<'_>) -> (Option<bool>, u64) {
    let Some((target, body)) = q.target.and_then(|t| Some((t, request_body(q, t)?))) else {
        return (None, 0);
    };
    let Some((status, body)) = ask_once(state, q.route, target, body, q.judge.timeout).await else {
        return (None, 0);
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return (None, 0);
    };
    let tokens = json
        .pointer("/usage/total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let verdict = status
        .is_success()
        .then(|| json.pointer("/choices/0/message/content")?.as_str())
        .flatten()
        .and_then(verdict_of);
    (verdict, tokens)
}

/// The judge's request as the target takes it.
fn request_body(q: &Question<'_>, target: &Target) -> Option<Bytes> {
    let model = judge_model(q);
    let request = json!({
        "model": model,
        "temperature": 0,
        "max_tokens": 3,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": format!(
                "First question:\n{}\n\nSecond question:\n{}\n\nDo these two questions have the same answer? yes/no",
                q.stored, q.asked
            )},
        ],
    });
    let mut body =
        super::strategy::with_params(&Bytes::from(request.to_string()), &target.params).ok()?;
    if q.judge.model.is_some() {
        // The route's judge model wins over a target's override of the model.
        let mut json: Value = serde_json::from_slice(&body).ok()?;
        json["model"] = Value::String(model.to_owned());
        body = Bytes::from(json.to_string());
    }
    Some(body)
}

/// "yes" / "no" (either case, with punctuation), 是 / 否 / 不是; anything else is no verdict.
fn verdict_of(text: &str) -> Option<bool> {
    let word: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    match word.as_str() {
        "yes" | "是" | "是的" => Some(true),
        "no" | "否" | "不是" | "不" => Some(false),
        _ => None,
    }
}

fn pair_key(q: &Question<'_>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [q.route, q.partition, q.model, q.stored, q.asked] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::verdict_of;

    #[test]
    fn only_a_clear_yes_or_no_is_a_verdict() {
        assert_eq!(verdict_of("Yes."), Some(true));
        assert_eq!(verdict_of(" no"), Some(false));
        assert_eq!(verdict_of("是的"), Some(true));
        assert_eq!(verdict_of("不是。"), Some(false));
        assert_eq!(verdict_of("Maybe"), None);
        assert_eq!(verdict_of("yesterday"), None);
        assert_eq!(verdict_of(""), None);
    }
}
