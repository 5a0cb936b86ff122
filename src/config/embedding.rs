//! `[embedding]`: which local model embeds prompts for the semantic tier, and where it lives.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Embedding models deja knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelName {
    /// Multilingual (Chinese and English), 384-d; the default.
    MultilingualE5Small,
    /// English only, 384-d, lighter; Chinese text skips the semantic tier with it.
    AllMinilmL6V2,
}

impl ModelName {
    /// Directory name under `models/` and the name used in key prefixes.
    pub fn slug(self) -> &'static str {
        match self {
            Self::MultilingualE5Small => "multilingual-e5-small",
            Self::AllMinilmL6V2 => "all-minilm-l6-v2",
        }
    }
}

/// `[embedding]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Load the embedding model at start; default on. Any caller's config may ask for semantic
    /// caching (`cache.mode: "semantic"`), even on a route whose own cache is off or exact, so
    /// the model is loaded whether or not a route uses it. Off: semantic mode is refused (a
    /// route that names it fails validation; a caller that asks gets a 400) and deja needs no
    /// model files.
    pub enabled: bool,
    /// `multilingual-e5-small` (default) or `all-minilm-l6-v2`.
    pub model: ModelName,
    /// Directory with model.onnx and the tokenizer files; default `models/{model}`.
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library; default `models/lib/libonnxruntime.so`.
    pub onnxruntime_lib: PathBuf,
    /// The hit verifier's weights (`deja verifier train`); default `verifier/{model}.json` beside
    /// the model's directory. Without the file, routes fall back to their guards.
    pub verifier: Option<PathBuf>,
    /// Model sessions, i.e. prompts embedded at once on the blocking pool; default 2.
    pub sessions: usize,
    /// Threads inside each session; default 1 (measured best on 2 cores under load).
    pub threads_per_session: usize,
    /// Prompts whose share of tokens unknown to the model is above this skip the semantic tier.
    pub max_unknown_token_ratio: f32,
    /// Longest expected wait for an embedding session before a lookup gives up on the semantic
    /// tier (counted in `deja_semantic_shed_total`) and goes on with the exact tier and the
    /// provider: a cache that is behind must not make every caller wait. Default `5ms`.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// Longest a lookup waits for its prompt's embedding (queue and model together). Past it the
    /// request goes on without the semantic tier (counted as shed), and the embedding, still
    /// running, feeds the write-back instead. While embeddings run slower than this on average,
    /// lookups are shed at once rather than wait it out. A ten-word prompt embeds in 3-4.5 ms on
    /// an idle core; raise this where final user turns are long (a few hundred tokens take tens
    /// of ms). Default `8ms`.
    #[serde(with = "humantime_serde")]
    pub max_lookup_wait: Duration,
    /// Answers whose semantic entry waits for an embedding in the background (after a shed
    /// lookup, or while the index rebuilds); past it the entry is dropped (counted). Default 256.
    pub writeback_queue: usize,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: ModelName::MultilingualE5Small,
            model_dir: None,
            onnxruntime_lib: PathBuf::from("models/lib/libonnxruntime.so"),
            verifier: None,
            sessions: 2,
            threads_per_session: 1,
            max_unknown_token_ratio: 0.5,
            max_queue_wait: Duration::from_millis(5),
            max_lookup_wait: Duration::from_millis(8),
            writeback_queue: 256,
        }
    }
}

impl EmbeddingConfig {
    /// What a lookup may spend on its embedding: `(max_queue_wait, max_lookup_wait)`.
    pub fn lookup_budget(&self) -> (Duration, Duration) {
        (self.max_queue_wait, self.max_lookup_wait)
    }

    /// Where the model's files are read from.
    pub fn model_dir(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(self.model.slug()))
    }

    /// Where the verifier's weights are read from: by default beside the model's directory
    /// (`models/verifier/{model}.json`), so a moved `model_dir` takes its verifier along.
    pub fn verifier_path(&self) -> PathBuf {
        self.verifier.clone().unwrap_or_else(|| {
            let dir = self.model_dir();
            dir.parent()
                .unwrap_or(&dir)
                .join("verifier")
                .join(format!("{}.json", self.model.slug()))
        })
    }

    pub(super) fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if !(1..=64).contains(&self.sessions) {
            errors.push(format!(
                "{path}.sessions must be within 1..=64, got {}",
                self.sessions
            ));
        }
        if !(1..=64).contains(&self.threads_per_session) {
            errors.push(format!(
                "{path}.threads_per_session must be within 1..=64, got {}",
                self.threads_per_session
            ));
        }
        if self.max_lookup_wait.is_zero() {
            errors.push(format!(
                "{path}.max_lookup_wait must be above 0 (it bounds each lookup's embedding; 0 would shed them all)"
            ));
        }
        if !(1..=100_000).contains(&self.writeback_queue) {
            errors.push(format!(
                "{path}.writeback_queue must be within 1..=100000, got {}",
                self.writeback_queue
            ));
        }
        if !(0.0..=1.0).contains(&self.max_unknown_token_ratio) {
            errors.push(format!(
                "{path}.max_unknown_token_ratio must be within 0..=1, got {}",
                self.max_unknown_token_ratio
            ));
        }
    }
}
