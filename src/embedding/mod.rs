//! Sentence embeddings for the semantic tier: the `Embedder` trait, the per-model facts
//! (prefix, default threshold), and the fastembed/ONNX implementation in `onnx`.

pub mod onnx;
pub mod tokens;
pub mod workers;

pub use tokens::TokenStates;

use crate::config::ModelName;

/// Why a prompt could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Model files or the ONNX Runtime library are missing or unreadable.
    #[error("{0}")]
    Load(String),
    /// The model failed on this input.
    #[error("embedding failed: {0}")]
    Inference(String),
    /// The blocking pool is gone (shutting down).
    #[error("embedding pool unavailable")]
    Pool,
}

/// One embedded prompt.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// L2-normalised vector.
    pub vector: Vec<f32>,
    /// Share of the prompt's tokens the model does not know (0..1).
    pub unknown_ratio: f32,
    /// Each word piece's state before pooling (empty from embedders that give none).
    pub tokens: TokenStates,
}

/// Turns prompts into L2-normalised vectors. Implementations run on a blocking pool.
pub trait Embedder: Send + Sync {
    /// Embeds each text; blocks the calling thread (call from `spawn_blocking`).
    fn embed_blocking(&self, texts: &[&str]) -> Result<Vec<Embedded>, EmbedError>;
    /// Vector length.
    fn dim(&self) -> usize;
    /// Which model this is.
    fn model(&self) -> ModelName;
}

/// Facts about a model that callers need.
impl ModelName {
    /// Text put before every prompt, as the model was trained.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::MultilingualE5Small => "query: ",
            Self::AllMinilmL6V2 => "",
        }
    }

    /// Cosine similarity at or above which two prompts count as the same question, when a route
    /// sets none; chosen with `deja eval` on the labelled pairs in `tests/data/` with the default
    /// guards (e5: 0.589 of Chinese and 0.595 of English same-answer pairs served, 0.012 and
    /// 0.018 of traps; MiniLM on the English pairs: 0.639 served, 0.006 of traps).
    pub fn default_threshold(self) -> f32 {
        match self {
            Self::MultilingualE5Small => 0.96,
            Self::AllMinilmL6V2 => 0.85,
        }
    }
}

/// L2-normalises `v` in place; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
