use std::process::ExitCode;

fn main() -> ExitCode {
    let program = logferry_daemon::Program {
        name: "logferry-collector",
        version: env!("CARGO_PKG_VERSION"),
        about: "Receives batches from logferry agents and stores them in ClickHouse, exactly once per record; serves the query API.",
        default_config: "/etc/logferry/collector.toml",
    };
    logferry_daemon::main_with_commands(
        program,
        vec![logferry_collector::bootstrap::command()],
        logferry_collector::offline::commands(),
        logferry_collector::server::run,
        |config, _name, args| async move { logferry_collector::bootstrap::run(config, &args).await },
    )
}
