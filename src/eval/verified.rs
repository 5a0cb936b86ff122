//! The verifier measured on labelled pairs (`deja eval --pairs`) and trained on them
//! (`deja verifier train`): each pair embedded once with its word-piece states, reduced to the
//! verifier's features, then served or refused at a route's operating point. Figures carry
//! 95% Wilson intervals: a rate on a few dozen traps is a handful of pairs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::pairs::{self, Labels};
use super::{EvalError, Prompt};
use crate::cache::guard::Guard;
use crate::cache::verifier::train::{self, Example};
use crate::cache::verifier::{COUNT, Side, Training, Verifier, features};
use crate::embedding::{Embedded, Embedder, TokenStates};

/// A labelled pair and, when it could be a candidate at all (same partition, text the model
/// knows), its features.
#[derive(Debug, Clone)]
pub struct Featured {
    /// Its labels.
    pub labels: Labels,
    /// Features of serving B's answer to A.
    pub x: Option<[f32; COUNT]>,
}

/// Each pair's features, given [`pairs::embed_pairs`]' embeddings (with word-piece states).
pub fn featurize(
    max_unknown: f32,
    pairs: &[(Prompt, Prompt, Labels)],
    embedded: &[Embedded],
) -> Vec<Featured> {
    pairs
        .iter()
        .zip(embedded.chunks(2))
        .map(|((a, b, labels), e)| {
            let x = match (&a.text, &b.text, e) {
                (Some(ta), Some(tb), [ea, eb])
                    if a.partition == b.partition
                        && ea.unknown_ratio <= max_unknown
                        && eb.unknown_ratio <= max_unknown =>
                {
                    // The stored side as a lookup reads it back from Redis: quantised.
                    let stored = TokenStates::from_bytes(&eb.tokens.to_bytes()).unwrap_or_default();
                    let b = Side {
                        text: tb,
                        vector: &eb.vector,
                        tokens: &stored,
                    };
                    Some(features(&side(ta, ea), &b))
                }
                _ => None,
            };
            Featured {
                labels: labels.clone(),
                x,
            }
        })
        .collect()
}

fn side<'a>(text: &'a str, e: &'a Embedded) -> Side<'a> {
    Side {
        text,
        vector: &e.vector,
        tokens: &e.tokens,
    }
}

/// 95% Wilson score interval of `k` out of `n`.
pub fn wilson(k: usize, n: usize) -> (f32, f32) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z * z / n;
    (
        (((centre - half) / denom) as f32).max(0.0),
        (((centre + half) / denom) as f32).min(1.0),
    )
}

/// Served and wrong counts of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    /// Same-answer pairs.
    pub same: usize,
    /// Of them, served.
    pub served: usize,
    /// Traps.
    pub traps: usize,
    /// Of them, served (wrong answers).
    pub wrong: usize,
}

impl Counts {
    fn add(&mut self, same: bool, served: bool) {
        if same {
            self.same += 1;
            self.served += usize::from(served);
        } else {
            self.traps += 1;
            self.wrong += usize::from(served);
        }
    }

    /// "served 71.2% [67.0, 75.1] of 300, wrong 0.7% [0.2, 2.4] of 300".
    pub fn line(&self) -> String {
        let pct = |k: usize, n: usize| {
            let (lo, hi) = wilson(k, n);
            let p = if n == 0 { 0.0 } else { k as f32 / n as f32 };
            format!(
                "{:5.1}% [{:4.1}, {:4.1}] of {n:4}",
                p * 100.0,
                lo * 100.0,
                hi * 100.0
            )
        };
        format!(
            "served {}   wrong {}",
            pct(self.served, self.same),
            pct(self.wrong, self.traps)
        )
    }
}

/// How a pair is decided: by the verifier at a cut above a cosine floor, or by the old rule
/// (a cosine threshold and guards as vetoes).
#[derive(Debug, Clone, Copy)]
pub enum Rule<'v> {
    /// Candidates at or above `floor` whose score exceeds `cut`.
    Verifier {
        /// The verifier.
        verifier: &'v Verifier,
        /// Cosine floor.
        floor: f32,
        /// Score cut.
        cut: f32,
    },
    /// Candidates at or above `threshold` that no guard refuses.
    Guards {
        /// Cosine threshold.
        threshold: f32,
        /// Which guards veto (as in [`Guard::all`] order within the features).
        guards: &'v [Guard],
    },
}

impl Rule<'_> {
    /// Whether the pair is served.
    pub fn serves(&self, x: Option<&[f32; COUNT]>) -> bool {
        let Some(x) = x else { return false };
        match *self {
            Rule::Verifier {
                verifier,
                floor,
                cut,
            } => x[0] >= floor && verifier.score_features(x) > cut,
            Rule::Guards { threshold, guards } => {
                let vetoed = |g: &Guard| {
                    let i = Guard::all().iter().position(|a| a == g).unwrap_or(0);
                    x[11 + i] > 0.5
                };
                x[0] >= threshold && !guards.iter().any(vetoed)
            }
        }
    }
}

/// Counts per language and per language/category under `rule`.
pub fn tally(pairs: &[Featured], rule: &Rule<'_>) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for p in pairs {
        let served = rule.serves(p.x.as_ref());
        let lang = p.labels.lang.as_deref().unwrap_or("-");
        let category = p.labels.category.as_deref().unwrap_or("-");
        for key in [lang.to_owned(), format!("{lang}/{category}")] {
            out.entry(key)
                .or_default()
                .add(p.labels.same_answer, served);
        }
    }
    out
}

/// The report: the verifier at `max_wrong`, the old rule beside it, and the served/wrong curve.
pub fn report(
    pairs: &[Featured],
    verifier: &Verifier,
    floor: f32,
    max_wrong: f32,
    old: Rule<'_>,
) -> String {
    let cut = verifier.cut(max_wrong);
    let rule = Rule::Verifier {
        verifier,
        floor,
        cut,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verifier at max_wrong {max_wrong} (score > {cut:.3}, cosine floor {floor:.2}); 95% intervals"
    );
    for (group, counts) in tally(pairs, &rule) {
        let _ = writeln!(out, "  {group:24} {}", counts.line());
    }
    let _ = writeln!(out, "\nold rule ({}) on the same pairs", describe(&old));
    for (group, counts) in tally(pairs, &old) {
        if !group.contains('/') {
            let _ = writeln!(out, "  {group:24} {}", counts.line());
        }
    }
    let _ = writeln!(out, "\nserved/wrong by max_wrong (per language)");
    for w in [0.002f32, 0.005, 0.01, 0.02, 0.05, 0.1] {
        let cut = verifier.cut(w);
        let rule = Rule::Verifier {
            verifier,
            floor,
            cut,
        };
        let langs: Vec<String> = tally(pairs, &rule)
            .into_iter()
            .filter(|(g, _)| !g.contains('/'))
            .map(|(g, c)| {
                let share = |k: usize, n: usize| k as f32 / n.max(1) as f32 * 100.0;
                format!(
                    "{g} {:5.1}% / {:4.1}%",
                    share(c.served, c.same),
                    share(c.wrong, c.traps)
                )
            })
            .collect();
        let _ = writeln!(out, "  {w:<6} cut {cut:.3}  {}", langs.join("   "));
    }
    out
}

fn describe(rule: &Rule<'_>) -> String {
    match rule {
        Rule::Verifier { floor, cut, .. } => format!("verifier, floor {floor:.2}, cut {cut:.3}"),
        Rule::Guards { threshold, guards } => format!(
            "threshold {threshold:.2}, guards [{}]",
            guards
                .iter()
                .map(|g| g.label())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `deja verifier train`: reads the pair files, trains and calibrates, writes the weights.
pub fn train_files(
    embedder: &dyn Embedder,
    max_unknown: f32,
    files: &[PathBuf],
    floor: f32,
    out: &Path,
) -> Result<String, EvalError> {
    let mut hash = Sha256::new();
    let mut featured = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
            path: path.display().to_string(),
            source,
        })?;
        hash.update(text.as_bytes());
        let labelled = pairs::parse(&path.display().to_string(), &text)?;
        let embedded = pairs::embed_pairs(embedder, &labelled, |_| {})?;
        featured.extend(featurize(max_unknown, &labelled, &embedded));
    }
    let examples: Vec<Example> = featured
        .iter()
        .filter_map(|f| {
            Some(Example {
                x: f.x?,
                same: f.labels.same_answer,
                lang: f.labels.lang.clone().unwrap_or_else(|| "-".to_owned()),
                topic: f.labels.topic.clone().unwrap_or_else(|| "-".to_owned()),
                calibrates: f.labels.category.as_deref() != Some("unrelated"),
            })
        })
        .collect();
    let mut topics: Vec<String> = examples.iter().map(|e| e.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let training = Training {
        files: files.iter().map(|p| p.display().to_string()).collect(),
        sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        pairs: featured.len(),
        topics,
    };
    if let Ok(dump) = std::env::var("DEJA_VERIFIER_DUMP") {
        // For studying features offline: the training pairs' features and labels, never the
        // sealed test's.
        let lines: Vec<String> = examples
            .iter()
            .map(|e| {
                serde_json::json!({"x": e.x, "same": e.same, "lang": e.lang, "topic": e.topic})
                    .to_string()
            })
            .collect();
        std::fs::write(&dump, lines.join("\n"))
            .map_err(|e| EvalError::Output(format!("{dump}: {e}")))?;
    }
    let weights = train::train(embedder.model().slug(), &examples, floor, training);
    let verifier =
        Verifier::new(weights.clone(), embedder.model().slug()).map_err(EvalError::Output)?;
    let json =
        serde_json::to_string_pretty(&weights).map_err(|e| EvalError::Output(e.to_string()))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::Output(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(out, json + "\n")
        .map_err(|e| EvalError::Output(format!("{}: {e}", out.display())))?;
    let mut summary = format!(
        "trained on {} pairs ({} candidates at cosine >= {floor:.2}) from {} topics; wrote {}\n\
         held-out (by topic) served at each max_wrong:\n",
        weights.training.pairs,
        examples.iter().filter(|e| e.cosine() >= floor).count(),
        weights.training.topics.len(),
        out.display()
    );
    for w in [0.005f32, 0.01, 0.02, 0.05] {
        let cut = verifier.cut(w);
        let langs: Vec<String> = weights
            .calibration
            .iter()
            .map(|(lang, c)| format!("{lang} {:.1}%", c.served_at(cut) * 100.0))
            .collect();
        let _ = writeln!(summary, "  {w:<6} cut {cut:.3}  {}", langs.join("   "));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_the_formula() {
        let (lo, hi) = wilson(2, 200);
        assert!(
            (lo - 0.00275).abs() < 1e-4 && (hi - 0.0357).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(0, 40);
        assert!(lo.abs() < 1e-6 && (hi - 0.0876).abs() < 1e-3, "{hi}");
    }
}
