//! Tests of the MariaDB fixture itself: the faults the mysql checks are tested against
//! must look to a client exactly as the notes say. These tests fail, never skip, when
//! mariadbd is missing: CI installs it (scripts/install-test-deps.sh).

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::mariadb::MariaDbCluster;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads the first bytes a server sends after connect: its greeting.
fn read_greeting(port: u16, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr(port), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = [0; 256];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// A MySQL protocol greeting: a packet with sequence id 0 whose payload starts with
/// protocol version 10. The version string is not parsed (MariaDB 10 prefixes "5.5.5-").
fn assert_greeting(bytes: &[u8]) {
    assert!(bytes.len() > 5, "short greeting {bytes:02x?}");
    assert_eq!(bytes[3], 0, "sequence id of the greeting");
    assert_eq!(bytes[4], 0x0a, "protocol version byte in {bytes:02x?}");
}

fn start() -> MariaDbCluster {
    let started = Instant::now();
    let cluster = MariaDbCluster::start().expect("start the MariaDB cluster");
    eprintln!(
        "cluster started in {:?} at {}",
        started.elapsed(),
        cluster.base().display()
    );
    cluster
}

#[test]
fn mariadbd_is_installed() {
    assert!(
        MariaDbCluster::available(),
        "mariadbd not found: run scripts/install-test-deps.sh as root"
    );
}

#[test]
fn replication_users_and_greeting() {
    let cluster = start();
    for n in 0..3 {
        assert_greeting(&read_greeting(cluster.port(n), Duration::from_secs(2)).unwrap());
    }
    assert_eq!(cluster.sql(0, "SELECT @@read_only").unwrap(), "0");
    assert_eq!(cluster.sql(1, "SELECT @@read_only").unwrap(), "1");

    cluster
        .sql(0, "INSERT INTO rlbtest.probe VALUES (42, 'fixture')")
        .unwrap();
    let pos = cluster.sql(0, "SELECT @@gtid_binlog_pos").unwrap();
    for n in [1, 2] {
        let wait = format!("SELECT MASTER_GTID_WAIT('{pos}', 10)");
        assert_eq!(cluster.sql(n, &wait).unwrap(), "0", "replica {n} caught up");
        let row = cluster.sql(n, "SELECT v FROM rlbtest.probe WHERE id = 42");
        assert_eq!(row.unwrap(), "fixture", "replica {n} has the row");
        let status = cluster.slave_status(n).unwrap();
        assert_eq!(status["Slave_IO_Running"], "Yes");
        assert_eq!(status["Slave_SQL_Running"], "Yes");
    }
    assert!(
        cluster.slave_status(0).unwrap().is_empty(),
        "primary is no replica"
    );

    // rlb_check: login only, no privileges (what HAProxy's mysql-check uses).
    let who = cluster.tcp_sql(2, "rlb_check", None, "SELECT CURRENT_USER()");
    assert_eq!(who.unwrap(), "rlb_check@127.0.0.1");
    let denied = cluster.tcp_sql(2, "rlb_check", None, "SHOW SLAVE STATUS");
    assert!(denied.unwrap_err().to_string().contains("1227"));
    // rlb_monitor may read replication status (SLAVE MONITOR on MariaDB >= 10.5.9).
    let status = cluster.tcp_sql(2, "rlb_monitor", Some("monitorpass"), "SHOW SLAVE STATUS");
    assert!(status.unwrap().contains("Yes\tYes"));
    let wrong = cluster.tcp_sql(2, "rlb_monitor", Some("wrong"), "SELECT 1");
    assert!(wrong.unwrap_err().to_string().contains("Access denied"));
}

#[test]
fn kill_refuses_at_once_and_restart_greets_again() {
    let cluster = start();
    let port = cluster.replica_port(1);

    let killed = Instant::now();
    cluster.kill(1).unwrap();
    let killed_in = killed.elapsed();
    let connecting = Instant::now();
    let err = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).unwrap_err();
    let refused_in = connecting.elapsed();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(
        refused_in < Duration::from_millis(50),
        "refused after {refused_in:?}"
    );
    eprintln!("kill took {killed_in:?}, connect refused after {refused_in:?}");

    // Written while the replica is down: must arrive after the restart (GTID resumes).
    cluster
        .sql(0, "INSERT INTO rlbtest.probe VALUES (7, 'while down')")
        .unwrap();
    let restarting = Instant::now();
    cluster.restart(1).unwrap();
    eprintln!("restart took {:?}", restarting.elapsed());
    assert_greeting(&read_greeting(port, Duration::from_secs(2)).unwrap());
    let pos = cluster.sql(0, "SELECT @@gtid_binlog_pos").unwrap();
    let wait = format!("SELECT MASTER_GTID_WAIT('{pos}', 10)");
    assert_eq!(cluster.sql(1, &wait).unwrap(), "0");
    assert_eq!(
        cluster
            .sql(1, "SELECT v FROM rlbtest.probe WHERE id = 7")
            .unwrap(),
        "while down"
    );
}

#[test]
fn frozen_server_accepts_but_never_greets() {
    let cluster = start();
    let port = cluster.replica_port(2);
    cluster.freeze(2).unwrap();

    let connecting = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1))
        .expect("the kernel completes the connect from the listen backlog");
    let connected_in = connecting.elapsed();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0; 256];
    let err = stream
        .read(&mut buf)
        .expect_err("no byte from a frozen server");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    eprintln!("frozen: connected in {connected_in:?}, no byte within 300 ms");

    cluster.thaw(2).unwrap();
    // The connection queued meanwhile is served as soon as the server runs again.
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = stream.read(&mut buf).unwrap();
    assert_greeting(&buf[..n]);
    assert_greeting(&read_greeting(port, Duration::from_secs(2)).unwrap());
}

#[test]
fn lag_shows_seconds_behind_master_with_threads_running() {
    let cluster = start();
    let lagging = Instant::now();
    cluster.lag(2, 30).unwrap();
    let status = cluster.slave_status(2).unwrap();
    eprintln!("lag 30 visible after {:?}", lagging.elapsed());
    let sbm: u64 = status["Seconds_Behind_Master"].parse().unwrap();
    assert!((30..40).contains(&sbm), "Seconds_Behind_Master {sbm}");
    assert_eq!(status["Slave_IO_Running"], "Yes");
    assert_eq!(status["Slave_SQL_Running"], "Yes");
    assert_eq!(cluster.seconds_behind_master(1).unwrap(), Some(0));

    cluster.lag(2, 0).unwrap();
    assert_eq!(cluster.seconds_behind_master(2).unwrap(), Some(0));

    // A stopped SQL thread reads NULL, a state of its own.
    cluster.sql(1, "STOP SLAVE SQL_THREAD").unwrap();
    assert_eq!(cluster.seconds_behind_master(1).unwrap(), None);
}

#[test]
fn two_clusters_run_in_parallel_and_stop_cleanly() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(MariaDbCluster::start);
        let b = s.spawn(MariaDbCluster::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let mut ports: Vec<u16> = (0..3).flat_map(|n| [a.port(n), b.port(n)]).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6, "every node has its own port");
    assert_ne!(a.base(), b.base());

    a.sql(0, "INSERT INTO rlbtest.probe VALUES (2, 'a')")
        .unwrap();
    b.sql(0, "INSERT INTO rlbtest.probe VALUES (2, 'b')")
        .unwrap();
    for (cluster, want) in [(&a, "a"), (&b, "b")] {
        let pos = cluster.sql(0, "SELECT @@gtid_binlog_pos").unwrap();
        let wait = format!("SELECT MASTER_GTID_WAIT('{pos}', 10)");
        assert_eq!(cluster.sql(2, &wait).unwrap(), "0");
        let row = cluster.sql(2, "SELECT v FROM rlbtest.probe WHERE id = 2");
        assert_eq!(row.unwrap(), want);
    }

    let base: PathBuf = a.base().to_owned();
    let port = a.primary_port();
    let stopping = Instant::now();
    drop(a);
    eprintln!("stop took {:?}", stopping.elapsed());
    assert!(!base.exists(), "{} removed", base.display());
    let err = TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_greeting(&read_greeting(b.primary_port(), Duration::from_secs(2)).unwrap());
}

/// The mysql probe against the real thing: it logs in and quits without leaving a trace
/// in the server's abort counters, reports the server's own refusal, and sees each fault.
#[tokio::test(flavor = "current_thread")]
async fn mysql_probe_quits_cleanly_and_sees_each_fault() {
    use rlb::health::mysql::{MysqlError, MysqlProbe, Replication};

    let cluster = start();
    let probe = |user: &str, password: Option<&str>, read_lag| MysqlProbe {
        user: user.to_owned(),
        password: password.map(str::to_owned),
        read_lag,
    };
    let check = probe("rlb_check", None, false);
    let monitor = probe("rlb_monitor", Some("monitorpass"), true);
    let replica = addr(cluster.replica_port(2));
    let within = |p: &MysqlProbe, a| {
        let p = p.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(2), p.probe(a))
                .await
                .expect("probe finished within 2 s")
        }
    };

    assert_eq!(
        within(&check, replica).await.unwrap(),
        Replication::NotAsked
    );
    let primary = addr(cluster.primary_port());
    assert_eq!(
        within(&monitor, primary).await.unwrap(),
        Replication::NotReplica
    );

    let counters = |c: &MariaDbCluster| {
        (
            c.aborted_connects(2).unwrap(),
            c.aborted_clients(2).unwrap(),
        )
    };
    let before = counters(&cluster);
    let started = Instant::now();
    for p in [&check, &monitor] {
        for _ in 0..25 {
            let state = within(p, replica).await.unwrap();
            assert!(
                matches!(state, Replication::NotAsked | Replication::Behind(_)),
                "{state:?}"
            );
        }
    }
    eprintln!("50 probes: {:?} each", started.elapsed() / 50);
    // The server counts a connection when its thread ends, just after our COM_QUIT.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        counters(&cluster),
        before,
        "(Aborted_connects, Aborted_clients)"
    );

    let err = within(&probe("nobody", None, false), replica)
        .await
        .unwrap_err();
    assert!(matches!(err, MysqlError::AccessDenied { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "access denied for user 'nobody': Access denied for user 'nobody'@'127.0.0.1'"
        ),
        "{message}"
    );
    let err = within(&probe("rlb_check", None, true), replica)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MysqlError::StatusQuery { code: 1227, .. }),
        "{err}"
    );

    cluster.lag(2, 30).unwrap();
    let state = within(&monitor, replica).await.unwrap();
    assert!(
        matches!(state, Replication::Behind(lag) if lag >= Duration::from_secs(30)),
        "{state:?}"
    );
    cluster.sql(2, "STOP SLAVE SQL_THREAD").unwrap();
    assert_eq!(
        within(&monitor, replica).await.unwrap(),
        Replication::Stopped
    );

    cluster.kill(1).unwrap();
    // SIGKILL takes a moment to close the listening socket; until then a connect can
    // still land in its backlog and be closed (MysqlError::Closed), not refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr(cluster.replica_port(1))).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = within(&check, addr(cluster.replica_port(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, MysqlError::Refused), "{err:?}");

    // A frozen server fails by the caller's timeout, on a single-threaded runtime: the
    // probe never blocks it.
    cluster.freeze(2).unwrap();
    let frozen = tokio::time::timeout(Duration::from_millis(300), monitor.probe(replica)).await;
    assert!(frozen.is_err(), "{frozen:?}");
    cluster.thaw(2).unwrap();
}
