//! What the verifier reads from a pair of prompts: how each word piece of one aligns with the
//! other's (from the model's states before pooling), whether numbers align, the cosine of the
//! pooled vectors, word and character n-gram overlap, and the lexical guards' verdicts as
//! evidence.

use crate::cache::guard;
use crate::embedding::TokenStates;
use crate::embedding::tokens::{DIGIT, PUNCT};

/// One prompt as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The final user turn.
    pub text: &'a str,
    /// Its pooled, normalised embedding.
    pub vector: &'a [f32],
    /// Its word pieces' states (may be empty: then alignment falls back to the cosine).
    pub tokens: &'a TokenStates,
}

/// The features' names, in order; a weights file names the ones it was trained on.
pub const NAMES: [&str; 29] = [
    "cosine",
    "align_recall",
    "align_precision",
    "align_min_asked",
    "align_min_stored",
    "align_low2",
    "unaligned_asked",
    "unaligned_stored",
    "digits_unaligned",
    "digits_present",
    "length_ratio",
    "guard_numbers",
    "guard_negation",
    "guard_content",
    "word_overlap",
    "states_missing",
    "cosine_x_min",
    "loose_asked",
    "loose_stored",
    "loose_both",
    "words_only_asked",
    "words_only_stored",
    "words_common",
    "gram2_overlap",
    "gram2_only_asked",
    "gram2_only_stored",
    "gram3_overlap",
    "gram3_only_asked",
    "gram3_only_stored",
];

/// How many features.
pub const COUNT: usize = NAMES.len();

/// A piece whose best match on the other side is below this counts as unaligned.
const UNALIGNED: f32 = 0.9;
/// A piece matched below this has no near-identical counterpart.
const LOOSE: f32 = 0.95;
/// Two number pieces match only when nearly identical in context.
const DIGIT_MATCH: f32 = 0.97;

/// The features of serving `stored`'s answer to `asked`.
pub fn features(asked: &Side<'_>, stored: &Side<'_>) -> [f32; COUNT] {
    let cosine: f32 = asked
        .vector
        .iter()
        .zip(stored.vector)
        .map(|(x, y)| x * y)
        .sum();
    let a = Aligned::new(asked.tokens, stored.tokens);
    let b = Aligned::new(stored.tokens, asked.tokens);
    let missing = a.best.is_empty() || b.best.is_empty();
    let (recall, min_a, low_a) = a.summary(cosine);
    let (precision, min_b, low_b) = b.summary(cosine);
    let mut lows: Vec<f32> = a.best.iter().chain(&b.best).copied().collect();
    lows.sort_by(f32::total_cmp);
    let low2 = match lows.len() {
        0 => cosine,
        1 => lows[0],
        _ => (lows[0] + lows[1]) / 2.0,
    };
    let (na, nb) = (a.best.len() as f32, b.best.len() as f32);
    let length_ratio = if na.max(nb) > 0.0 {
        na.min(nb) / na.max(nb)
    } else {
        1.0
    };
    let [numbers, negation, content] = guard::signals(asked.text, stored.text);
    let (only_a, only_b, common) = word_diff(asked.text, stored.text);
    let (loose_a, loose_b) = (a.loose(), b.loose());
    let g = super::grams::features(asked.text, stored.text);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    [
        cosine,
        recall,
        precision,
        min_a,
        min_b,
        low2,
        low_a,
        low_b,
        flag(a.digits_unaligned || b.digits_unaligned),
        flag(a.digits || b.digits),
        length_ratio,
        flag(numbers),
        flag(negation),
        flag(content),
        word_overlap(asked.text, stored.text),
        flag(missing),
        cosine * min_a.min(min_b),
        loose_a,
        loose_b,
        loose_a.min(loose_b),
        only_a,
        only_b,
        common,
        g[0],
        g[1],
        g[2],
        g[3],
        g[4],
        g[5],
    ]
}

/// Each meaningful piece of one side and its best cosine among the other side's pieces.
struct Aligned {
    best: Vec<f32>,
    digits: bool,
    digits_unaligned: bool,
}

impl Aligned {
    fn new(from: &TokenStates, to: &TokenStates) -> Self {
        let meaningful = |t: &TokenStates| -> Vec<usize> {
            (0..t.len()).filter(|i| t.flags[*i] & PUNCT == 0).collect()
        };
        let (from_ids, to_ids) = (meaningful(from), meaningful(to));
        let mut out = Self {
            best: Vec::with_capacity(from_ids.len()),
            digits: false,
            digits_unaligned: false,
        };
        if from.dim != to.dim || to_ids.is_empty() {
            return out;
        }
        for &i in &from_ids {
            let row = from.row(i);
            let dot = |j: usize| -> f32 { row.iter().zip(to.row(j)).map(|(x, y)| x * y).sum() };
            let best = to_ids.iter().map(|&j| dot(j)).fold(f32::MIN, f32::max);
            out.best.push(best);
            if from.flags[i] & DIGIT != 0 {
                out.digits = true;
                let digit_best = to_ids
                    .iter()
                    .filter(|&&j| to.flags[j] & DIGIT != 0)
                    .map(|&j| dot(j))
                    .fold(f32::MIN, f32::max);
                if digit_best < DIGIT_MATCH {
                    out.digits_unaligned = true;
                }
            }
        }
        out
    }

    /// How many pieces have no near-identical counterpart: a swapped name or number leaves one
    /// on each side, a paraphrase many.
    fn loose(&self) -> f32 {
        self.best.iter().filter(|b| **b < LOOSE).count() as f32
    }

    /// Mean best match, the worst, and the share below [`UNALIGNED`]; the cosine stands in
    /// when there are no states.
    fn summary(&self, cosine: f32) -> (f32, f32, f32) {
        if self.best.is_empty() {
            return (cosine, cosine, 0.0);
        }
        let n = self.best.len() as f32;
        let mean = self.best.iter().sum::<f32>() / n;
        let min = self.best.iter().copied().fold(f32::MAX, f32::min);
        let low = self.best.iter().filter(|b| **b < UNALIGNED).count() as f32 / n;
        (mean, min, low)
    }
}

/// Jaccard overlap of the prompts' lower-cased words and Chinese characters.
fn word_overlap(a: &str, b: &str) -> f32 {
    let (x, y) = (units(a), units(b));
    let union = x.union(&y).count();
    if union == 0 {
        return 1.0;
    }
    x.intersection(&y).count() as f32 / union as f32
}

/// Words (and Chinese characters) only in `a`, only in `b`, and in both.
fn word_diff(a: &str, b: &str) -> (f32, f32, f32) {
    let (x, y) = (units(a), units(b));
    let common = x.intersection(&y).count();
    (
        (x.len() - common) as f32,
        (y.len() - common) as f32,
        common as f32,
    )
}

/// The prompt's lower-cased words and Chinese characters.
fn units(s: &str) -> std::collections::BTreeSet<String> {
    {
        let lower = s.to_lowercase();
        let mut out = std::collections::BTreeSet::new();
        let mut word = String::new();
        for c in lower.chars() {
            if c.is_ascii_alphanumeric() {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
            if ('\u{4e00}'..='\u{9fff}').contains(&c) {
                out.insert(c.to_string());
            }
        }
        if !word.is_empty() {
            out.insert(word);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(rows: &[[f32; 2]], flags: &[u8]) -> TokenStates {
        TokenStates {
            dim: 2,
            rows: rows.iter().flatten().copied().collect(),
            flags: flags.to_vec(),
        }
    }

    #[test]
    fn an_unmatched_piece_and_an_unmatched_number_show() {
        let asked = states(&[[1.0, 0.0], [0.0, 1.0]], &[0, DIGIT]);
        let stored = states(&[[1.0, 0.0], [0.6, 0.8]], &[0, DIGIT]);
        let v = [1.0, 0.0];
        let f = features(
            &Side {
                text: "buy 3",
                vector: &v,
                tokens: &asked,
            },
            &Side {
                text: "buy 4",
                vector: &v,
                tokens: &stored,
            },
        );
        assert_eq!(f[0], 1.0);
        assert!(
            (f[3] - 0.8).abs() < 1e-6,
            "worst asked piece aligns at 0.8: {}",
            f[3]
        );
        assert_eq!(f[8], 1.0, "3 and 4 are different numbers");
        assert_eq!(f[11], 1.0, "the numbers guard says so too");
        let same = features(
            &Side {
                text: "buy 3",
                vector: &v,
                tokens: &asked,
            },
            &Side {
                text: "buy 3",
                vector: &v,
                tokens: &asked,
            },
        );
        assert_eq!((same[3], same[8], same[14]), (1.0, 0.0, 1.0));
    }

    #[test]
    fn without_states_alignment_is_the_cosine() {
        let v = [0.6, 0.8];
        let w = [0.8, 0.6];
        let empty = TokenStates::default();
        let f = features(
            &Side {
                text: "a",
                vector: &v,
                tokens: &empty,
            },
            &Side {
                text: "b",
                vector: &w,
                tokens: &empty,
            },
        );
        assert!((f[1] - 0.96).abs() < 1e-6 && f[15] == 1.0);
    }

    #[test]
    fn overlap_counts_words_and_characters() {
        assert_eq!(word_overlap("How do I", "how do i"), 1.0);
        assert!((word_overlap("退款多久", "退款几天") - 2.0 / 6.0).abs() < 1e-6);
    }
}
