//! Embedded mode: history in one SQLite file (WAL) that every chat server writes and polls.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use rusqlite::{Connection, OptionalExtension, params};

use crate::protocol::ChatMessage;

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the shared SQLite file; cheap to clone, calls run on the blocking pool.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the file, switches it to WAL and creates the table.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path)
                .with_context(|| format!("opening sqlite file {}", path.display()))?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Chat servers starting together on a new file race to switch it to WAL and
            // create the table; SQLite answers some of those lock upgrades with an
            // immediate "database is locked" instead of waiting, so try again.
            let started = std::time::Instant::now();
            loop {
                match setup(&conn, &path) {
                    Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    other => break other,
                }
            }?;
            Ok(Self {
                conn: Arc::new(Mutex::new(conn)),
            })
        })
        .await?
    }

    async fn with_conn<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| anyhow!("sqlite connection lock poisoned"))?;
            Ok(f(&conn)?)
        })
        .await?
    }

    /// Stores a message; a message whose id is already stored is left alone.
    /// Returns whether a row was added.
    pub async fn insert(&self, message: ChatMessage) -> anyhow::Result<bool> {
        self.with_conn(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO messages (id, room, user, text, server, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    message.id,
                    message.room,
                    message.user,
                    message.text,
                    message.server,
                    message.ts
                ],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// The newest `limit` messages of `room`, oldest first.
    pub async fn history(&self, room: String, limit: u32) -> anyhow::Result<Vec<ChatMessage>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, room, user, text, server, ts FROM messages
                 WHERE room = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let mut rows = stmt
                .query_map(params![room, limit], row_to_message)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// The highest sequence number stored, 0 for an empty table.
    pub async fn last_seq(&self) -> anyhow::Result<i64> {
        self.with_conn(|c| {
            c.query_row("SELECT MAX(seq) FROM messages", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()
            .map(|v| v.flatten().unwrap_or(0))
        })
        .await
    }

    /// Messages stored after `seq`, in order, with their sequence numbers.
    pub async fn after(&self, seq: i64) -> anyhow::Result<Vec<(i64, ChatMessage)>> {
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, room, user, text, server, ts FROM messages
                 WHERE seq > ?1 ORDER BY seq LIMIT 1000",
            )?;
            stmt.query_map([seq], |r| {
                Ok((
                    r.get(0)?,
                    ChatMessage {
                        id: r.get(1)?,
                        room: r.get(2)?,
                        user: r.get(3)?,
                        text: r.get(4)?,
                        server: r.get(5)?,
                        ts: r.get(6)?,
                    },
                ))
            })?
            .collect()
        })
        .await
    }
}

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    Ok(ChatMessage {
        id: r.get(0)?,
        room: r.get(1)?,
        user: r.get(2)?,
        text: r.get(3)?,
        server: r.get(4)?,
        ts: r.get(5)?,
    })
}

/// Switches the file to WAL and creates the table if missing.
fn setup(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(anyhow!(
            "sqlite file {} refused WAL mode (got {mode})",
            path.display()
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS messages (
             seq    INTEGER PRIMARY KEY,
             id     TEXT NOT NULL UNIQUE,
             room   TEXT NOT NULL,
             user   TEXT NOT NULL,
             text   TEXT NOT NULL,
             server TEXT NOT NULL,
             ts     INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS messages_room_seq ON messages (room, seq);",
    )
    .with_context(|| format!("creating tables in {}", path.display()))?;
    Ok(())
}

/// SQLITE_BUSY or SQLITE_LOCKED, anywhere in the chain.
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}
