//! Command line: `deja serve`, `deja check-config`, `deja eval` and `deja keys`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// deja: an OpenAI-compatible gateway for 01.AI with retries and a semantic cache.
#[derive(Debug, Parser)]
#[command(name = "deja", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    Serve {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Measure the semantic tier offline: score labelled pairs over thresholds 0.70-0.99 with
    /// the configured model and the route's guards, or replay a prompt log.
    Eval {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
        /// Route whose guards apply.
        #[arg(long, default_value = "default")]
        route: String,
        /// JSONL of labelled pairs: `{"a","b","same_answer"}` (optional `lang`, `category`).
        #[arg(long, conflicts_with = "replay", required_unless_present = "replay")]
        pairs: Option<PathBuf>,
        /// JSONL of prompts in arrival order: hit rate per threshold and guard set.
        #[arg(long)]
        replay: Option<PathBuf>,
        /// Highest share of look-alike traps served: the verifier's operating point (default the
        /// route's `cache.max_wrong`) and the bound the threshold sweep chooses by (default 0.02).
        #[arg(long)]
        max_wrong: Option<f32>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Draw served and wrong rates against the threshold into this PNG.
        #[arg(long, requires = "pairs")]
        plot: Option<PathBuf>,
        /// Write the chosen threshold into this route of the config file.
        #[arg(long, requires = "pairs")]
        write_route: Option<String>,
    },
    /// Train the semantic hit verifier on labelled pairs and write its weights.
    Verifier {
        /// What to do.
        #[command(subcommand)]
        action: VerifierAction,
    },
    /// Issue, list and revoke API keys (stored as hashes in `[store]`).
    Keys {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
        /// What to do with keys.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Print a fresh secret key for sealing virtual keys (set it as DEJA_SECRET_KEY), or rotate
    /// the store's key.
    SecretKey {
        /// `rotate`: reseal every stored credential under a new key.
        #[command(subcommand)]
        action: Option<SecretKeyAction>,
    },
    /// Validate the configuration and exit (non-zero on errors).
    CheckConfig {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `deja verifier ...`.
#[derive(Debug, Subcommand)]
pub enum VerifierAction {
    /// Fit the verifier on labelled pairs (`{"a","b","same_answer","lang","topic"}` per line)
    /// with the configured model, calibrate it by topic, and write the weights with the
    /// training data's hash.
    Train {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
        /// Labelled pair files (give several).
        #[arg(long, required = true, num_args = 1..)]
        pairs: Vec<PathBuf>,
        /// Lowest cosine of a candidate the verifier is trained and calibrated on.
        #[arg(long, default_value_t = 0.80)]
        floor: f32,
        /// Where to write the weights; default the config's `[embedding] verifier` path.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// What `deja secret-key` does besides printing a fresh key.
#[derive(Debug, Subcommand)]
pub enum SecretKeyAction {
    /// Reseal every virtual key and inline api_key under a new key, all or nothing; a SQLite
    /// store's key file is replaced (the old key kept as `.old`), a configured key is printed.
    Rotate {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
        /// The new key (64 hex characters); default a fresh one.
        #[arg(long, env = "DEJA_NEW_SECRET_KEY", hide_env_values = true)]
        new_key: Option<String>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `deja keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Issue a key; it is printed once and only its hash is kept.
    Create {
        /// Tenant the key belongs to; tenants never share cache entries.
        #[arg(long)]
        tenant: String,
        /// `admin` (control plane and models) or `inference` (models only).
        #[arg(long, value_enum)]
        scope: crate::store::keys::Scope,
    },
    /// List keys (ids, tenants, scopes; never secrets).
    List,
    /// Revoke a key by id; every gateway refuses it within seconds.
    Revoke {
        /// Key id, as `list` shows it.
        id: String,
    },
}
