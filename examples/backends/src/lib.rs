//! Demo chat servers for watching rlb balance WebSockets and fail over.
//!
//! [`chat::run`] serves the chat page, `/ws`, `/history` and `/healthz` on a bound
//! listener; [`history_writer::run`] stores full mode's messages in MariaDB. The binaries
//! in `src/bin/` only parse flags, set up logging and wire signals to a shutdown token.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod chat;
pub mod experiment;
pub mod history_writer;
pub mod msg;
pub mod mysql;
pub mod protocol;
pub mod relay;
pub mod sqlite;

pub use chat::{ChatOptions, run as run_chat_server};
pub use history_writer::{WriterOptions, run as run_history_writer};
pub use relay::Mode;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT, for the binaries.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutdown requested");
        t.cancel();
    });
    Ok(token)
}

/// Logs to stderr; `RUST_LOG` overrides the default `info`. Colours only on a terminal:
/// the demo and the experiment send stderr to log files, where escape codes are noise.
pub fn init_logging() {
    init_logging_from("RUST_LOG");
}

/// [`init_logging`] with the filter read from the environment variable `var`.
pub fn init_logging_from(var: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env(var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
