use std::process::ExitCode;

fn main() -> ExitCode {
    let program = logferry_daemon::Program {
        name: "logferry-collector",
        version: env!("CARGO_PKG_VERSION"),
        about: "Receives batches from logferry agents and stores them in ClickHouse, exactly once per record.",
        default_config: "/etc/logferry/collector.toml",
    };
    logferry_daemon::main(program, logferry_collector::server::run)
}
