//! history-writer: drains the durable history queue into MariaDB, acking only stored messages.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::{self, AmqpNames, RECONNECT_DELAY};
use crate::mysql::MysqlHistory;
use crate::protocol::{self, ChatMessage};

/// Unacked messages RabbitMQ may hand over at once; bounds what is redelivered after a crash.
const PREFETCH: u16 = 64;
/// Pause before retrying an insert that failed (MariaDB down or restarting).
const INSERT_RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub amqp: String,
    pub mysql_primary: String,
    pub names: AmqpNames,
    pub table: String,
}

/// Runs until `shutdown` is cancelled, reconnecting to RabbitMQ when it is lost. Fails
/// only if the options are unusable or the table cannot be created at start.
pub async fn run(options: WriterOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = MysqlHistory::new(&options.mysql_primary, &options.table)?;
    store.create_table().await?;
    info!(table = %options.table, queue = %options.names.history_queue, "history-writer started");
    loop {
        match drain(&options, &store, &shutdown).await {
            Ok(()) => break,
            Err(e) => warn!(
                error = format!("{e:#}"),
                "history-writer lost rabbitmq; reconnecting"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
    store.close().await;
    info!("history-writer stopped");
    Ok(())
}

/// One connection's worth of consuming; returns Ok on shutdown, Err when RabbitMQ is lost.
async fn drain(
    options: &WriterOptions,
    store: &MysqlHistory,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let connection = amqp::connect(&options.amqp).await?;
    let channel = connection.create_channel().await?;
    amqp::declare_topology(&channel, &options.names).await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            options.names.history_queue.as_str().into(),
            "history-writer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!("consuming the history queue");
    let result = loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(anyhow::anyhow!("consumer closed")),
        };
        match store_delivery(&delivery, store, shutdown).await {
            Stored::Yes => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Stored::Unreadable => {
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
            }
            // Unacked: RabbitMQ requeues it when this channel closes.
            Stored::ShuttingDown => break Ok(()),
        }
    };
    // Closing returns the unacked deliveries to the queue for the next writer.
    let _ = channel.close(200, "history-writer stopping".into()).await;
    let _ = connection
        .close(200, "history-writer stopping".into())
        .await;
    result
}

enum Stored {
    Yes,
    Unreadable,
    ShuttingDown,
}

/// Inserts one delivery, retrying until MariaDB takes it: a message is acked only once it is
/// in the table.
async fn store_delivery(
    delivery: &Delivery,
    store: &MysqlHistory,
    shutdown: &CancellationToken,
) -> Stored {
    let message = match serde_json::from_slice::<ChatMessage>(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "rejecting a message that is not chat json");
            return Stored::Unreadable;
        }
    };
    if let Err(e) = protocol::check_name("room", &message.room)
        .and_then(|()| protocol::check_name("user", &message.user))
        .and_then(|()| protocol::check_name("server", &message.server))
        .and_then(|()| protocol::check_msg(&message.text, Some(&message.id)))
    {
        warn!(
            id = message.id,
            error = e,
            "rejecting a message that cannot be stored"
        );
        return Stored::Unreadable;
    }
    let mut warned = false;
    loop {
        match store.insert(&message).await {
            Ok(added) => {
                if warned {
                    info!("mariadb is taking inserts again");
                }
                tracing::debug!(id = message.id, added, "stored");
                return Stored::Yes;
            }
            Err(e) => {
                if !warned {
                    warn!(
                        id = message.id,
                        error = format!("{e:#}"),
                        "insert failed; retrying"
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Stored::ShuttingDown,
                    _ = tokio::time::sleep(INSERT_RETRY_DELAY) => {}
                }
            }
        }
    }
}
