//! The active checks: one task per (upstream, server), probing by tcp connect, http GET
//! or mysql login (with replication lag), feeding the rise/fall state machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::mysql::{MysqlProbe, Replication};
use super::{io_reason, record};
use crate::config::{Check, Health};
use crate::runtime::Shared;
use crate::server::Server;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// A replica further behind than `max_replication_lag`: a failure, but one the
    /// balancer may still fall back on when every server lags.
    Lagging(Duration),
    /// Nothing to conclude (replication stopped: `Seconds_Behind_Master` is NULL); the
    /// server keeps its state, so a primary blip does not eject every replica.
    Unknown(String),
}

enum Probe {
    Tcp,
    Http {
        path: String,
    },
    Mysql {
        probe: MysqlProbe,
        max_lag: Option<Duration>,
    },
}

impl Probe {
    fn new(check: &Check, server: &Server) -> Probe {
        match check {
            Check::Tcp => Probe::Tcp,
            Check::Http { path } => Probe::Http { path: path.clone() },
            Check::Mysql {
                user,
                password_env,
                max_replication_lag,
            } => {
                let password = password_env.as_ref().and_then(|name| match std::env::var(name) {
                    Ok(password) => Some(password),
                    Err(_) => {
                        tracing::warn!(upstream = %server.upstream, server = %server.addr, "password_env `{name}` is not set; logging in without a password");
                        None
                    }
                });
                Probe::Mysql {
                    probe: MysqlProbe {
                        user: user.clone(),
                        password,
                        read_lag: max_replication_lag.is_some(),
                    },
                    max_lag: *max_replication_lag,
                }
            }
        }
    }

    async fn run(&self, addr: SocketAddr) -> Outcome {
        match self {
            Probe::Tcp => match TcpStream::connect(addr).await {
                Ok(_) => Outcome::Pass,
                Err(e) => Outcome::Fail(io_reason(&e)),
            },
            Probe::Http { path } => http_probe(addr, path).await,
            Probe::Mysql { probe, max_lag } => match probe.probe(addr).await {
                Err(e) => Outcome::Fail(e.to_string()),
                Ok(Replication::Behind(lag)) if max_lag.is_some_and(|max| lag > max) => {
                    Outcome::Lagging(lag)
                }
                Ok(Replication::Stopped) if max_lag.is_some() => Outcome::Unknown(
                    "replication is stopped (Seconds_Behind_Master is NULL)".to_string(),
                ),
                Ok(_) => Outcome::Pass,
            },
        }
    }
}

async fn http_probe(addr: SocketAddr, path: &str) -> Outcome {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return Outcome::Fail(io_reason(&e)),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return Outcome::Fail(format!("http: {e}")),
        };
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "rlb-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(request) => request,
        Err(e) => return Outcome::Fail(format!("bad check path `{path}`: {e}")),
    };
    let outcome = match sender.send_request(request).await {
        Ok(response) if response.status().is_success() || response.status().is_redirection() => {
            Outcome::Pass
        }
        Ok(response) => Outcome::Fail(format!("http status {}", response.status().as_u16())),
        Err(e) => Outcome::Fail(format!("http: {e}")),
    };
    connection.abort();
    outcome
}

/// Probes `server` every `interval` (the first at once) until `stop`.
pub async fn run(
    shared: Arc<Shared>,
    server: Arc<Server>,
    health: Health,
    stop: CancellationToken,
) {
    let probe = Probe::new(&health.check, &server);
    let mut ticks = tokio::time::interval(health.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unknown_streak = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(health.timeout, probe.run(server.addr)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Fail(format!("timeout after {:?}", health.timeout)),
        };
        let stats = &server.stats;
        stats.check_count.fetch_add(1, Ordering::Relaxed);
        stats
            .check_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(upstream = %server.upstream, server = %server.addr, ?outcome, "check");
        if !matches!(outcome, Outcome::Unknown(_)) {
            unknown_streak = false;
        }
        match outcome {
            Outcome::Pass => {
                server.set_lag(None);
                record(&shared, &server, true, "");
            }
            Outcome::Fail(reason) => {
                stats.check_failures.fetch_add(1, Ordering::Relaxed);
                server.set_lag(None);
                record(&shared, &server, false, &reason);
            }
            Outcome::Lagging(lag) => {
                stats.check_failures.fetch_add(1, Ordering::Relaxed);
                server.set_lag(Some(lag));
                let max = match &health.check {
                    Check::Mysql {
                        max_replication_lag,
                        ..
                    } => max_replication_lag.unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                record(
                    &shared,
                    &server,
                    false,
                    &format!("replication lag {}s > {}s", lag.as_secs(), max.as_secs()),
                );
                warn_if_all_lagging(&shared, &server);
            }
            Outcome::Unknown(reason) => {
                if !unknown_streak {
                    tracing::warn!(upstream = %server.upstream, server = %server.addr, "{reason}; keeping the server {}", server.state().name());
                    unknown_streak = true;
                }
            }
        }
    }
}

/// When every server of the upstream is out for lag alone, the balancer falls back on
/// the least-lagged one; say so once per check round.
fn warn_if_all_lagging(shared: &Shared, server: &Server) {
    let snapshot = shared.snapshot.load();
    let Some(upstream) = snapshot.upstream(&server.upstream) else {
        return;
    };
    if upstream
        .servers
        .iter()
        .all(|s| !s.available() && s.lag().is_some())
        && let Some(best) = upstream.least_lagged(&Default::default())
    {
        tracing::warn!(
            upstream = %upstream.name,
            "every server is lagging; serving from the least-lagged, {}",
            upstream.servers[best].addr
        );
    }
}
