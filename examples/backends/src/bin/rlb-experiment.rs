//! `rlb-experiment`: experiments against a real rlb (see the crate README).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rlb_demo::experiment::{self, FailoverOptions, RlbCommand, stack};

#[derive(Parser)]
#[command(version, about = "Experiments against a real rlb: failover under load")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts rlb and 3 chat servers (full mode: also history-writer and a MariaDB
    /// primary + 2 replicas) on free loopback ports, loads them with WebSocket chat
    /// clients and HTTP GETs, SIGKILLs chat server s1 (and replica 1), starts them again,
    /// and reports what the clients saw.
    Failover(FailoverArgs),
    /// Runs rlb's library as this process, like the `rlb` binary (used by `failover`).
    #[command(hide = true)]
    ServeRlb {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Parser)]
struct FailoverArgs {
    /// WebSocket chat clients.
    #[arg(long, default_value_t = 30)]
    clients: usize,
    /// Messages per second per chat client.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// HTTP GETs per second in total (GET / through rlb).
    #[arg(long, default_value_t = 200.0)]
    http_rate: f64,
    /// Keep-alive connections the GETs are spread over.
    #[arg(long, default_value_t = 4)]
    http_connections: usize,
    /// Seconds of load; s1 is killed at 25 % and started again at 55 %.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// A quick run: 8 s, 8 clients at 10 msg/s, 100 GET/s.
    #[arg(long)]
    short: bool,
    /// Full mode: RabbitMQ + MariaDB (needs RabbitMQ and mariadbd); also kills replica 1.
    #[arg(long)]
    full: bool,
    /// RabbitMQ for full mode.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Write the summary as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the timeline here (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The rlb binary to run; default: rlb's library inside this program's own process.
    #[arg(long, value_name = "PATH")]
    rlb: Option<PathBuf>,
    /// Directory holding chat-server and history-writer; default: this binary's.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// scripts/mariadb-cluster.sh.
    #[arg(long, value_name = "PATH")]
    cluster_script: Option<PathBuf>,
    /// Keep the work directory (rlb config, logs).
    #[arg(long)]
    keep: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::ServeRlb { config } => {
            rlb_demo::init_logging_from("RLB_LOG");
            stack::serve_rlb(&config)
        }
        Command::Failover(f) => failover(f),
    };
    match result {
        Ok(code) => code_of(code),
        Err(e) => {
            eprintln!("rlb-experiment: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn code_of(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}

fn failover(a: FailoverArgs) -> anyhow::Result<()> {
    let bin = |name: &str| match &a.bin_dir {
        Some(dir) => Ok(dir.join(name)),
        None => stack::sibling(name),
    };
    let (clients, rate, http_rate, duration) = if a.short {
        (8, 10.0, 100.0, 8.0)
    } else {
        (a.clients, a.rate, a.http_rate, a.duration)
    };
    let options = FailoverOptions {
        clients,
        rate,
        http_rate,
        http_connections: a.http_connections,
        duration: Duration::from_secs_f64(duration),
        full: a.full,
        amqp: a.amqp.clone(),
        cluster_script: a.cluster_script.clone().unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/mariadb-cluster.sh"
            ))
        }),
        rlb: match &a.rlb {
            Some(path) => RlbCommand::Binary(path.clone()),
            None => RlbCommand::SelfHosted(
                std::env::current_exe().context("locating the running binary")?,
            ),
        },
        chat_server: bin("chat-server")?,
        history_writer: if a.full {
            bin("history-writer")?
        } else {
            PathBuf::new()
        },
        keep: a.keep,
        progress: !a.quiet,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(experiment::failover(options))?;
    println!(
        "\nrlb failover experiment, {} mode: {} WebSocket clients x {} msg/s, {} HTTP GET/s, {} s",
        summary.mode, summary.clients, summary.rate, summary.http_rate, summary.duration_s
    );
    print!("{}", summary.table());
    if !summary.errors.is_empty() {
        println!("first errors clients saw:");
        for (t, e) in summary.errors.iter().take(10) {
            println!("  [{t:5.2}s] {e}");
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("summary: {}", path.display());
    }
    if let Some(path) = &a.plot {
        let title = format!(
            "rlb failover, {} mode: {} clients x {} msg/s, {} GET/s",
            summary.mode, summary.clients, summary.rate, summary.http_rate
        );
        experiment::plot::draw(
            path,
            &title,
            &summary.samples,
            &experiment::markers(&summary),
            summary.duration_s,
        )?;
        println!("timeline: {}", path.display());
    }
    Ok(())
}
