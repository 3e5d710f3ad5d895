use std::process::ExitCode;

fn main() -> ExitCode {
    logferry_agent::allocator::tune();
    let program = logferry_daemon::Program {
        name: "logferry-agent",
        version: env!("CARGO_PKG_VERSION"),
        about:
            "Follows log files and accepts gRPC pushes, queues every record durably in RocksDB, \
                and forwards batches to logferry collectors.",
        default_config: "/etc/logferry/agent.toml",
    };
    logferry_daemon::main_with_commands(
        program,
        logferry_agent::commands::commands(),
        Vec::new(),
        logferry_agent::server::run,
        |config, name, args| async move { logferry_agent::commands::run(config, &name, &args).await },
    )
}
