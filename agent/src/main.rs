use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use logferry_agent::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

/// Follows log files and accepts gRPC pushes, queues every record durably
/// in RocksDB, and forwards batches to logferry collectors.
#[derive(Parser, Debug)]
#[command(name = "logferry-agent", version, about)]
struct Cli {
    /// Path of the TOML configuration.
    #[arg(long, short, default_value = "/etc/logferry/agent.toml")]
    config: PathBuf,
    /// Validate the configuration, report every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Overrides `log.format`.
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logferry-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    match cli.log_format.as_deref() {
        Some("json") => config.log.format = LogFormat::Json,
        Some("human") => config.log.format = LogFormat::Human,
        _ => {}
    }
    logferry_agent::telemetry::init(config.log.format, &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logferry-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        logferry_agent::server::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logferry-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
