//! The fastembed implementation of `Embedder`: local model files, ONNX Runtime loaded
//! dynamically from a path, a small pool of sessions each behind a mutex (fastembed's `embed`
//! takes `&mut self`). Never touches a model hub.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use fastembed::{
    InitOptionsUserDefined, OutputKey, Pooling, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};

use super::{EmbedError, Embedded, Embedder, TokenStates, normalize};
use crate::config::{EmbeddingConfig, ModelName};

/// The output holding each token's state, as fastembed names it for BERT-like encoders.
const OUTPUTS: [OutputKey; 2] = [OutputKey::OnlyOne, OutputKey::ByName("last_hidden_state")];

/// Most word pieces whose states are kept per prompt (bounds the verifier's work and an
/// entry's size: 64 pieces are about 25 KB).
const MAX_PIECES: usize = 64;

const FETCH_HINT: &str = "run models/fetch.sh from the repository root (or set [embedding] model_dir / onnxruntime_lib, or [embedding] enabled = false to run without semantic caching)";

/// fastembed sessions for one model.
pub struct OnnxEmbedder {
    model: ModelName,
    dim: usize,
    unk_id: Option<u32>,
    /// Word pieces of the model's prefix (`query: `), which every input starts with.
    prefix_pieces: usize,
    sessions: Vec<Mutex<TextEmbedding>>,
    next: AtomicUsize,
}

impl OnnxEmbedder {
    /// Loads the configured model; a missing file is an error naming the fetch script.
    pub fn load(config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        init_runtime(&config.onnxruntime_lib)?;
        let dir = config.model_dir();
        let read = |name: &str| -> Result<Vec<u8>, EmbedError> {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                EmbedError::Load(format!(
                    "embedding model file {}: {e}; {FETCH_HINT}",
                    path.display()
                ))
            })
        };
        let onnx = read("model.onnx")?;
        let files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let unk_token = unk_token(&files.special_tokens_map_file);
        let mut sessions = Vec::with_capacity(config.sessions);
        for _ in 0..config.sessions {
            let model = UserDefinedEmbeddingModel::new(onnx.clone(), files.clone())
                .with_pooling(Pooling::Mean);
            let options = InitOptionsUserDefined::new()
                .with_max_length(512)
                .with_intra_threads(config.threads_per_session);
            let session = TextEmbedding::try_new_from_user_defined(model, options)
                .map_err(|e| EmbedError::Load(format!("loading {}: {e}", dir.display())))?;
            sessions.push(Mutex::new(session));
        }
        let unk_id = match (&unk_token, sessions.first()) {
            (Some(token), Some(s)) => lock(s).tokenizer.token_to_id(token),
            _ => None,
        };
        let prefix_pieces = match sessions.first() {
            Some(s) if !config.model.prefix().is_empty() => lock(s)
                .tokenizer
                .encode(config.model.prefix().trim_end(), false)
                .map_or(0, |e| e.get_ids().len()),
            _ => 0,
        };
        let mut embedder = Self {
            model: config.model,
            dim: 0,
            unk_id,
            prefix_pieces,
            sessions,
            next: AtomicUsize::new(0),
        };
        embedder.dim = embedder
            .embed_blocking(&["dimension probe"])?
            .first()
            .map_or(0, |e| e.vector.len());
        Ok(embedder)
    }

    /// Mean-pools one prompt's states over its mask (as fastembed's mean pooling does) and
    /// keeps the states of its own word pieces for the verifier.
    fn embedded<'v>(
        &self,
        session: &TextEmbedding,
        text: &str,
        mask: &[bool],
        row: impl Fn(usize) -> &'v [f32],
        dim: usize,
    ) -> Embedded {
        let mut vector = vec![0f32; dim];
        let live: Vec<usize> = (0..mask.len()).filter(|t| mask[*t]).collect();
        for t in &live {
            vector.iter_mut().zip(row(*t)).for_each(|(v, x)| *v += x);
        }
        vector
            .iter_mut()
            .for_each(|v| *v /= live.len().max(1) as f32);
        normalize(&mut vector);
        Embedded {
            vector,
            unknown_ratio: self.unknown_ratio(session, text),
            tokens: self.pieces(session, text, &live, row, dim),
        }
    }

    /// The states of the prompt's own pieces: the sequence's first and last (special) tokens
    /// and the model's prefix are left out.
    fn pieces<'v>(
        &self,
        session: &TextEmbedding,
        text: &str,
        live: &[usize],
        row: impl Fn(usize) -> &'v [f32],
        dim: usize,
    ) -> TokenStates {
        let Ok(encoding) = session.tokenizer.encode(text, false) else {
            return TokenStates::default();
        };
        let skip = 1 + self.prefix_pieces;
        let pieces = encoding.get_tokens();
        let own = live.len().saturating_sub(skip + 1);
        // The text alone and after the prefix may split differently at the seam: then no piece
        // is flagged, rather than every flag shifted by one.
        let aligned = pieces.len() == own;
        // Alignment costs pieces² per pair on the request path; a long prompt's first pieces
        // carry its question.
        let positions = live.iter().skip(skip).take(own.min(MAX_PIECES));
        let mut states = TokenStates {
            dim,
            ..TokenStates::default()
        };
        for (i, t) in positions.enumerate() {
            let mut state = row(*t).to_vec();
            normalize(&mut state);
            states.rows.extend(state);
            let flags = match (aligned, pieces.get(i)) {
                (true, Some(p)) => TokenStates::flags_of(p),
                _ => 0,
            };
            states.flags.push(flags);
        }
        states
    }

    fn unknown_ratio(&self, session: &TextEmbedding, text: &str) -> f32 {
        let Some(unk) = self.unk_id else { return 0.0 };
        match session.tokenizer.encode(text, false) {
            Ok(encoding) if !encoding.get_ids().is_empty() => {
                let ids = encoding.get_ids();
                ids.iter().filter(|id| **id == unk).count() as f32 / ids.len() as f32
            }
            _ => 0.0,
        }
    }
}

impl Embedder for OnnxEmbedder {
    fn embed_blocking(&self, texts: &[&str]) -> Result<Vec<Embedded>, EmbedError> {
        let mut session = self.acquire();
        let prefixed: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.model.prefix()))
            .collect();
        let failed = |e: fastembed::Error| EmbedError::Inference(e.to_string());
        let batches = session
            .transform(&prefixed, None)
            .map_err(failed)?
            .into_raw();
        let mut out = Vec::with_capacity(texts.len());
        let keys: &[OutputKey] = &OUTPUTS;
        for batch in &batches {
            let states = batch
                .select_output(&keys)
                .map_err(failed)?
                .as_standard_layout()
                .into_owned();
            let shape = states.shape().to_vec();
            let [rows, seq, dim] = shape[..] else {
                return Err(EmbedError::Inference(format!(
                    "the model gave states of shape {shape:?}, not [batch, tokens, dim]"
                )));
            };
            let values = states.as_slice().unwrap_or_default();
            for r in 0..rows {
                let text = texts.get(out.len()).copied().unwrap_or_default();
                let mask: Vec<bool> = (0..seq)
                    .map(|t| {
                        batch
                            .attention_mask_array
                            .get((r, t))
                            .is_some_and(|m| *m != 0)
                    })
                    .collect();
                let row = |t: usize| &values[(r * seq + t) * dim..(r * seq + t + 1) * dim];
                out.push(self.embedded(&session, text, &mask, row, dim));
            }
        }
        Ok(out)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn model(&self) -> ModelName {
        self.model
    }
}

impl OnnxEmbedder {
    /// A free session, else waits for the next one in turn.
    fn acquire(&self) -> std::sync::MutexGuard<'_, TextEmbedding> {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.sessions[(start + i) % n].try_lock() {
                return guard;
            }
        }
        lock(&self.sessions[start % n])
    }
}

fn lock(m: &Mutex<TextEmbedding>) -> std::sync::MutexGuard<'_, TextEmbedding> {
    // A panic inside ONNX Runtime leaves the session usable; the data behind the lock is not ours.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unk_token(special_tokens_map: &[u8]) -> Option<String> {
    let map: serde_json::Value = serde_json::from_slice(special_tokens_map).ok()?;
    match map.get("unk_token")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other.get("content")?.as_str().map(str::to_owned),
    }
}

/// Loads ONNX Runtime from `path` once per process; fastembed would panic on a missing library.
fn init_runtime(path: &Path) -> Result<(), EmbedError> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = LOADED.get_or_init(|| {
        let absolute = std::fs::canonicalize(path)
            .map_err(|e| format!("ONNX Runtime library {}: {e}; {FETCH_HINT}", path.display()))?;
        ort::init_from(&absolute).map_err(|e| format!("ONNX Runtime: {e}"))?;
        Ok(absolute)
    });
    match result {
        Ok(loaded)
            if loaded.as_path() != path
                && std::fs::canonicalize(path).ok().as_deref() != Some(loaded) =>
        {
            Err(EmbedError::Load(format!(
                "ONNX Runtime is already loaded from {}; one process can load only one",
                loaded.display()
            )))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(EmbedError::Load(e.clone())),
    }
}
