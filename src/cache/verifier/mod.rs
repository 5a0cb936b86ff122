//! The hit verifier: decides whether a semantic candidate may be served, from the two prompts
//! themselves (`features`) rather than from word lists. Boosted trees trained offline by
//! `deja verifier train` scores the pair; a route's `cache.max_wrong` becomes a cut on that
//! score through the scores the verifier gave held-out look-alike traps (`calibration`), so
//! the setting means the share of traps a route accepts being served.

pub mod features;
mod grams;
pub mod train;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use features::{COUNT, NAMES, Side, features};

/// A trained verifier as stored under `models/verifier/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Weights {
    /// The embedding model whose states it reads.
    pub model: String,
    /// Feature names, in order (checked against [`NAMES`] at load).
    pub features: Vec<String>,
    /// What kind of model `boosted` is (for readers of the file).
    pub model_kind: String,
    /// The model.
    pub boosted: Boosted,
    /// Lowest cosine of a candidate it was trained and calibrated on: the candidate floor.
    pub floor: f32,
    /// What it was trained on.
    pub training: Training,
    /// Per language, held-out scores (cross-validated by topic) that turn a wrong-answer rate
    /// into a cut on the score.
    pub calibration: BTreeMap<String, Calibration>,
}

/// Gradient-boosted trees on the log-odds of "same answer".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Boosted {
    /// Starting log-odds.
    pub base: f32,
    /// Each tree's nodes; the first is its root.
    pub trees: Vec<Vec<Node>>,
}

/// A split (`feature` set) or a leaf.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Node {
    /// Feature tested; `None` in a leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<u16>,
    /// Go left when the feature is at most this.
    #[serde(default)]
    pub threshold: f32,
    /// Left child.
    #[serde(default)]
    pub left: u32,
    /// Right child.
    #[serde(default)]
    pub right: u32,
    /// A leaf's contribution to the log-odds.
    #[serde(default)]
    pub value: f32,
}

impl Node {
    /// A leaf adding `value`.
    pub fn leaf(value: f32) -> Self {
        Self {
            feature: None,
            threshold: 0.0,
            left: 0,
            right: 0,
            value,
        }
    }
}

/// One tree's contribution for features `x` (a malformed tree contributes what it reached).
pub fn value(tree: &[Node], x: &[f32; COUNT]) -> f32 {
    let mut at = 0usize;
    // A tree deeper than its node count is malformed: the bound stops a cycle.
    for _ in 0..tree.len() {
        let Some(node) = tree.get(at) else { return 0.0 };
        match node.feature {
            None => return node.value,
            Some(f) => {
                let v = x.get(usize::from(f)).copied().unwrap_or(0.0);
                at = if v <= node.threshold {
                    node.left
                } else {
                    node.right
                } as usize;
            }
        }
    }
    0.0
}

impl Boosted {
    /// Probability of "same answer" for features `x`.
    pub fn score(&self, x: &[f32; COUNT]) -> f32 {
        let z = self.base + self.trees.iter().map(|t| value(t, x)).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// The training data's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Training {
    /// Files, as given.
    pub files: Vec<String>,
    /// SHA-256 of their contents, in the order given.
    pub sha256: String,
    /// Labelled pairs read.
    pub pairs: usize,
    /// Topics (folds of the cross-validation).
    pub topics: Vec<String>,
}

/// Held-out scores of one language.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Calibration {
    /// Traps in all, including those below the floor (never candidates).
    pub traps: usize,
    /// Same-answer pairs in all.
    pub same: usize,
    /// Scores of the traps at or above the floor, highest first.
    pub trap_scores: Vec<f32>,
    /// Scores of the same-answer pairs at or above the floor, highest first.
    pub same_scores: Vec<f32>,
}

impl Calibration {
    /// The score a candidate must exceed so that at most `max_wrong` of the traps are served.
    pub fn cut(&self, max_wrong: f32) -> f32 {
        // The small epsilon keeps 0.01 of 200 at 2: 0.01f32 is a hair below 0.01.
        let allowed = (f64::from(max_wrong) * self.traps as f64 + 1e-6).floor() as usize;
        self.trap_scores.get(allowed).copied().unwrap_or(0.0)
    }

    /// Share of same-answer pairs served at `cut`.
    pub fn served_at(&self, cut: f32) -> f32 {
        let served = self.same_scores.iter().filter(|s| **s > cut).count();
        served as f32 / self.same.max(1) as f32
    }
}

/// Why a verifier file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// Unreadable or not the format.
    #[error("verifier weights {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A loaded verifier.
#[derive(Debug, Clone)]
pub struct Verifier {
    weights: Weights,
}

impl Verifier {
    /// Loads and checks a weights file for `model`.
    pub fn load(path: &Path, model: &str) -> Result<Self, VerifierError> {
        let error = |message: String| VerifierError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let weights: Weights = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        Self::new(weights, model).map_err(error)
    }

    /// Checks `weights` fit this build's features and `model`.
    pub fn new(weights: Weights, model: &str) -> Result<Self, String> {
        if weights.model != model {
            return Err(format!("trained for model {}, not {model}", weights.model));
        }
        let names: Vec<&str> = weights.features.iter().map(String::as_str).collect();
        let in_range = weights
            .boosted
            .trees
            .iter()
            .flatten()
            .all(|n| n.feature.is_none_or(|f| usize::from(f) < COUNT));
        if names != NAMES || !in_range {
            return Err(
                "its features are not this build's; retrain with `deja verifier train`".to_owned(),
            );
        }
        if weights.calibration.is_empty() {
            return Err("it has no calibration".to_owned());
        }
        Ok(Self { weights })
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Probability (0..1) that `stored`'s answer answers `asked`.
    pub fn score(&self, asked: &Side<'_>, stored: &Side<'_>) -> f32 {
        self.score_features(&features(asked, stored))
    }

    /// The probability for precomputed features.
    pub fn score_features(&self, x: &[f32; COUNT]) -> f32 {
        self.weights.boosted.score(x)
    }

    /// The cut for a route accepting `max_wrong` of look-alikes served: the strictest of the
    /// languages' cuts, so the rate holds in each.
    pub fn cut(&self, max_wrong: f32) -> f32 {
        self.weights
            .calibration
            .values()
            .map(|c| c.cut(max_wrong))
            .fold(0.0, f32::max)
    }

    /// The candidate floor it was calibrated with.
    pub fn floor(&self) -> f32 {
        self.weights.floor
    }

    /// The floor for a route's (or a caller's) `threshold`: below the calibrated floor the
    /// verifier never saw a candidate, so a lower threshold is lifted to it.
    pub fn floor_for(&self, threshold: Option<f32>) -> f32 {
        threshold.map_or(self.floor(), |t| t.max(self.floor()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_lets_through_at_most_the_share_of_traps_asked() {
        let c = Calibration {
            traps: 200,
            same: 100,
            trap_scores: vec![0.9, 0.8, 0.7, 0.2],
            same_scores: vec![0.99, 0.95, 0.85, 0.75],
        };
        // 1% of 200 traps is 2: the two highest traps pass, the cut is the third.
        assert_eq!(c.cut(0.01), 0.7);
        assert_eq!(c.cut(0.0), 0.9);
        assert_eq!(c.cut(0.5), 0.0);
        assert_eq!(c.served_at(0.8), 0.03);
    }
}
