//! `msg-stress`: sends 3k, 6k and 10k messages to the message processors (through rlb)
//! over persistent connections and reports throughput and losses.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Stress client for msg-processor: throughput, missing and wrong replies"
)]
struct Args {
    /// rlb's tcp listener (config/msg-processor.toml) or one msg-processor.
    #[arg(long, default_value = "127.0.0.1:7100")]
    addr: SocketAddr,
    /// Message counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "3000,6000,10000")]
    counts: Vec<usize>,
    /// Persistent connections per run.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds a run may take.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    println!(
        "{:>8} {:>6} {:>9} {:>11} {:>8} {:>6}  replies by server",
        "messages", "conns", "seconds", "msgs/s", "missing", "wrong"
    );
    let mut failed = false;
    for &count in &args.counts {
        let r = rlb_demo::msg::stress(
            args.addr,
            count,
            args.connections,
            Duration::from_secs(args.timeout),
        )
        .await;
        let servers: Vec<String> = r
            .by_server
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:>8} {:>6} {:>9.3} {:>11.0} {:>8} {:>6}  {}",
            r.messages,
            r.connections,
            r.elapsed_s,
            r.per_second(),
            r.missing,
            r.wrong,
            servers.join(" ")
        );
        for e in r.errors.iter().take(5) {
            println!("    {e}");
        }
        failed |= r.missing > 0 || r.wrong > 0;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
