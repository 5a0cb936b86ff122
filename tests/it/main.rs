//! The integration suite: one test binary (one link of the crate instead of one per file), a
//! module per area. Every test starts what it needs on ephemeral loopback ports (its own gateway,
//! upstream stand-ins, private Redis servers, a fresh Postgres database), so tests share nothing
//! but the embedding model loaded once by [`common::shared_embedder`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod alerts;
mod analytics;
mod bad_input;
mod cache_exact;
mod cache_semantic;
mod cache_stream;
mod cache_verify;
mod cli;
mod common;
mod control_plane;
mod dashboard;
mod embedding;
mod eval_cli;
mod faults;
mod first_run;
mod forward;
mod fuzz;
mod judge;
mod metrics;
mod overload;
mod providers;
mod redis_breaker;
mod replicas;
mod retry;
mod roundtrip;
mod sdk_openai;
mod sdk_portkey;
mod security;
mod semantic_quality;
mod store;
mod strategy;
mod topologies;
mod tutorial;
