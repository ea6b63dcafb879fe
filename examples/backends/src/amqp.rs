//! Full mode: the RabbitMQ fanout exchange that carries chat messages between chat servers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::protocol::ChatMessage;

pub const DEFAULT_EXCHANGE: &str = "rlb.chat";
pub const DEFAULT_HISTORY_QUEUE: &str = "rlb.chat.history";
/// Pause between attempts to reach RabbitMQ again after losing it.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Names of the exchange and of the durable queue feeding history-writer.
#[derive(Debug, Clone)]
pub struct AmqpNames {
    pub exchange: String,
    pub history_queue: String,
}

impl Default for AmqpNames {
    fn default() -> Self {
        Self {
            exchange: DEFAULT_EXCHANGE.into(),
            history_queue: DEFAULT_HISTORY_QUEUE.into(),
        }
    }
}

pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting to rabbitmq")
}

/// Declares the fanout exchange and the durable history queue bound to it. Chat servers
/// declare it too, so messages sent before history-writer ever ran are kept for it.
pub async fn declare_topology(channel: &Channel, names: &AmqpNames) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {}", names.exchange))?;
    channel
        .queue_declare(
            names.history_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring queue {}", names.history_queue))?;
    channel
        .queue_bind(
            names.history_queue.as_str().into(),
            names.exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding queue {}", names.history_queue))?;
    Ok(())
}

/// One live connection: a confirming channel to publish on and this chat server's own
/// exclusive queue to consume from.
struct Session {
    connection: Connection,
    publisher: Channel,
    consumer: Consumer,
}

/// A chat server's link to the exchange; reconnects on its own after losing RabbitMQ.
pub struct AmqpBus {
    url: String,
    names: AmqpNames,
    server: String,
    /// None while RabbitMQ is unreachable; `/healthz` fails meanwhile.
    publisher: Mutex<Option<Channel>>,
}

impl AmqpBus {
    /// Connects (failing if RabbitMQ is unreachable now) and spawns the task that pushes
    /// every message from the exchange into `fanout`.
    pub async fn start(
        url: String,
        names: AmqpNames,
        server: String,
        fanout: broadcast::Sender<Arc<ChatMessage>>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Arc<Self>> {
        let bus = Arc::new(Self {
            url,
            names,
            server,
            publisher: Mutex::new(None),
        });
        let session = bus.open_session().await?;
        let task_bus = bus.clone();
        tracker.spawn(
            async move { task_bus.run(session, fanout, shutdown).await }
                .instrument(tracing::info_span!("amqp")),
        );
        Ok(bus)
    }

    async fn open_session(&self) -> anyhow::Result<Session> {
        let connection = connect(&self.url).await?;
        let publisher = connection.create_channel().await?;
        declare_topology(&publisher, &self.names).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let receiver = connection.create_channel().await?;
        let queue = format!(
            "{}.live.{}.{:x}",
            self.names.exchange,
            self.server,
            crate::protocol::now_millis()
        );
        receiver
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
        receiver
            .queue_bind(
                queue.as_str().into(),
                self.names.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = receiver
            .basic_consume(
                queue.as_str().into(),
                self.server.as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.set_publisher(Some(publisher.clone()));
        info!(queue, exchange = %self.names.exchange, "consuming from rabbitmq");
        Ok(Session {
            connection,
            publisher,
            consumer,
        })
    }

    fn set_publisher(&self, channel: Option<Channel>) {
        if let Ok(mut p) = self.publisher.lock() {
            *p = channel;
        }
    }

    async fn run(
        self: Arc<Self>,
        mut session: Session,
        fanout: broadcast::Sender<Arc<ChatMessage>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let lost = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    delivery = session.consumer.next() => match delivery {
                        Some(Ok(d)) => match serde_json::from_slice::<ChatMessage>(&d.data) {
                            Ok(m) => {
                                // No receiver just means no WebSocket is open right now.
                                let _ = fanout.send(Arc::new(m));
                            }
                            Err(e) => warn!(error = %e, "dropping a message that is not chat json"),
                        },
                        Some(Err(e)) => break Some(e.to_string()),
                        None => break Some("consumer closed".to_owned()),
                    },
                }
            };
            self.set_publisher(None);
            let Some(reason) = lost else {
                let _ = session.publisher.close(200, "shutting down".into()).await;
                let _ = session.connection.close(200, "shutting down".into()).await;
                return;
            };
            warn!(reason, "lost rabbitmq; reconnecting");
            drop(session);
            session = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
                match self.open_session().await {
                    Ok(s) => break s,
                    Err(e) => warn!(error = format!("{e:#}"), "rabbitmq still unreachable"),
                }
            };
            info!("rabbitmq is back");
        }
    }

    pub fn connected(&self) -> bool {
        self.publisher.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    /// Publishes a persistent message and waits for RabbitMQ's confirm.
    pub async fn publish(&self, message: &ChatMessage) -> anyhow::Result<()> {
        let channel = self
            .publisher
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .context("rabbitmq is unreachable")?;
        let payload = serde_json::to_vec(message)?;
        let confirm = channel
            .basic_publish(
                self.names.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(message.id.as_str().into()),
            )
            .await
            .context("publishing to rabbitmq")?
            .await
            .context("waiting for rabbitmq's confirm")?;
        if confirm.is_nack() {
            bail!("rabbitmq refused message {}", message.id);
        }
        Ok(())
    }
}
