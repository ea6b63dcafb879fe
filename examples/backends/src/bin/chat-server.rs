//! `chat-server`: one demo chat server on 127.0.0.1:PORT (see the crate README).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rlb_demo::amqp::{AmqpNames, DEFAULT_EXCHANGE, DEFAULT_HISTORY_QUEUE};
use rlb_demo::mysql::DEFAULT_TABLE;
use rlb_demo::relay::{DEFAULT_DB, DEFAULT_POLL_INTERVAL};
use rlb_demo::{ChatOptions, Mode};

#[derive(Parser)]
#[command(
    version,
    about = "Demo chat server for rlb: a chat page, WebSockets, history and health"
)]
struct Args {
    /// Name shown in messages and the page, e.g. s1.
    #[arg(long)]
    name: String,
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Embedded mode: SQLite file shared by all chat servers on this machine.
    #[arg(long, default_value = DEFAULT_DB, conflicts_with = "amqp")]
    db: PathBuf,
    /// Full mode: RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, requires = "mysql_read")]
    amqp: Option<String>,
    /// Full mode: MariaDB URL to read history from, e.g. rlb's tcp listener in front of
    /// the replicas: mysql://root@127.0.0.1:3307/test.
    #[arg(long, requires = "amqp")]
    mysql_read: Option<String>,
    /// Full mode: fanout exchange name.
    #[arg(long, default_value = DEFAULT_EXCHANGE)]
    exchange: String,
    /// Full mode: durable queue that history-writer drains.
    #[arg(long, default_value = DEFAULT_HISTORY_QUEUE)]
    history_queue: String,
    /// Full mode: history table.
    #[arg(long, default_value = DEFAULT_TABLE)]
    table: String,
    /// Seconds open connections get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 5)]
    shutdown_timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rlb_demo::init_logging();
    let mode = match (args.amqp, args.mysql_read) {
        (Some(amqp), Some(mysql_read)) => Mode::Full {
            amqp,
            mysql_read,
            names: AmqpNames {
                exchange: args.exchange,
                history_queue: args.history_queue,
            },
            table: args.table,
        },
        _ => Mode::Embedded {
            db: args.db,
            poll_interval: DEFAULT_POLL_INTERVAL,
        },
    };
    let shutdown = rlb_demo::shutdown_on_signals()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    let mut options = ChatOptions::new(args.name, mode);
    options.shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout);
    rlb_demo::run_chat_server(listener, options, shutdown).await
}
