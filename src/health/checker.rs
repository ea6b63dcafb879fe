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
use crate::server::Server;
use crate::snapshot::Shared;

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
    let probe = Arc::new(Probe::new(&health.check, &server));
    let probe = move |addr| {
        let probe = probe.clone();
        async move { probe.run(addr).await }
    };
    watch(shared, server, health, stop, probe).await;
}

/// `run` with the probe given: the schedule, the timeout and what each outcome does,
/// apart from how a server is asked (so the unit tests can script the answers).
async fn watch<F, Fut>(
    shared: Arc<Shared>,
    server: Arc<Server>,
    health: Health,
    stop: CancellationToken,
    probe: F,
) where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
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
        let outcome = match tokio::time::timeout(health.timeout, probe(server.addr)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Fail(format!("timeout after {:?}", health.timeout)),
        };
        let stats = &server.stats;
        stats.record_check(started.elapsed());
        tracing::debug!(upstream = %server.upstream, server = %server.addr, ?outcome, "check");
        if !matches!(outcome, Outcome::Unknown(_)) {
            unknown_streak = false;
        }
        match outcome {
            Outcome::Pass => {
                server.set_lag(None);
                let _ = record(&shared, &server, true, "");
            }
            Outcome::Fail(reason) => {
                stats.check_failures.fetch_add(1, Ordering::Relaxed);
                server.set_lag(None);
                let _ = record(&shared, &server, false, &reason);
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
                let flip = record(
                    &shared,
                    &server,
                    false,
                    &format!("replication lag {}s > {}s", lag.as_secs(), max.as_secs()),
                );
                // The fallback starts when the last server goes down for lag: say so
                // then, not at every check of every server while it lasts.
                if flip == Some(super::Flip::Down) {
                    warn_if_all_lagging(&shared, &server);
                }
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
/// the least-lagged one; say so. Called when a server goes down for lag, so once per
/// fallback.
fn warn_if_all_lagging(shared: &Shared, server: &Server) {
    let snapshot = shared.snapshot.load();
    let Some(upstream) = snapshot.upstream(&server.upstream) else {
        return;
    };
    if upstream
        .servers
        .iter()
        .all(|s| !s.available() && s.lag().is_some())
        && let Some(best) = upstream.least_lagged(&Default::default(), None)
    {
        tracing::warn!(
            upstream = %upstream.name,
            "every server is lagging; serving from the least-lagged, {}",
            upstream.servers[best].addr
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::server::Counters;

    /// rlb with one server and no checks of its own, so that the test runs the checker
    /// of that server with a scripted probe.
    fn one_server(rise: u32, fall: u32) -> (crate::Rlb, Arc<Server>) {
        let toml = r#"
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "db"
[upstreams.db]
servers = ["127.0.0.1:9"]
"#;
        let config = Config::parse(toml, "test.toml").expect("a valid config");
        let rlb = crate::Rlb::start(config, None).expect("rlb starts");
        let server = rlb
            .shared()
            .snapshot
            .load()
            .upstream("db")
            .expect("db")
            .servers[0]
            .clone();
        *server.health.lock().unwrap() = Counters::checked(rise, fall);
        (rlb, server)
    }

    /// What each probe answers, and how long it takes to answer (virtual time).
    type Script = Arc<Mutex<VecDeque<(Outcome, Duration)>>>;

    #[tokio::test(start_paused = true)]
    async fn rise_fall_and_timeout_on_the_paused_clock() {
        let (rlb, server) = one_server(2, 2);
        let health = Health {
            check: Check::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        };
        let refused = || Outcome::Fail("connection refused".to_string());
        let hang = Duration::from_secs(10);
        let script: Script = Arc::new(Mutex::new(VecDeque::from([
            (Outcome::Pass, Duration::ZERO),
            (refused(), Duration::ZERO),
            (refused(), Duration::ZERO), // 2/2: down
            (Outcome::Pass, Duration::ZERO),
            (Outcome::Pass, Duration::ZERO), // 2/2: up
            (Outcome::Pass, hang),           // cut by the timeout: a failure
            (Outcome::Pass, hang),           // 2/2: down
            (Outcome::Pass, Duration::ZERO),
            (Outcome::Unknown("NULL lag".into()), Duration::ZERO), // neither counts nor resets
            (Outcome::Pass, Duration::ZERO),                       // 2/2: up
        ])));
        // At each probe: when (ms since start) and the state the checks so far left.
        let seen: Arc<Mutex<Vec<(u128, bool)>>> = Arc::default();
        let start = tokio::time::Instant::now();
        let probe = {
            let (script, seen, server) = (script.clone(), seen.clone(), server.clone());
            move |_addr| {
                seen.lock()
                    .unwrap()
                    .push((start.elapsed().as_millis(), server.is_up()));
                let next = script.lock().unwrap().pop_front();
                async move {
                    let (outcome, takes) = next.unwrap_or((Outcome::Pass, Duration::ZERO));
                    tokio::time::sleep(takes).await;
                    outcome
                }
            }
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            rlb.shared().clone(),
            server.clone(),
            health,
            stop.clone(),
            probe,
        ));
        while seen.lock().unwrap().len() < 11 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        task.await.expect("the checker ends when stopped");

        let (up, down) = (true, false);
        #[rustfmt::skip]
        let expected = vec![
            (0, up), (1000, up), (2000, up), (3000, down), (4000, down),
            (5000, up), (6000, up), (7000, down), (8000, down), (9000, down),
            (10000, up),
        ];
        assert_eq!(seen.lock().unwrap()[..11], expected[..]);
        let events: Vec<(&str, Option<String>)> = rlb
            .shared()
            .events
            .snapshot()
            .into_iter()
            .map(|e| (e.event.name(), e.detail))
            .collect();
        assert_eq!(
            events,
            vec![
                ("server_down", Some("connection refused (2/2)".to_string())),
                ("server_up", None),
                ("server_down", Some("timeout after 500ms (2/2)".to_string())),
                ("server_up", None),
            ]
        );
        assert_eq!(server.stats.check_count.load(Ordering::Relaxed), 11);
        assert_eq!(server.stats.check_failures.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_longer_than_the_interval_delays_the_next_not_doubles_it() {
        let (rlb, server) = one_server(1, 3);
        let health = Health {
            check: Check::Tcp,
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(600),
            rise: 1,
            fall: 3,
        };
        let seen: Arc<Mutex<Vec<u128>>> = Arc::default();
        let start = tokio::time::Instant::now();
        let probe = {
            let seen = seen.clone();
            move |_addr| {
                seen.lock().unwrap().push(start.elapsed().as_millis());
                // A frozen server: every probe hangs until the timeout.
                std::future::pending::<Outcome>()
            }
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            rlb.shared().clone(),
            server.clone(),
            health,
            stop.clone(),
            probe,
        ));
        while seen.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.expect("the checker ends when stopped");
        // Each probe starts as soon as the last one timed out, without a burst of
        // missed ticks: down after 3 timeouts, 1.8 s.
        assert_eq!(seen.lock().unwrap()[..4], [0, 600, 1200, 1800]);
        assert!(!server.is_up());
        let down = rlb.shared().events.snapshot();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].detail.as_deref(), Some("timeout after 600ms (3/3)"));
    }
}
