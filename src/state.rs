//! `AppState`: everything a request needs, built once at start and shared by cheap clones.

use std::sync::Arc;

use crate::auth::KeyRing;
use crate::cache::{Cache, CacheError};
use crate::config::Config;
use crate::embedding::onnx::OnnxEmbedder;
use crate::embedding::{EmbedError, Embedder};
use crate::gateway::{Admission, Breakers, VerifyBudget};
use crate::metrics::Metrics;
use crate::policy::{GuardedResolver, Policy, SavedConfigs};
use crate::reqlog::RequestLog;
use crate::store::seal::Sealer;
use crate::store::secret_file::{self, KeyFileError};
use crate::store::{Store, StoreError};
use crate::upstream::{Forwarder, UpstreamError};
use secrecy::ExposeSecret;

/// Why the gateway could not be assembled from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client for the provider could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The cache could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The embedding model could not be loaded.
    #[error(transparent)]
    Embedding(#[from] EmbedError),
    /// The control plane's store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The secret key file beside the SQLite store could not be read or created.
    #[error(transparent)]
    SecretKey(#[from] KeyFileError),
    /// The listener failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Shared handles to the gateway's parts.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Prometheus registry and metrics.
    pub metrics: Arc<Metrics>,
    /// The retrying client for the provider.
    pub forwarder: Arc<Forwarder>,
    /// Cache tiers.
    pub cache: Arc<Cache>,
    /// Bounds the upstream calls made to verify semantic hits.
    pub verify_budget: Arc<VerifyBudget>,
    /// The routes' grey-zone judges: budgets and remembered verdicts.
    pub judges: Arc<crate::gateway::judge::Judges>,
    /// The control plane's database.
    pub store: Store,
    /// Active API keys, refreshed from the store.
    pub keys: Arc<KeyRing>,
    /// Saved configs recently read, by `slug[@version]`.
    pub saved_configs: Arc<SavedConfigs>,
    /// Seals and opens virtual keys' credentials; `None` without a secret key.
    pub sealer: Option<Arc<Sealer>>,
    /// The request log's queue; `None` with `[log] enabled = false`.
    pub request_log: Option<Arc<RequestLog>>,
    /// Circuit breaker state of strategy targets.
    pub breakers: Arc<Breakers>,
    /// Per-route concurrency slots and queues.
    pub admission: Arc<Admission>,
    /// What callers may do: hosts and the operator's credential.
    pub policy: Arc<Policy>,
}

impl AppState {
    /// Builds every part from `config`, loading the embedding model unless `[embedding]
    /// enabled = false`; nothing is connected yet.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let embedder: Option<Arc<dyn Embedder>> =
            if crate::cache::semantic::SemanticTier::needed_by(&config) {
                Some(Arc::new(OnnxEmbedder::load(&config.embedding)?))
            } else {
                None
            };
        Self::with_embedder(config, embedder)
    }

    /// Builds every part around an embedder already loaded (shared by several gateways in tests).
    pub fn with_embedder(
        config: Config,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let forwarder = Arc::new(Forwarder::new(
            &config.upstream,
            GuardedResolver::new(&config),
            Arc::clone(&metrics),
        )?);
        let policy = Policy::new(&config)
            .map_err(|e| StartError::Upstream(UpstreamError::Client(e.to_string())))?;
        let cache = Arc::new(Cache::new(&config, embedder, Arc::clone(&metrics))?);
        let verify_budget = Arc::new(VerifyBudget::new(config.cache.verify_max_per_second));
        let store = Store::connect_lazy(&config.store.url)?;
        let sealer = secret_key(&config)?
            .and_then(|k| Sealer::from_hex(&k))
            .map(Arc::new);
        let request_log = config
            .log
            .enabled
            .then(|| Arc::new(RequestLog::new(&config.log, Arc::clone(&metrics))));
        Ok(Self {
            policy: Arc::new(policy),
            admission: Arc::new(Admission::new(&config, Arc::clone(&metrics))),
            breakers: Arc::new(Breakers::default()),
            request_log,
            sealer,
            store,
            keys: Arc::new(KeyRing::default()),
            saved_configs: Arc::new(SavedConfigs::default()),
            verify_budget,
            judges: Arc::new(crate::gateway::judge::Judges::new(&config)),
            config: Arc::new(config),
            metrics,
            forwarder,
            cache,
        })
    }
}

/// The key that seals provider credentials: the configured one, else (SQLite file store) the
/// one in the key file beside the database, created on first start.
fn secret_key(config: &Config) -> Result<Option<String>, KeyFileError> {
    if let Some(key) = &config.store.secret_key {
        return Ok(Some(key.expose_secret().to_owned()));
    }
    let Some(path) = secret_file::path_for(&config.store.url) else {
        return Ok(None);
    };
    let (key, created) = secret_file::load_or_create(&path)?;
    let path = path.display();
    if created {
        tracing::info!(%path, "created the secret key that seals virtual keys; back it up with the database (see README, Secret key)");
    } else {
        tracing::info!(%path, "secret key read from its file beside the store");
    }
    Ok(Some(key))
}
