//! The mysql probe: greeting, login, optional replication lag, clean COM_QUIT.
//!
//! One probe is one connection: TCP connect, the server's greeting, login as the
//! configured user, with `read_lag` one `SHOW REPLICA STATUS`, then COM_QUIT. Nothing
//! else is sent: no pool, no statement cache, no settings query, no reconnect over the
//! unix socket. A probe that logs in and quits does not raise the server's
//! `Aborted_connects` or `Aborted_clients`, so a health checker never trips
//! `max_connect_errors` and never pollutes the operator's counters; a refused login does
//! count there, as it does for any client.
//!
//! The probe has no timeout of its own: the caller wraps it in `tokio::time::timeout`.
//! Everything inside is async, so a server that accepts and never greets (a stopped
//! process, a full backlog) only costs the caller's timeout.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};

/// What the client tells the server it accepts per packet. The server's own default; a
/// status row is a few kilobytes, and a bigger packet from a confused server is refused
/// instead of buffered.
const MAX_ALLOWED_PACKET: usize = 4 * 1024 * 1024;

/// Given explicitly so that mysql_async does not ask the server for it after login. It
/// only matters for pooled connections, which the probe never keeps.
const WAIT_TIMEOUT_S: usize = 28_800;

/// `ER_PARSE_ERROR`: the server predates `SHOW REPLICA STATUS` (MySQL < 8.0.22,
/// MariaDB < 10.5.1), so ask the old way.
const ER_PARSE_ERROR: u16 = 1064;
/// `ER_ACCESS_DENIED_ERROR`: unknown user or wrong password.
const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// Errors a server sends instead of its greeting: too many connections, host blocked
/// after `max_connect_errors`, host not allowed to connect.
const REFUSED_BEFORE_LOGIN: [u16; 3] = [1040, 1129, 1130];

/// Column names of the lag, old and new spelling (MySQL 8.0.22 renamed it; MariaDB
/// keeps `Seconds_Behind_Master` under both statements).
const LAG_COLUMNS: [&str; 2] = ["Seconds_Behind_Master", "Seconds_Behind_Source"];

/// How to probe one mysql server; the address comes with each call.
#[derive(Clone)]
pub struct MysqlProbe {
    /// The login user, e.g. a user with no privileges for a login-only check (what
    /// HAProxy's mysql-check does), or one allowed to read replication status.
    pub user: String,
    /// Never logged nor printed (`Debug` redacts it).
    pub password: Option<String>,
    /// Read `Seconds_Behind_Master` after login. Needs `SLAVE MONITOR` on MariaDB
    /// ≥ 10.5.9 (where `REPLICATION CLIENT` no longer allows it), `REPLICATION CLIENT`
    /// on MySQL.
    pub read_lag: bool,
}

impl fmt::Debug for MysqlProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlProbe")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("read_lag", &self.read_lag)
            .finish()
    }
}

/// The replication state a successful probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `read_lag` was off: the server greeted and accepted the login.
    NotAsked,
    /// No replication configured (`SHOW REPLICA STATUS` returned no row): a primary
    /// or a standalone server.
    NotReplica,
    /// `Seconds_Behind_Master` is NULL: a replication thread is not running, including
    /// while the replica's primary is unreachable. A state of its own, not a large lag:
    /// when the primary blips, every replica reads NULL at once.
    Stopped,
    /// Both threads run and the replica applies events this far behind its primary.
    Behind(Duration),
}

/// Why a probe failed; each message names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Nothing listens on the address: the server is down.
    #[error("connection refused")]
    Refused,
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The connection ended before the login finished, usually before any greeting.
    #[error("no greeting: connection closed by the server before login completed")]
    Closed,
    /// The server answered the connect with an error instead of a greeting.
    #[error("server refused the connection: {message} (error {code})")]
    RefusedByServer { code: u16, message: String },
    #[error("access denied for user '{user}': {message}")]
    AccessDenied { user: String, message: String },
    #[error("login failed for user '{user}': {message} (error {code})")]
    Login {
        user: String,
        code: u16,
        message: String,
    },
    /// `SHOW REPLICA STATUS` failed, typically for want of a privilege (error 1227).
    #[error("replication status query failed: {message} (error {code})")]
    StatusQuery { code: u16, message: String },
    #[error("unexpected replication status: {0}")]
    BadStatus(String),
    /// Something that is not a mysql server, or a broken one, answered.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection broke after login.
    #[error("connection lost: {0}")]
    Lost(#[source] io::Error),
}

/// Where in the conversation an error happened; the same io error means different
/// things before and after login.
#[derive(Clone, Copy)]
enum Step {
    Login,
    Status,
    Quit,
}

impl MysqlProbe {
    /// Runs one probe against `addr`. Wrap it in `tokio::time::timeout`.
    pub async fn probe(&self, addr: SocketAddr) -> Result<Replication, MysqlError> {
        // mysql_async panics on some malformed input (e.g. a bad RSA key during
        // caching_sha2_password full auth); a broken server must fail the probe, not
        // take down the checker task.
        match AssertUnwindSafe(self.run(addr)).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err(MysqlError::Protocol(
                "the mysql client panicked on the server's reply".to_owned(),
            )),
        }
    }

    async fn run(&self, addr: SocketAddr) -> Result<Replication, MysqlError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .tcp_port(addr.port())
            .resolved_ips(Some(vec![addr.ip()]))
            .user(Some(self.user.as_str()))
            .pass(self.password.as_deref())
            .db_name(None::<String>)
            // No reconnect over the unix socket named by @@socket.
            .prefer_socket(false)
            // Known up front, so the client sends no SELECT @@... after login.
            .max_allowed_packet(Some(MAX_ALLOWED_PACKET))
            .wait_timeout(Some(WAIT_TIMEOUT_S))
            .stmt_cache_size(0)
            .init(Vec::<String>::new())
            .setup(Vec::<String>::new())
            .tcp_nodelay(true);

        let mut conn = Conn::new(opts)
            .await
            .map_err(|e| self.error(Step::Login, e))?;
        let outcome = if self.read_lag {
            read_replication(&mut conn).await.map_err(|e| match e {
                StatusError::Client(e) => self.error(Step::Status, e),
                StatusError::Unreadable(why) => MysqlError::BadStatus(why),
            })
        } else {
            Ok(Replication::NotAsked)
        };
        // COM_QUIT even after a failed status query: a connection dropped without it
        // counts as an aborted client on the server.
        let quit = conn
            .disconnect()
            .await
            .map_err(|e| self.error(Step::Quit, e));
        let replication = outcome?;
        quit?;
        Ok(replication)
    }

    fn error(&self, step: Step, error: mysql_async::Error) -> MysqlError {
        match error {
            mysql_async::Error::Server(e) => match step {
                Step::Login if e.code == ER_ACCESS_DENIED_ERROR => MysqlError::AccessDenied {
                    user: self.user.clone(),
                    message: e.message,
                },
                Step::Login if REFUSED_BEFORE_LOGIN.contains(&e.code) => {
                    MysqlError::RefusedByServer {
                        code: e.code,
                        message: e.message,
                    }
                }
                Step::Login => MysqlError::Login {
                    user: self.user.clone(),
                    code: e.code,
                    message: e.message,
                },
                Step::Status => MysqlError::StatusQuery {
                    code: e.code,
                    message: e.message,
                },
                Step::Quit => MysqlError::Protocol(format!(
                    "error {} in reply to COM_QUIT: {}",
                    e.code, e.message
                )),
            },
            mysql_async::Error::Io(mysql_async::IoError::Io(e)) => io_error(step, e),
            #[allow(unreachable_patterns)] // TLS errors exist only with a TLS feature.
            mysql_async::Error::Io(e) => MysqlError::Protocol(lowercase_first(&e.to_string())),
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
                io_error(step, io::ErrorKind::UnexpectedEof.into())
            }
            mysql_async::Error::Driver(e) => MysqlError::Protocol(lowercase_first(&e.to_string())),
            mysql_async::Error::Other(e) => MysqlError::Protocol(lowercase_first(&e.to_string())),
            mysql_async::Error::Url(e) => MysqlError::Protocol(lowercase_first(&e.to_string())),
        }
    }
}

fn io_error(step: Step, e: io::Error) -> MysqlError {
    use io::ErrorKind::*;
    match (step, e.kind()) {
        (Step::Login, ConnectionRefused) => MysqlError::Refused,
        (Step::Login, UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe) => {
            MysqlError::Closed
        }
        // The packet codec reports malformed packets as io errors of these kinds.
        (_, InvalidData | InvalidInput | Other) => {
            MysqlError::Protocol(lowercase_first(&e.to_string()))
        }
        (Step::Login, _) => MysqlError::Connect(e),
        (Step::Status | Step::Quit, _) => MysqlError::Lost(e),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

async fn read_replication(conn: &mut Conn) -> Result<Replication, StatusError> {
    let rows: Vec<Row> = match conn.query("SHOW REPLICA STATUS").await {
        Err(mysql_async::Error::Server(e)) if e.code == ER_PARSE_ERROR => {
            conn.query("SHOW SLAVE STATUS").await?
        }
        other => other?,
    };
    let mut lags = Vec::with_capacity(rows.len());
    for row in &rows {
        let column = row.columns_ref().iter().position(|c| {
            LAG_COLUMNS
                .iter()
                .any(|name| c.name_ref() == name.as_bytes())
        });
        lags.push(column.and_then(|i| row.as_ref(i)));
    }
    replication_from_lags(lags).map_err(StatusError::Unreadable)
}

/// `read_replication`'s error before it is named: a client error (mapped like any
/// other, for its step) or a status the probe cannot read.
enum StatusError {
    Client(mysql_async::Error),
    Unreadable(String),
}

impl From<mysql_async::Error> for StatusError {
    fn from(e: mysql_async::Error) -> Self {
        Self::Client(e)
    }
}

/// The lag of each status row (one per replication channel): `None` when the row has
/// no lag column. No row: not a replica; any NULL: stopped; else the largest lag.
fn replication_from_lags<'a>(
    lags: impl IntoIterator<Item = Option<&'a Value>>,
) -> Result<Replication, String> {
    let mut replication = Replication::NotReplica;
    for lag in lags {
        let seconds = match lag {
            None => return Err("no Seconds_Behind_Master column".to_owned()),
            Some(Value::NULL) => return Ok(Replication::Stopped),
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            Some(Value::UInt(n)) => Some(*n),
            Some(Value::Bytes(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
            Some(_) => None,
        };
        let Some(seconds) = seconds else {
            return Err(format!("Seconds_Behind_Master is {lag:?}"));
        };
        let lag = Duration::from_secs(seconds);
        replication = match replication {
            Replication::Behind(max) if max >= lag => Replication::Behind(max),
            _ => Replication::Behind(lag),
        };
    }
    Ok(replication)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn no_row_is_not_a_replica() {
        assert_eq!(replication_from_lags([]), Ok(Replication::NotReplica));
    }

    #[test]
    fn numeric_lag_in_text_or_binary_form() {
        let lag = |v: Value| replication_from_lags([Some(&v)]);
        assert_eq!(lag(bytes("0")), Ok(Replication::Behind(Duration::ZERO)));
        assert_eq!(
            lag(bytes("30")),
            Ok(Replication::Behind(Duration::from_secs(30)))
        );
        assert_eq!(
            lag(Value::Int(7)),
            Ok(Replication::Behind(Duration::from_secs(7)))
        );
        assert_eq!(
            lag(Value::UInt(8)),
            Ok(Replication::Behind(Duration::from_secs(8)))
        );
    }

    #[test]
    fn null_lag_is_stopped_not_behind() {
        assert_eq!(
            replication_from_lags([Some(&Value::NULL)]),
            Ok(Replication::Stopped)
        );
        let ok = bytes("3");
        let rows = [Some(&ok), Some(&Value::NULL)];
        assert_eq!(replication_from_lags(rows), Ok(Replication::Stopped));
    }

    #[test]
    fn several_channels_report_the_largest_lag() {
        let (a, b, c) = (bytes("3"), bytes("12"), bytes("5"));
        let rows = [Some(&a), Some(&b), Some(&c)];
        assert_eq!(
            replication_from_lags(rows),
            Ok(Replication::Behind(Duration::from_secs(12)))
        );
    }

    #[test]
    fn unreadable_lag_is_an_error() {
        assert!(replication_from_lags([None]).is_err());
        let v = bytes("soon");
        assert!(replication_from_lags([Some(&v)]).is_err());
        let v = Value::Int(-1);
        assert!(replication_from_lags([Some(&v)]).is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let probe = MysqlProbe {
            user: "rlb_monitor".to_owned(),
            password: Some("monitorpass".to_owned()),
            read_lag: true,
        };
        let shown = format!("{probe:?}");
        assert!(
            shown.contains("rlb_monitor") && !shown.contains("monitorpass"),
            "{shown}"
        );
    }
}
