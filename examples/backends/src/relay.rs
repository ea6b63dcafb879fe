//! How a chat server hands messages to the other chat servers and reads history, per mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::amqp::{AmqpBus, AmqpNames};
use crate::mysql::MysqlHistory;
use crate::protocol::ChatMessage;
use crate::sqlite::SqliteStore;

/// Default shared SQLite file of embedded mode.
pub const DEFAULT_DB: &str = "/tmp/rlb-demo-chat.sqlite";
/// How often embedded mode looks for rows written by other chat servers.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Where messages go and where history comes from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One SQLite file shared by all chat servers on this machine; nothing else needed.
    Embedded {
        db: PathBuf,
        poll_interval: Duration,
    },
    /// RabbitMQ fanout for live delivery, MariaDB (filled by history-writer) for history.
    Full {
        amqp: String,
        mysql_read: String,
        names: AmqpNames,
        table: String,
    },
}

impl Mode {
    pub fn embedded(db: impl Into<PathBuf>) -> Self {
        Mode::Embedded {
            db: db.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

pub enum Relay {
    Embedded(SqliteStore),
    Full {
        bus: Arc<AmqpBus>,
        history: MysqlHistory,
    },
}

impl Relay {
    /// Opens the mode's stores and spawns the task that feeds `fanout` with every new
    /// message, from any chat server.
    pub async fn start(
        mode: &Mode,
        server: &str,
        fanout: broadcast::Sender<Arc<ChatMessage>>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Self> {
        match mode {
            Mode::Embedded { db, poll_interval } => {
                let store = SqliteStore::open(db).await?;
                let from = store.last_seq().await?;
                info!(db = %db.display(), from, "embedded mode: polling the shared sqlite file");
                tracker.spawn(
                    poll(store.clone(), from, *poll_interval, fanout, shutdown)
                        .instrument(tracing::info_span!("sqlite_poll")),
                );
                Ok(Relay::Embedded(store))
            }
            Mode::Full {
                amqp,
                mysql_read,
                names,
                table,
            } => {
                let history = MysqlHistory::new(mysql_read, table)?;
                let bus = AmqpBus::start(
                    amqp.clone(),
                    names.clone(),
                    server.to_owned(),
                    fanout,
                    shutdown,
                    tracker,
                )
                .await?;
                info!(exchange = %names.exchange, table, "full mode: rabbitmq + mariadb");
                Ok(Relay::Full { bus, history })
            }
        }
    }

    /// Hands a message to every chat server; returns once it is durable (stored in SQLite,
    /// or confirmed by RabbitMQ).
    pub async fn publish(&self, message: ChatMessage) -> anyhow::Result<()> {
        match self {
            Relay::Embedded(store) => store.insert(message).await.map(|_| ()),
            Relay::Full { bus, .. } => bus.publish(&message).await,
        }
    }

    pub async fn history(&self, room: &str, limit: u32) -> anyhow::Result<Vec<ChatMessage>> {
        match self {
            Relay::Embedded(store) => store.history(room.to_owned(), limit).await,
            Relay::Full { history, .. } => history.history(room, limit).await,
        }
    }

    /// Why this chat server cannot serve chat right now, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        match self {
            Relay::Embedded(_) => None,
            Relay::Full { bus, .. } => (!bus.connected()).then_some("rabbitmq unreachable"),
        }
    }

    pub async fn close(self) {
        if let Relay::Full { history, .. } = self {
            history.close().await;
        }
    }
}

/// Embedded mode's delivery: every row past `seq`, whoever wrote it, goes to `fanout`.
/// SQLite assigns rowids under its write lock, so a reader never sees row N+1 before N.
async fn poll(
    store: SqliteStore,
    mut seq: i64,
    every: Duration,
    fanout: broadcast::Sender<Arc<ChatMessage>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.after(seq).await {
            Ok(rows) => {
                failing = false;
                for (s, m) in rows {
                    seq = s;
                    let _ = fanout.send(Arc::new(m));
                }
            }
            Err(e) if !failing => {
                failing = true;
                warn!(
                    error = format!("{e:#}"),
                    "reading the shared sqlite file failed"
                );
            }
            Err(_) => {}
        }
    }
}
