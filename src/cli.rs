//! Command line: `deja serve` and `deja check-config`.

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
    /// Validate the configuration and exit (non-zero on errors).
    CheckConfig {
        /// Config file; default `./deja.toml` when present, else embedded defaults.
        #[arg(long, env = "DEJA_CONFIG")]
        config: Option<PathBuf>,
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
