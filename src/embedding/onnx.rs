//! The fastembed implementation of `Embedder`: local model files, ONNX Runtime loaded
//! dynamically from a path, a small pool of sessions each behind a mutex (fastembed's `embed`
//! takes `&mut self`). Never touches a model hub.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use super::{EmbedError, Embedded, Embedder, normalize};
use crate::config::{EmbeddingConfig, ModelName};

const FETCH_HINT: &str = "run models/fetch.sh from the repository root (or set [embedding] model_dir / onnxruntime_lib, or [embedding] enabled = false to run without semantic caching)";

/// fastembed sessions for one model.
pub struct OnnxEmbedder {
    model: ModelName,
    dim: usize,
    unk_id: Option<u32>,
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
        let mut embedder = Self {
            model: config.model,
            dim: 0,
            unk_id,
            sessions,
            next: AtomicUsize::new(0),
        };
        embedder.dim = embedder
            .embed_blocking(&["dimension probe"])?
            .first()
            .map_or(0, |e| e.vector.len());
        Ok(embedder)
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
        let session = self.acquire();
        let prefixed: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.model.prefix()))
            .collect();
        let mut session = session;
        let vectors = session
            .embed(&prefixed, None)
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        Ok(vectors
            .into_iter()
            .zip(texts)
            .map(|(mut vector, text)| {
                normalize(&mut vector);
                Embedded {
                    vector,
                    unknown_ratio: self.unknown_ratio(&session, text),
                }
            })
            .collect())
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
