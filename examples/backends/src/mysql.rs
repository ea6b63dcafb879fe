//! Full mode: the MariaDB history table, written by history-writer and read by chat servers.

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use mysql_async::{Opts, Pool};

use crate::protocol::ChatMessage;

/// Default table; the demo only ever creates tables named `rlb_demo*`.
pub const DEFAULT_TABLE: &str = "rlb_demo_chat_messages";

/// A MariaDB pool and the history table it uses.
#[derive(Clone)]
pub struct MysqlHistory {
    pool: Pool,
    table: String,
}

impl MysqlHistory {
    /// Makes a pool for `url`; connects lazily, so an unreachable server shows up on first use.
    pub fn new(url: &str, table: &str) -> anyhow::Result<Self> {
        check_table_name(table)?;
        let opts = Opts::from_url(url).context("parsing mysql url")?;
        Ok(Self {
            pool: Pool::new(opts),
            table: table.to_owned(),
        })
    }

    pub async fn create_table(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get_conn().await.context("connecting to mysql")?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS `{}` (
                 seq    BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                 id     VARCHAR(128) NOT NULL,
                 room   VARCHAR(64) NOT NULL,
                 user   VARCHAR(64) NOT NULL,
                 text   TEXT NOT NULL,
                 server VARCHAR(64) NOT NULL,
                 ts     BIGINT NOT NULL,
                 UNIQUE KEY by_id (id),
                 KEY by_room (room, seq)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            self.table
        ))
        .await
        .with_context(|| format!("creating table {}", self.table))
    }

    /// Stores a message unless its id is already stored; returns once the insert has
    /// committed (autocommit), so the caller may then acknowledge it.
    pub async fn insert(&self, m: &ChatMessage) -> anyhow::Result<bool> {
        let mut conn = self.pool.get_conn().await.context("connecting to mysql")?;
        conn.exec_drop(
            format!(
                "INSERT IGNORE INTO `{}` (id, room, user, text, server, ts) VALUES (?, ?, ?, ?, ?, ?)",
                self.table
            ),
            (&m.id, &m.room, &m.user, &m.text, &m.server, m.ts),
        )
        .await
        .with_context(|| format!("inserting message {}", m.id))?;
        Ok(conn.affected_rows() > 0)
    }

    /// The newest `limit` messages of `room`, oldest first.
    pub async fn history(&self, room: &str, limit: u32) -> anyhow::Result<Vec<ChatMessage>> {
        let mut conn = self.pool.get_conn().await.context("connecting to mysql")?;
        let rows: Vec<(String, String, String, String, String, i64)> = conn
            .exec(
                format!(
                    "SELECT id, room, user, text, server, ts FROM (
                         SELECT seq, id, room, user, text, server, ts FROM `{}`
                         WHERE room = ? ORDER BY seq DESC LIMIT ?
                     ) newest ORDER BY seq",
                    self.table
                ),
                (room, limit),
            )
            .await
            .with_context(|| format!("reading history of room {room}"))?;
        Ok(rows
            .into_iter()
            .map(|(id, room, user, text, server, ts)| ChatMessage {
                id,
                room,
                user,
                text,
                server,
                ts,
            })
            .collect())
    }

    /// Drops the table; for tests that made their own.
    pub async fn drop_table(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!("DROP TABLE IF EXISTS `{}`", self.table))
            .await?;
        Ok(())
    }

    /// Closes the pool's connections politely.
    pub async fn close(self) {
        if let Err(e) = self.pool.disconnect().await {
            tracing::debug!(error = %e, "closing mysql pool");
        }
    }
}

/// The table name is put into SQL text, so only plain identifiers are allowed.
fn check_table_name(table: &str) -> anyhow::Result<()> {
    if table.is_empty()
        || table.len() > 64
        || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("table name {table:?} must be 1 to 64 characters of [A-Za-z0-9_]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names() {
        assert!(super::check_table_name("rlb_demo_x1").is_ok());
        assert!(super::check_table_name("x`; drop").is_err());
        assert!(super::check_table_name("").is_err());
    }
}
