//! `msg-processor`: the tcp message processor example, one reply line per message line.

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Replies to every newline-delimited message with `SEQ NAME MESSAGE-UPPERCASED`"
)]
struct Args {
    /// Listens on 127.0.0.1:PORT.
    #[arg(long)]
    port: u16,
    /// Signs every reply; default `p<PORT>`.
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rlb_demo::init_logging();
    let shutdown = rlb_demo::shutdown_on_signals()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    let name = args.name.unwrap_or_else(|| format!("p{}", args.port));
    rlb_demo::msg::serve(listener, name, shutdown).await
}
