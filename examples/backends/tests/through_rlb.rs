//! The demo servers behind a real rlb started in-process: two chat servers on one SQLite
//! file behind an http listener, and two message processors behind a tcp listener.

mod common;

use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Client, TempDb, eventually, history, start_chat};
use rlb::{Config, Rlb};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn start_rlb(toml: &str) -> anyhow::Result<Rlb> {
    let config = Config::parse(toml, "test.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    Rlb::start(config, None).map_err(|e| anyhow::anyhow!("rlb did not start: {e}"))
}

#[tokio::test]
async fn chat_messages_cross_chat_servers_through_rlb() -> anyhow::Result<()> {
    let db = TempDb::new("through-rlb");
    let s1 = start_chat("s1", db.mode()).await?;
    let s2 = start_chat("s2", db.mode()).await?;
    let rlb = start_rlb(&format!(
        r#"
        [listeners.chat]
        bind = "127.0.0.1:0"
        mode = "http"
        routes = [{{ upstream = "chat" }}]

        [upstreams.chat]
        balance = "least_conn"
        servers = ["{}", "{}"]
        "#,
        s1.addr, s2.addr
    ))?;
    let lb = rlb.listener_addr("chat").context("no chat listener")?;

    // least_conn: the first WebSocket holds one chat server, so the second gets the other.
    let mut alice = Client::join(lb, "lobby", "alice").await?;
    let mut bob = Client::join(lb, "lobby", "bob").await?;
    alice.say("hello through rlb", "through-rlb-1").await?;
    let sent = alice.next_of("sent").await?;
    assert_eq!(sent["id"], "through-rlb-1");
    let at_alice = alice.msg_with_id("through-rlb-1").await?;
    let at_bob = bob.msg_with_id("through-rlb-1").await?;
    assert_eq!(at_bob["text"], "hello through rlb");
    assert_eq!(at_bob["user"], "alice");
    assert_ne!(
        at_alice["via"], at_bob["via"],
        "alice and bob should hold WebSockets on different chat servers"
    );
    assert_eq!(
        at_bob["server"], at_alice["via"],
        "accepted by alice's chat server"
    );

    // And it is in history, read through rlb.
    let stored = eventually("history through rlb", || async {
        let h = history(lb, "lobby", 10).await?;
        ensure!(
            h.iter().any(|m| m["id"] == "through-rlb-1"),
            "not yet: {h:?}"
        );
        Ok(h)
    })
    .await?;
    assert_eq!(
        stored.iter().filter(|m| m["id"] == "through-rlb-1").count(),
        1
    );

    // Open WebSockets would hold rlb's graceful shutdown for its whole timeout.
    drop((alice, bob));
    rlb.shutdown().await;
    s1.stop().await?;
    s2.stop().await?;
    Ok(())
}

#[tokio::test]
async fn message_processors_answer_every_message_through_rlb() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut addrs = Vec::new();
    let mut handles = Vec::new();
    for name in ["p1", "p2"] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        handles.push(tokio::spawn(rlb_demo::msg::serve(
            listener,
            name.into(),
            shutdown.clone(),
        )));
    }
    let rlb = start_rlb(&format!(
        r#"
        [listeners.messages]
        bind = "127.0.0.1:0"
        mode = "tcp"
        upstream = "processors"

        [upstreams.processors]
        balance = "round_robin"
        servers = ["{}", "{}"]
        "#,
        addrs[0], addrs[1]
    ))?;
    let lb = rlb
        .listener_addr("messages")
        .context("no messages listener")?;

    for count in [3000, 6000, 10000] {
        let r = rlb_demo::msg::stress(lb, count, 4, Duration::from_secs(30)).await;
        assert_eq!(
            (r.replies_ok, r.missing, r.wrong),
            (count, 0, 0),
            "{count} messages: {:?}",
            r.errors
        );
        assert_eq!(
            r.by_server.len(),
            2,
            "both processors answered: {:?}",
            r.by_server
        );
    }

    rlb.shutdown().await;
    shutdown.cancel();
    for h in handles {
        h.await??;
    }
    Ok(())
}
