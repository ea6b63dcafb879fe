//! The `rlb` command: arguments, logging, signals; the library does the rest.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rlb::Rlb;
use rlb::config::{Config, LogFormat};
use rlb::control::signals::Signals;
use tracing_subscriber::EnvFilter;

/// jemalloc: measured 12.5 KiB of RSS per idle http connection against 14.7 with the
/// system allocator (and 23.8 with mimalloc), at the same throughput (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A layer-4/layer-7 load balancer and reverse proxy.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration, print `configuration OK` or the errors, start nothing.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(config.global.log_format);
    match run(args.config, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RLB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(path: PathBuf, config: Config) -> anyhow::Result<()> {
    // One worker is the current-thread scheduler: no work stealing, no cross-thread
    // wake-ups, the same behaviour.
    let mut runtime = match config.global.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let signals = Signals::install().context("cannot handle signals")?;
        let rlb = Rlb::start(config, Some(path.clone()))
            .with_context(|| format!("{} not started", path.display()))?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "rlb started");
        signals.serve(&rlb).await;
        rlb.shutdown().await;
        tracing::info!("rlb stopped");
        Ok(())
    })
}
