//! Full mode against the RabbitMQ and MariaDB on this machine: cross-server delivery, and
//! messages sent while history-writer is down are stored once it is back.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Client, eventually, history, http, start_chat};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use rlb_demo::amqp::AmqpNames;
use rlb_demo::mysql::MysqlHistory;
use rlb_demo::{Mode, WriterOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Overridable with `RLB_DEMO_AMQP` and `RLB_DEMO_MYSQL`.
fn amqp_url() -> String {
    std::env::var("RLB_DEMO_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn mysql_url() -> String {
    std::env::var("RLB_DEMO_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Why full mode cannot be tested here, if it cannot.
async fn unreachable() -> Option<String> {
    let (amqp_url, mysql_url) = (amqp_url(), mysql_url());
    let amqp =
        tokio::time::timeout(Duration::from_secs(3), rlb_demo::amqp::connect(&amqp_url)).await;
    match amqp {
        Ok(Ok(c)) => {
            let _ = c.close(200, "probe".into()).await;
        }
        Ok(Err(e)) => return Some(format!("rabbitmq at {amqp_url} unreachable: {e:#}")),
        Err(_) => return Some(format!("rabbitmq at {amqp_url} did not answer")),
    }
    let probe = async {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::from_url(mysql_url.as_str()).await?;
        c.query_drop("SELECT 1").await?;
        c.disconnect().await
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("mariadb at {mysql_url} unreachable: {e}")),
        Err(_) => Some(format!("mariadb at {mysql_url} did not answer")),
    }
}

struct Writer {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

fn start_writer(names: &AmqpNames, table: &str) -> Writer {
    let shutdown = CancellationToken::new();
    let options = WriterOptions {
        amqp: amqp_url(),
        mysql_primary: mysql_url(),
        names: names.clone(),
        table: table.into(),
    };
    let handle = tokio::spawn(rlb_demo::run_history_writer(options, shutdown.clone()));
    Writer { shutdown, handle }
}

impl Writer {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(common::WAIT, self.handle)
            .await
            .context("history-writer did not stop")??
    }
}

fn ids(messages: &[serde_json::Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn scenario(names: AmqpNames, table: String) -> anyhow::Result<()> {
    let mode = Mode::Full {
        amqp: amqp_url(),
        mysql_read: mysql_url(),
        names: names.clone(),
        table: table.clone(),
    };
    let writer = start_writer(&names, &table);
    let s1 = start_chat("s1", mode.clone()).await?;
    let s2 = start_chat("s2", mode).await?;
    assert_eq!(http(s1.addr, "GET", "/healthz").await?, (200, "ok".into()));

    let mut a = Client::join(s1.addr, "full", "ann").await?;
    let mut b = Client::join(s2.addr, "full", "ben").await?;

    a.say("one", "f1").await?;
    assert_eq!(a.next_of("sent").await?["id"], "f1");
    let m = b.msg_with_id("f1").await?;
    assert_eq!(
        (m["server"].as_str(), m["via"].as_str()),
        (Some("s1"), Some("s2"))
    );
    assert_eq!(m["text"], "one");
    eventually("f1 in history", || async {
        let h = history(s2.addr, "full", 10).await?;
        ensure!(ids(&h) == ["f1"], "history is {:?}", ids(&h));
        Ok(())
    })
    .await?;

    // history-writer down: live chat goes on, messages wait in the durable queue.
    writer.stop().await?;
    a.say("two", "f2").await?;
    a.next_of("sent").await?;
    assert_eq!(b.msg_with_id("f2").await?["server"], "s1");
    b.say("three", "f3").await?;
    b.next_of("sent").await?;
    assert_eq!(a.msg_with_id("f3").await?["server"], "s2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&history(s1.addr, "full", 10).await?), ["f1"]);

    // Back up: the waiting messages are stored, in order.
    let writer = start_writer(&names, &table);
    eventually("f2 and f3 stored after the writer came back", || async {
        let h = history(s1.addr, "full", 10).await?;
        ensure!(ids(&h) == ["f1", "f2", "f3"], "history is {:?}", ids(&h));
        Ok(())
    })
    .await?;

    // A resent id is stored once.
    a.say("two again", "f2").await?;
    a.say("four", "f4").await?;
    eventually("f4 stored", || async {
        let h = history(s1.addr, "full", 10).await?;
        ensure!(
            ids(&h) == ["f1", "f2", "f3", "f4"],
            "history is {:?}",
            ids(&h)
        );
        Ok(())
    })
    .await?;
    let h = history(s1.addr, "full", 2).await?;
    assert_eq!(ids(&h), ["f3", "f4"]);
    assert_eq!(h[0]["text"], "three");
    assert_eq!(h[0]["server"], "s2");

    writer.stop().await?;
    s1.stop().await?;
    s2.stop().await?;
    Ok(())
}

async fn clean_up(names: &AmqpNames, table: &str) -> anyhow::Result<()> {
    let c = rlb_demo::amqp::connect(&amqp_url()).await?;
    let ch = c.create_channel().await?;
    ch.queue_delete(
        names.history_queue.as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await?;
    ch.exchange_delete(
        names.exchange.as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await?;
    let _ = c.close(200, "test done".into()).await;
    let db = MysqlHistory::new(&mysql_url(), table)?;
    db.drop_table().await?;
    db.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mode_delivers_across_servers_and_keeps_history_while_writer_is_down()
-> anyhow::Result<()> {
    if let Some(reason) = unreachable().await {
        println!("SKIPPED full mode test: {reason}");
        return Ok(());
    }
    let tag = format!(
        "{}_{}",
        std::process::id(),
        rlb_demo::protocol::now_millis()
    );
    let names = AmqpNames {
        exchange: format!("rlb.test.{tag}.chat"),
        history_queue: format!("rlb.test.{tag}.history"),
    };
    let table = format!("rlb_demo_test_{tag}");
    // Run in a task so that a failed assertion still reaches the clean-up below.
    let outcome = tokio::spawn(scenario(names.clone(), table.clone())).await;
    let cleaned = clean_up(&names, &table).await;
    match outcome {
        Ok(result) => result?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(e.into()),
    }
    cleaned
}
