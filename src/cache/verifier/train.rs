//! Training a verifier (`deja verifier train`): features of labelled pairs, gradient-boosted
//! trees on them, and calibration from scores each topic got from a model that
//! never saw that topic (cross-validation by topic), so the cut for a wrong-answer rate is read
//! on wording the model did not fit.

use std::collections::{BTreeMap, BTreeSet};

use super::{Boosted, COUNT, Calibration, NAMES, Node, Training, Weights, value};

/// One labelled candidate pair, reduced to what training needs.
#[derive(Debug, Clone)]
pub struct Example {
    /// Its features.
    pub x: [f32; COUNT],
    /// Whether the stored answer answers the asked question.
    pub same: bool,
    /// Language label.
    pub lang: String,
    /// Topic label (the unit of the cross-validation).
    pub topic: String,
    /// Whether it counts in the calibration: look-alikes and same-answer pairs do; unrelated
    /// questions teach the model but would dilute what `max_wrong` means.
    pub calibrates: bool,
}

impl Example {
    /// The pooled cosine (the first feature).
    pub fn cosine(&self) -> f32 {
        self.x[0]
    }
}

/// Boosting rounds.
const ROUNDS: usize = 200;
/// Shrinkage of each tree.
const RATE: f32 = 0.05;
/// Depth of each tree: interactions of three features (a high cosine *and* one unmatched name).
const DEPTH: usize = 3;
/// Fewest examples in a leaf.
const MIN_LEAF: usize = 20;
/// L2 on leaf values.
const LAMBDA: f64 = 1.0;

/// Fits gradient-boosted trees on the log loss of `examples`.
pub fn fit(examples: &[&Example]) -> Boosted {
    let n = examples.len().max(1);
    let positives = examples.iter().filter(|e| e.same).count();
    let p0 = (positives as f64 / n as f64).clamp(0.01, 0.99);
    let base = (p0 / (1.0 - p0)).ln() as f32;
    let mut margin = vec![base; examples.len()];
    let mut trees = Vec::with_capacity(ROUNDS);
    // Each feature's examples in ascending order, sorted once.
    let order: Vec<Vec<usize>> = (0..COUNT)
        .map(|f| {
            let mut idx: Vec<usize> = (0..examples.len()).collect();
            idx.sort_by(|a, b| examples[*a].x[f].total_cmp(&examples[*b].x[f]));
            idx
        })
        .collect();
    for _ in 0..ROUNDS {
        let (grad, hess): (Vec<f64>, Vec<f64>) = examples
            .iter()
            .zip(&margin)
            .map(|(e, m)| {
                let p = 1.0 / (1.0 + (-f64::from(*m)).exp());
                (
                    p - if e.same { 1.0 } else { 0.0 },
                    (p * (1.0 - p)).max(1e-6),
                )
            })
            .unzip();
        let mut tree = Vec::new();
        let members = vec![true; examples.len()];
        grow(examples, &order, &grad, &hess, &members, 0, &mut tree);
        for (m, e) in margin.iter_mut().zip(examples) {
            *m += value(&tree, &e.x);
        }
        trees.push(tree);
    }
    Boosted { base, trees }
}

/// Grows the node for the examples in `members`; returns its index in `tree`.
fn grow(
    examples: &[&Example],
    order: &[Vec<usize>],
    grad: &[f64],
    hess: &[f64],
    members: &[bool],
    depth: usize,
    tree: &mut Vec<Node>,
) -> u32 {
    let (g, h, count) = (0..examples.len())
        .filter(|i| members[*i])
        .fold((0.0, 0.0, 0usize), |(g, h, c), i| {
            (g + grad[i], h + hess[i], c + 1)
        });
    let at = tree.len();
    tree.push(Node::leaf((-g / (h + LAMBDA)) as f32 * RATE));
    if depth >= DEPTH || count < 2 * MIN_LEAF {
        return at as u32;
    }
    let parent = g * g / (h + LAMBDA);
    let mut best: Option<(f64, usize, f32)> = None;
    for (feature, sorted) in order.iter().enumerate() {
        let (mut gl, mut hl, mut left) = (0.0, 0.0, 0usize);
        let rows: Vec<usize> = sorted.iter().copied().filter(|i| members[*i]).collect();
        for w in rows.windows(2) {
            let (i, next) = (w[0], w[1]);
            gl += grad[i];
            hl += hess[i];
            left += 1;
            let (x, x_next) = (examples[i].x[feature], examples[next].x[feature]);
            if x == x_next || left < MIN_LEAF || count - left < MIN_LEAF {
                continue;
            }
            let (gr, hr) = (g - gl, h - hl);
            let gain = gl * gl / (hl + LAMBDA) + gr * gr / (hr + LAMBDA) - parent;
            if best.is_none_or(|b| gain > b.0) {
                best = Some((gain, feature, (x + x_next) / 2.0));
            }
        }
    }
    let Some((gain, feature, threshold)) = best else {
        return at as u32;
    };
    if gain <= 1e-9 {
        return at as u32;
    }
    let goes_left = |i: usize| examples[i].x[feature] <= threshold;
    let left_members: Vec<bool> = (0..examples.len())
        .map(|i| members[i] && goes_left(i))
        .collect();
    let right_members: Vec<bool> = (0..examples.len())
        .map(|i| members[i] && !goes_left(i))
        .collect();
    let left = grow(examples, order, grad, hess, &left_members, depth + 1, tree);
    let right = grow(examples, order, grad, hess, &right_members, depth + 1, tree);
    tree[at] = Node {
        feature: Some(feature as u16),
        threshold,
        left,
        right,
        value: 0.0,
    };
    at as u32
}

/// Each example's score from a model fitted without its topic.
pub fn held_out_scores(examples: &[Example], floor: f32) -> Vec<f32> {
    let topics: BTreeSet<&str> = examples.iter().map(|e| e.topic.as_str()).collect();
    let mut scores = vec![0f32; examples.len()];
    for topic in topics {
        let train: Vec<&Example> = examples
            .iter()
            .filter(|e| e.topic != topic && e.cosine() >= floor)
            .collect();
        let model = fit(&train);
        for (i, e) in examples.iter().enumerate() {
            if e.topic == topic {
                scores[i] = model.score(&e.x);
            }
        }
    }
    scores
}

/// Per language: the held-out scores of the candidates at or above `floor`.
pub fn calibrate(
    examples: &[Example],
    scores: &[f32],
    floor: f32,
) -> BTreeMap<String, Calibration> {
    let mut out: BTreeMap<String, Calibration> = BTreeMap::new();
    for (e, s) in examples.iter().zip(scores).filter(|(e, _)| e.calibrates) {
        let c = out.entry(e.lang.clone()).or_default();
        let (count, list) = if e.same {
            (&mut c.same, &mut c.same_scores)
        } else {
            (&mut c.traps, &mut c.trap_scores)
        };
        *count += 1;
        if e.cosine() >= floor {
            list.push(*s);
        }
    }
    for c in out.values_mut() {
        c.trap_scores.sort_by(|a, b| b.total_cmp(a));
        c.same_scores.sort_by(|a, b| b.total_cmp(a));
    }
    out
}

/// Trains the verifier on every example and calibrates it by topic.
pub fn train(model: &str, examples: &[Example], floor: f32, training: Training) -> Weights {
    let scores = held_out_scores(examples, floor);
    let calibration = calibrate(examples, &scores, floor);
    let candidates: Vec<&Example> = examples.iter().filter(|e| e.cosine() >= floor).collect();
    let fitted = fit(&candidates);
    Weights {
        model: model.to_owned(),
        features: NAMES.iter().map(|n| (*n).to_owned()).collect(),
        model_kind: "boosted_trees".to_owned(),
        boosted: fitted,
        floor,
        training,
        calibration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(signal: f32, same: bool, topic: &str) -> Example {
        let mut x = [0.9f32; COUNT];
        x[3] = signal;
        Example {
            x,
            same,
            lang: "en".to_owned(),
            topic: topic.to_owned(),
            calibrates: true,
        }
    }

    #[test]
    fn a_separating_feature_is_learned_and_held_out_scores_follow_it() {
        let mut examples = Vec::new();
        for (i, topic) in ["a", "b", "c"].iter().enumerate() {
            for k in 0..20 {
                let jitter = (k + i) as f32 / 400.0;
                examples.push(example(0.95 + jitter, true, topic));
                examples.push(example(0.80 + jitter, false, topic));
            }
        }
        let scores = held_out_scores(&examples, 0.5);
        for (e, s) in examples.iter().zip(&scores) {
            assert_eq!(*s > 0.5, e.same, "{:?} scored {s}", e.x[3]);
        }
        let calibration = calibrate(&examples, &scores, 0.5);
        let en = &calibration["en"];
        assert_eq!((en.traps, en.same), (60, 60));
        assert_eq!(en.served_at(en.cut(0.0)), 1.0);
    }
}
