//! `deja eval --pairs`: labelled pairs (`{"a","b","same_answer"}` per line, optional `lang` and
//! `category`), each judged once, then served and wrong rates over a sweep of thresholds.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{EvalError, Prompt, Verdict, embed_all, judge, parse_jsonl};
use crate::cache::guard::Guard;
use crate::embedding::{Embedded, Embedder};

/// One labelled pair after judging.
#[derive(Debug, Clone)]
pub struct Judged {
    /// Whether B's answer is right for A.
    pub same_answer: bool,
    /// `lang` label, if given.
    pub lang: Option<String>,
    /// `category` label, if given.
    pub category: Option<String>,
    /// What the tier would do with it.
    pub verdict: Verdict,
}

/// Rates at one threshold.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Rates {
    /// Cosine threshold.
    pub threshold: f32,
    /// Share of all pairs served from cache.
    pub served: f32,
    /// Share of look-alike traps served (wrong answers): the false-hit rate.
    pub wrong: f32,
    /// Share of served pairs that were right.
    pub precision: f32,
    /// Share of same-answer pairs served.
    pub recall: f32,
}

/// Reads labelled pairs from JSONL text.
pub fn parse(path: &str, text: &str) -> Result<Vec<(Prompt, Prompt, Labels)>, EvalError> {
    parse_jsonl(path, text, |row, error| {
        let prompt = |field: &str| {
            let value = row
                .get(field)
                .ok_or_else(|| error(format!("missing \"{field}\"")))?;
            Prompt::from_json(value).map_err(|m| error(format!("\"{field}\": {m}")))
        };
        let (a, b) = (prompt("a")?, prompt("b")?);
        let same_answer = row
            .get("same_answer")
            .and_then(Value::as_bool)
            .ok_or_else(|| error("\"same_answer\" must be true or false".to_owned()))?;
        let label = |field: &str| row.get(field).and_then(Value::as_str).map(str::to_owned);
        Ok((
            a,
            b,
            Labels {
                same_answer,
                lang: label("lang"),
                category: label("category"),
                topic: label("topic"),
            },
        ))
    })
}

/// The labels of a pair.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Whether B's answer is right for A.
    pub same_answer: bool,
    /// Language label.
    pub lang: Option<String>,
    /// Category label.
    pub category: Option<String>,
    /// Topic label: what a split by topic splits on.
    pub topic: Option<String>,
}

/// Embeds every pair's final texts, A then B, once for every use of them.
pub fn embed_pairs(
    embedder: &dyn Embedder,
    pairs: &[(Prompt, Prompt, Labels)],
    progress: impl FnMut(usize),
) -> Result<Vec<Embedded>, EvalError> {
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|(a, b, _)| [a, b])
        .map(|p| p.text.as_deref().unwrap_or(""))
        .collect();
    Ok(embed_all(embedder, &texts, progress)?)
}

/// Embeds every pair's final texts and judges each pair under `guards`.
pub fn judge_all(
    embedder: &dyn Embedder,
    guards: &[Guard],
    max_unknown: f32,
    pairs: &[(Prompt, Prompt, Labels)],
    progress: impl FnMut(usize),
) -> Result<Vec<Judged>, EvalError> {
    let embedded = embed_pairs(embedder, pairs, progress)?;
    Ok(judge_embedded(guards, max_unknown, pairs, &embedded))
}

/// Judges each pair under `guards`, given [`embed_pairs`]' embeddings.
pub fn judge_embedded(
    guards: &[Guard],
    max_unknown: f32,
    pairs: &[(Prompt, Prompt, Labels)],
    embedded: &[Embedded],
) -> Vec<Judged> {
    pairs
        .iter()
        .zip(embedded.chunks(2))
        .map(|((a, b, labels), e)| Judged {
            same_answer: labels.same_answer,
            lang: labels.lang.clone(),
            category: labels.category.clone(),
            verdict: judge(guards, max_unknown, (a, e.first()), (b, e.get(1))),
        })
        .collect()
}

/// Rates of `pairs` at `threshold`.
pub fn rates<'a>(pairs: impl IntoIterator<Item = &'a Judged>, threshold: f32) -> Rates {
    let (mut same, mut traps, mut right, mut wrong) = (0usize, 0usize, 0usize, 0usize);
    for p in pairs {
        let served = p.verdict.served_at(threshold);
        match p.same_answer {
            true => {
                same += 1;
                right += usize::from(served);
            }
            false => {
                traps += 1;
                wrong += usize::from(served);
            }
        }
    }
    let share = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f32 / of as f32 };
    Rates {
        threshold,
        served: share(right + wrong, same + traps),
        wrong: share(wrong, traps),
        precision: if right + wrong == 0 {
            1.0
        } else {
            share(right, right + wrong)
        },
        recall: share(right, same),
    }
}

/// The lowest threshold of `sweep` whose wrong rate is at most `max_wrong`.
pub fn lowest_meeting(sweep: &[Rates], max_wrong: f32) -> Option<Rates> {
    sweep
        .iter()
        .filter(|r| r.wrong <= max_wrong)
        .min_by(|a, b| a.threshold.total_cmp(&b.threshold))
        .copied()
}

/// Pairs grouped by a label (`"all"` for every pair).
pub fn groups(
    pairs: &[Judged],
    label: impl Fn(&Judged) -> Option<&str>,
) -> BTreeMap<String, Vec<&Judged>> {
    let mut out: BTreeMap<String, Vec<&Judged>> = BTreeMap::new();
    for p in pairs {
        out.entry(label(p).unwrap_or("unlabelled").to_owned())
            .or_default()
            .push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(same_answer: bool, similarity: f32, refused: bool) -> Judged {
        Judged {
            same_answer,
            lang: None,
            category: None,
            verdict: Verdict::Candidate {
                similarity,
                refused_by: refused.then_some(Guard::Numbers),
            },
        }
    }

    #[test]
    fn rates_count_served_pairs_by_label() {
        let pairs = [
            judged(true, 0.95, false),
            judged(true, 0.85, false),
            judged(true, 0.99, true),
            judged(false, 0.97, false),
            judged(false, 0.99, true),
            Judged {
                verdict: Verdict::Never,
                ..judged(false, 0.0, false)
            },
        ];
        let at_90 = rates(&pairs, 0.90);
        assert_eq!((at_90.recall, at_90.wrong), (1.0 / 3.0, 1.0 / 3.0));
        assert_eq!(at_90.precision, 0.5);
        assert_eq!(at_90.served, 2.0 / 6.0);
        let sweep: Vec<Rates> = [0.80, 0.90, 0.96, 0.98]
            .iter()
            .map(|t| rates(&pairs, *t))
            .collect();
        assert_eq!(lowest_meeting(&sweep, 0.0).map(|r| r.threshold), Some(0.98));
        assert_eq!(lowest_meeting(&sweep, 0.5).map(|r| r.threshold), Some(0.80));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse(
            "p.jsonl",
            "{\"a\":\"x\",\"b\":\"y\",\"same_answer\":true}\n{\"a\":1}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("p.jsonl:2: \"a\": a prompt is"), "{err}");
        let err = parse("p.jsonl", "{\"a\":\"x\",\"b\":\"y\"}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("same_answer"), "{err}");
    }
}
