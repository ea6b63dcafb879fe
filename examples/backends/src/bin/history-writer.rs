//! `history-writer`: stores full mode's chat messages in the MariaDB primary (see the README).

use clap::Parser;
use rlb_demo::WriterOptions;
use rlb_demo::amqp::{AmqpNames, DEFAULT_EXCHANGE, DEFAULT_HISTORY_QUEUE};
use rlb_demo::mysql::DEFAULT_TABLE;

#[derive(Parser)]
#[command(
    version,
    about = "Drains the durable chat history queue into the MariaDB primary"
)]
struct Args {
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// MariaDB primary URL; the table is created if missing.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    mysql_primary: String,
    /// Fanout exchange the chat servers publish to.
    #[arg(long, default_value = DEFAULT_EXCHANGE)]
    exchange: String,
    /// Durable queue bound to the exchange.
    #[arg(long, default_value = DEFAULT_HISTORY_QUEUE)]
    history_queue: String,
    /// History table.
    #[arg(long, default_value = DEFAULT_TABLE)]
    table: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rlb_demo::init_logging();
    let shutdown = rlb_demo::shutdown_on_signals()?;
    let options = WriterOptions {
        amqp: args.amqp,
        mysql_primary: args.mysql_primary,
        names: AmqpNames {
            exchange: args.exchange,
            history_queue: args.history_queue,
        },
        table: args.table,
    };
    rlb_demo::run_history_writer(options, shutdown).await
}
