//! The `deja` binary: parse the command line, load and validate config, start logging, serve.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use deja::cli::{Cli, Command, SecretKeyAction, VerifierAction};
use deja::eval::command::EvalArgs;
use deja::{Config, telemetry};

// glibc's malloc was 13% of the CPU forwarding a request (its free-list upkeep across threads,
// in a profile of the forward bench); mimalloc's per-thread pages avoid most of that. Built
// `no_thp`: its huge pages stalled threads on the kernel's compaction, and a burst of new
// connections waited 0.6-2.9 s for a first byte (docs/PERFORMANCE.md, streams).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Eval {
            config,
            route,
            pairs,
            replay,
            max_wrong,
            json,
            plot,
            write_route,
        } => {
            let args = EvalArgs {
                config,
                route,
                pairs,
                replay,
                max_wrong,
                json,
                plot,
                write_route,
            };
            print_or_fail(deja::eval::command::run(&args))
        }
        Command::Verifier {
            action:
                VerifierAction::Train {
                    config,
                    pairs,
                    floor,
                    out,
                },
        } => print_or_fail(deja::eval::command::train(
            config.as_deref(),
            &pairs,
            floor,
            out.as_deref(),
        )),
        Command::SecretKey { action: None } => {
            println!("{}", deja::store::secret_file::fresh_key());
            ExitCode::SUCCESS
        }
        Command::SecretKey {
            action: Some(SecretKeyAction::Rotate { config, new_key }),
        } => print_or_fail(deja::store::rotate::run(
            config.as_deref(),
            new_key.as_deref(),
        )),
        Command::Keys { config, action } => {
            print_or_fail(deja::store::cli::run(config.as_deref(), &action))
        }
        Command::Serve { config, log_format } => {
            let config = match Config::load(config.as_deref()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(log_format);
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints a command's report, or its error with causes, and exits accordingly.
fn print_or_fail(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let admitted = config.routes.iter().map(|r| r.limits.max_concurrent).sum();
    deja::fd_limit::raise(admitted);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listen = config.server.listen;
        let listener = deja::server::bind(listen)
            .with_context(|| format!("binding server.listen {listen}"))?;
        if config.upstream.api_key.is_none() {
            tracing::warn!(
                "no provider key: set upstream.api_key or YI_API_KEY; calls go upstream without one"
            );
        }
        for (section, value) in config.sections() {
            tracing::info!(
                section,
                "effective configuration (secrets redacted): {value}"
            );
        }
        let upstream = deja::redact::url(&config.upstream.base_url);
        tracing::info!(%listen, %upstream, "deja listening");
        deja::run(config, listener, deja::shutdown_signal()).await?;
        Ok(())
    })
}
