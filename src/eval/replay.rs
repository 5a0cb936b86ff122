//! `deja eval --replay`: prompts in the order they arrived (one per line: a string, or
//! `{"prompt": "..."}`, or `{"messages": [...]}`), run through a simulated cache for each
//! candidate threshold and guard set, as deja's lookup does it: exact repeats hit; otherwise the
//! most similar stored prompt of the same partition is served if it clears the threshold and the
//! guards; a miss is stored.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{EvalError, Prompt, Verdict, cosine, embed_all, judge, parse_jsonl};
use crate::cache::guard::Guard;
use crate::cache::verifier::{Side, Verifier};
use crate::embedding::{Embedded, Embedder};

/// Hit rates of one guard set at one threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayRates {
    /// Guard set, such as `none` or `numbers+negation+content`.
    pub guards: String,
    /// Cosine threshold.
    pub threshold: f32,
    /// Share of prompts answered from cache (exact or semantic).
    pub hit_rate: f32,
    /// Share of prompts answered by the semantic tier.
    pub semantic_rate: f32,
}

/// Reads the prompts of a replay file.
pub fn parse(path: &str, text: &str) -> Result<Vec<Prompt>, EvalError> {
    parse_jsonl(path, text, |row, error| {
        let prompt = match row {
            Value::Object(o) => o
                .get("messages")
                .or_else(|| o.get("prompt"))
                .ok_or_else(|| error("expected \"prompt\" or \"messages\"".to_owned()))?,
            other => other,
        };
        Prompt::from_json(prompt).map_err(error)
    })
}

/// The guard sets a replay compares: none, each guard alone, and `configured`.
pub fn guard_sets(configured: &[Guard]) -> Vec<Vec<Guard>> {
    let mut sets = vec![Vec::new()];
    sets.extend(Guard::all().into_iter().map(|g| vec![g]));
    if configured.len() > 1 {
        sets.push(configured.to_vec());
    }
    sets
}

/// Label of a guard set.
pub fn label(guards: &[Guard]) -> String {
    if guards.is_empty() {
        return "none".to_owned();
    }
    guards
        .iter()
        .map(|g| g.label())
        .collect::<Vec<_>>()
        .join("+")
}

/// Embeds every prompt's final text, once for every replay of them.
pub fn embed_prompts(
    embedder: &dyn Embedder,
    prompts: &[Prompt],
    progress: impl FnMut(usize),
) -> Result<Vec<Embedded>, EvalError> {
    let texts: Vec<&str> = prompts.iter().map(text).collect();
    Ok(embed_all(embedder, &texts, progress)?)
}

fn text(p: &Prompt) -> &str {
    p.text.as_deref().unwrap_or("")
}

/// For each prompt, the earlier prompts of its partition at or above `lowest`.
fn close_earlier(prompts: &[Prompt], embedded: &[Embedded], lowest: f32) -> Vec<Vec<(usize, f32)>> {
    (0..prompts.len())
        .map(|i| {
            (0..i)
                .filter(|&j| prompts[j].partition == prompts[i].partition)
                .map(|j| (j, cosine(&embedded[i].vector, &embedded[j].vector)))
                .filter(|(_, s)| *s >= lowest)
                .collect()
        })
        .collect()
}

/// Replays `prompts` (embedded by [`embed_prompts`]) for every guard set and threshold.
pub fn replay(
    max_unknown: f32,
    (prompts, embedded): (&[Prompt], &[Embedded]),
    sets: &[Vec<Guard>],
    thresholds: &[f32],
) -> Vec<ReplayRates> {
    let lowest = thresholds.iter().copied().fold(1.0f32, f32::min);
    // For each prompt, the earlier prompts close enough to matter at any threshold.
    let close = close_earlier(prompts, embedded, lowest);
    let mut out = Vec::new();
    for guards in sets {
        let mut verdicts: HashMap<(usize, usize), Verdict> = HashMap::new();
        for &threshold in thresholds {
            let (hits, semantic) = simulate(prompts, &close, threshold, |i, j| {
                *verdicts.entry((i, j)).or_insert_with(|| {
                    judge(
                        guards,
                        max_unknown,
                        (&prompts[i], Some(&embedded[i])),
                        (&prompts[j], Some(&embedded[j])),
                    )
                })
            });
            let share = |n: usize| n as f32 / prompts.len().max(1) as f32;
            out.push(ReplayRates {
                guards: label(guards),
                threshold,
                hit_rate: share(hits),
                semantic_rate: share(semantic),
            });
        }
    }
    out
}

/// Hit rates with the verifier deciding, at one `max_wrong`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifiedRates {
    /// The route setting replayed.
    pub max_wrong: f32,
    /// The verifier's cut it gives.
    pub cut: f32,
    /// Share of prompts answered from cache (exact or semantic).
    pub hit_rate: f32,
    /// Share of prompts answered by the semantic tier.
    pub semantic_rate: f32,
}

/// Replays `prompts` (embedded by [`embed_prompts`]) with the verifier deciding on candidates
/// at or above `floor`, for each of `max_wrongs`.
pub fn replay_verified(
    max_unknown: f32,
    (prompts, embedded): (&[Prompt], &[Embedded]),
    verifier: &Verifier,
    floor: f32,
    max_wrongs: &[f32],
) -> Vec<VerifiedRates> {
    let known = |i: usize| embedded[i].unknown_ratio <= max_unknown && prompts[i].text.is_some();
    let close = close_earlier(prompts, embedded, floor);
    let mut scores: HashMap<(usize, usize), f32> = HashMap::new();
    let mut out = Vec::new();
    for &max_wrong in max_wrongs {
        let cut = verifier.cut(max_wrong);
        let (hits, semantic) = simulate(prompts, &close, floor, |i, j| {
            if !known(i) || !known(j) {
                return Verdict::Never;
            }
            let score = *scores.entry((i, j)).or_insert_with(|| {
                let side = |k: usize| Side {
                    text: text(&prompts[k]),
                    vector: &embedded[k].vector,
                    tokens: &embedded[k].tokens,
                };
                verifier.score(&side(i), &side(j))
            });
            if score > cut {
                Verdict::Candidate {
                    similarity: 1.0,
                    refused_by: None,
                }
            } else {
                Verdict::Never
            }
        });
        let share = |n: usize| n as f32 / prompts.len().max(1) as f32;
        out.push(VerifiedRates {
            max_wrong,
            cut,
            hit_rate: share(hits),
            semantic_rate: share(semantic),
        });
    }
    out
}

/// (hits, semantic hits) of one run through an empty cache.
fn simulate(
    prompts: &[Prompt],
    close: &[Vec<(usize, f32)>],
    threshold: f32,
    mut verdict: impl FnMut(usize, usize) -> Verdict,
) -> (usize, usize) {
    let mut stored = vec![false; prompts.len()];
    let (mut hits, mut semantic) = (0, 0);
    for i in 0..prompts.len() {
        let repeat = close[i].iter().any(|&(j, _)| {
            stored[j] && prompts[i].text.is_some() && prompts[j].text == prompts[i].text
        });
        if repeat {
            hits += 1;
            continue;
        }
        let best = close[i]
            .iter()
            .filter(|&&(j, s)| stored[j] && s >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let served = best.is_some_and(|&(j, _)| verdict(i, j).served_at(threshold));
        if served {
            hits += 1;
            semantic += 1;
        } else {
            stored[i] = true;
        }
    }
    (hits, semantic)
}
