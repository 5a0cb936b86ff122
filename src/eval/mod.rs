//! Offline evaluation of the semantic tier, behind `deja eval`: labelled pairs scored with the
//! configured model and guards over a sweep of thresholds (`pairs`), prompt logs replayed
//! against candidate thresholds and guard sets (`replay`), and the output (`report`).

pub mod command;
pub mod pairs;
pub mod replay;
pub mod report;
pub mod verified;

use serde_json::{Value, json};

use crate::cache::guard::{Guard, refuse};
use crate::cache::key::cache_keys;
use crate::embedding::{EmbedError, Embedded, Embedder};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The input file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File named on the command line.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A line of the input is not what the format asks for.
    #[error("{path}:{line}: {message}")]
    Format {
        /// File named on the command line.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The model failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The output could not be written.
    #[error("{0}")]
    Output(String),
}

/// Reads each non-blank line of JSONL `text` with `row`, which gets the parsed line and a maker
/// of errors that name `path` and the line number.
pub fn parse_jsonl<T>(
    path: &str,
    text: &str,
    mut row: impl FnMut(&Value, &dyn Fn(String) -> EvalError) -> Result<T, EvalError>,
) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |message: String| EvalError::Format {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let value: Value = serde_json::from_str(line).map_err(|e| error(e.to_string()))?;
        out.push(row(&value, &error)?);
    }
    Ok(out)
}

/// The thresholds every sweep reports: 0.70 to 0.99 by 0.01.
pub fn thresholds() -> Vec<f32> {
    (70..=99).map(|t| t as f32 / 100.0).collect()
}

/// A prompt as the cache sees it: the final user turn it embeds, and the partition (model,
/// parameters, earlier turns) a hit may never cross.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Partition hash.
    pub partition: String,
    /// Final user text, when the request has one the semantic tier can embed.
    pub text: Option<String>,
}

impl Prompt {
    /// Reads a prompt given as a string (one user turn) or as an array of chat messages.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let messages = match value {
            Value::String(text) => json!([{"role": "user", "content": text}]),
            Value::Array(_) => value.clone(),
            _ => return Err("a prompt is a string or an array of messages".to_owned()),
        };
        let body = json!({"model": "eval", "messages": messages});
        let keys = cache_keys("", "eval", &body)
            .ok_or_else(|| "an array of messages needs at least one message".to_owned())?;
        Ok(Self {
            partition: keys.partition,
            text: keys.final_user_text,
        })
    }
}

/// Embeds every text in batches, calling `progress` with the count done.
pub fn embed_all(
    embedder: &dyn Embedder,
    texts: &[&str],
    mut progress: impl FnMut(usize),
) -> Result<Vec<Embedded>, EmbedError> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(32) {
        out.extend(embedder.embed_blocking(batch)?);
        progress(out.len());
    }
    Ok(out)
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Whether the tier could serve `stored`'s answer to `asked` at all (same partition, text the
/// model knows) and, if so, at what similarity and which guard refuses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Never a semantic hit: another partition, no embeddable text, or unknown tokens.
    Never,
    /// A candidate at this similarity; `refused_by` the first guard that refuses it.
    Candidate {
        /// Cosine similarity.
        similarity: f32,
        /// The guard that refuses it, if any.
        refused_by: Option<Guard>,
    },
}

impl Verdict {
    /// Whether a lookup at `threshold` serves it.
    pub fn served_at(self, threshold: f32) -> bool {
        matches!(self, Self::Candidate { similarity, refused_by: None } if similarity >= threshold)
    }
}

/// Judges a candidate pair of prompts whose final texts are embedded as `ea`, `eb`.
pub fn judge(
    guards: &[Guard],
    max_unknown: f32,
    (a, ea): (&Prompt, Option<&Embedded>),
    (b, eb): (&Prompt, Option<&Embedded>),
) -> Verdict {
    let (Some(ta), Some(tb), Some(ea), Some(eb)) = (&a.text, &b.text, ea, eb) else {
        return Verdict::Never;
    };
    if a.partition != b.partition
        || ea.unknown_ratio > max_unknown
        || eb.unknown_ratio > max_unknown
    {
        return Verdict::Never;
    }
    Verdict::Candidate {
        similarity: cosine(&ea.vector, &eb.vector),
        refused_by: refuse(guards, ta, tb),
    }
}
