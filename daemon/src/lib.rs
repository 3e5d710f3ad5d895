//! What logferry's two programs share as long-running daemons: reading and
//! checking their config file, their own logs, and the life cycle from
//! start to a signal to an exit code. Nothing here knows about logs being
//! shipped; that is `logferry-agent` and `logferry-collector`.

use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

pub mod files;
pub mod report;

/// A program's configuration: TOML with defaults in code, environment
/// overrides, and validation that names every problem.
pub trait Settings: DeserializeOwned {
    /// Applies environment overrides (endpoints and secrets).
    fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>);
    /// Every problem, each prefixed with its key; empty when valid.
    fn problems(&self) -> Vec<String>;
    /// The program's own logging settings.
    fn log(&mut self) -> &mut LogConfig;
    /// Where the program reports its own panics and errors.
    fn sentry(&self) -> &SentryConfig;
}

/// Every problem found in a config file, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration in {path}:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

/// An error and its chain of causes on one line (`a: b: c`), the one way
/// both programs print an error. A cause whose text its error already
/// ends with (a wrapper that repeats it) is not written twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.ends_with(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// Parses TOML into the settings and the unknown keys found, all of them
/// rather than the first. Fails only on syntax and type errors.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<(T, Vec<String>), Vec<String>> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::parse(text).map_err(|e| vec![e.to_string()])?;
    let settings: T = serde_ignored::deserialize(de, |path| {
        unknown.push(format!("{path}: unknown key"));
    })
    .map_err(|e| vec![e.to_string()])?;
    unknown.sort();
    Ok((settings, unknown))
}

/// Reads `path` (with its `.d` directory and `${VAR}`s, see `files`),
/// applies the environment overrides, and validates: unknown keys and
/// invalid values are reported together.
pub fn load<T: Settings>(path: &Path) -> Result<T, ConfigError> {
    let fail = |problems| ConfigError {
        path: path.display().to_string(),
        problems,
    };
    let text = files::read(path, &|k| std::env::var(k).ok()).map_err(fail)?;
    let (mut settings, mut problems) = parse::<T>(&text).map_err(fail)?;
    settings.apply_env(&|k| std::env::var(k).ok());
    problems.extend(settings.problems());
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(fail(problems))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// "human" or "json"; the --log-format flag overrides it.
    pub format: LogFormat,
    /// A tracing filter (`info`, `logferry_agent=debug`); `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// What is wrong with the level filter, if anything.
    pub fn problem(&self) -> Option<String> {
        EnvFilter::try_new(&self.level)
            .err()
            .map(|e| format!("log.level: `{}` is not a filter: {e}", self.level))
    }
}

/// Reporting the program's own panics and errors to Sentry.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct SentryConfig {
    /// The project's DSN; `SENTRY_DSN` overrides it. Empty: no reporting.
    pub dsn: String,
    /// The `environment` tag (`production`, `staging`); `SENTRY_ENVIRONMENT` overrides it.
    pub environment: String,
}

impl std::fmt::Debug for SentryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryConfig")
            .field("dsn", &if self.dsn.is_empty() { "" } else { "<set>" })
            .field("environment", &self.environment)
            .finish()
    }
}

impl SentryConfig {
    /// `SENTRY_DSN` and `SENTRY_ENVIRONMENT`, as Sentry's own SDKs read them.
    pub fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        if let Some(v) = get("SENTRY_DSN") {
            self.dsn = v;
        }
        if let Some(v) = get("SENTRY_ENVIRONMENT") {
            self.environment = v;
        }
    }

    pub fn problems(&self) -> Vec<String> {
        match self.dsn.parse::<sentry::types::Dsn>() {
            Err(e) if !self.dsn.is_empty() => vec![format!("sentry.dsn: {e}")],
            _ => Vec::new(),
        }
    }
}

/// Installs the global subscriber: logs go to stderr, coloured only on a
/// terminal. `RUST_LOG`, when set, wins over the configured level. With
/// Sentry on, `error!` logs become Sentry events and the others within the
/// level become breadcrumbs.
fn init_logs(log: &LogConfig, sentry: bool) {
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match log.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(sentry.then(|| {
            use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
            use tracing_subscriber::filter::LevelFilter;
            BreadcrumbLayer::new()
                .with_filter(LevelFilter::INFO)
                .and_then(ErrorLayer::new().with_filter(LevelFilter::ERROR))
        }))
        .with(filter)
        .init();
}

/// What a program says about itself on its command line.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    pub version: &'static str,
    pub about: &'static str,
    pub default_config: &'static str,
}

/// The command line both programs share: `--config`, `--check-config`,
/// `--log-format`, `--help`, `--version`.
fn command(program: Program) -> clap::Command {
    use clap::{Arg, ArgAction};
    clap::Command::new(program.name)
        .version(program.version)
        .about(program.about)
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("PATH")
                .default_value(program.default_config)
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("Path of the TOML configuration"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, report every problem, and exit (non-zero when invalid)"),
        )
        .arg(
            Arg::new("sentry-test")
                .long("sentry-test")
                .action(ArgAction::SetTrue)
                .help("Report a deliberate panic to the configured Sentry (sentry.dsn or SENTRY_DSN) and exit"),
        )
        .arg(
            Arg::new("log-format")
                .long("log-format")
                .value_parser(["human", "json"])
                .help("Overrides log.format"),
        )
}

/// Parses the command line, loads the configuration (exit code 2 when it is
/// invalid; `--check-config` stops there), sets up logging, and runs `run`
/// until SIGTERM or SIGINT cancels its token; SIGHUP reloads (see
/// `supervise`). Errors are printed once, with their whole chain.
pub fn main<S, F, Fut>(program: Program, run: F) -> ExitCode
where
    S: Settings,
    F: Fn(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_with_commands(
        program,
        Vec::new(),
        Vec::new(),
        run,
        |_, name, _| async move { anyhow::bail!("unknown command `{name}`") },
    )
}

/// A subcommand that needs no configuration: an offline tool that reads
/// its input and writes its answer, like `logferry-collector patterns`.
pub struct Offline {
    pub command: clap::Command,
    pub run: fn(&clap::ArgMatches) -> anyhow::Result<()>,
}

/// `main`, plus subcommands: one-shot tools that run with the loaded
/// configuration instead of the daemon (`tool(settings, name, args)`), and
/// offline tools that run without one.
pub fn main_with_commands<S, F, Fut, T, TFut>(
    program: Program,
    commands: Vec<clap::Command>,
    offline: Vec<Offline>,
    run: F,
    tool: T,
) -> ExitCode
where
    S: Settings,
    F: Fn(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
    T: FnOnce(S, String, clap::ArgMatches) -> TFut,
    TFut: Future<Output = anyhow::Result<()>>,
{
    let args = command(program)
        .subcommands(commands)
        .subcommands(offline.iter().map(|o| o.command.clone()))
        .get_matches();
    if let Some((command, sub)) = args.subcommand() {
        if let Some(tool) = offline.iter().find(|o| o.command.get_name() == command) {
            return match (tool.run)(sub) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}: {e:#}", program.name);
                    ExitCode::FAILURE
                }
            };
        }
    }
    let config: &std::path::PathBuf = args.get_one("config").expect("has a default");
    let name = program.name;
    let mut settings: S = match load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    if args.get_flag("check-config") {
        println!("{}: configuration is valid", config.display());
        return ExitCode::SUCCESS;
    }
    match args.get_one::<String>("log-format").map(String::as_str) {
        Some("json") => settings.log().format = LogFormat::Json,
        Some(_) => settings.log().format = LogFormat::Human,
        None => {}
    }
    let sentry = report::init(name, program.version, settings.sentry());
    init_logs(settings.log(), sentry.is_some());
    if args.get_flag("sentry-test") {
        return sentry_test(name, sentry);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.subcommand() {
            Some((command, sub)) => tool(settings, command.to_string(), sub.clone()).await,
            None => supervise(config, settings, run).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--sentry-test`: a panic on purpose, reported like any other.
fn sentry_test(name: &str, guard: Option<sentry::ClientInitGuard>) -> ExitCode {
    let Some(guard) = guard else {
        eprintln!("{name}: no Sentry configured (sentry.dsn or SENTRY_DSN)");
        return ExitCode::from(2);
    };
    let _ = std::panic::catch_unwind(|| {
        panic!("{name} --sentry-test: a deliberate panic to check Sentry reporting")
    });
    if guard.flush(Some(std::time::Duration::from_secs(10))) {
        eprintln!("{name}: test panic reported to Sentry");
        ExitCode::SUCCESS
    } else {
        eprintln!("{name}: the test panic could not be sent within 10 s");
        ExitCode::FAILURE
    }
}

/// How often `supervise` looks at the config files for a change.
const CONFIG_LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The config at `path` loaded again: when valid, `generation` is stopped
/// so the next runs with it; when not, the problems are logged.
fn reload<S: Settings>(path: &Path, generation: &CancellationToken) -> Option<S> {
    match load::<S>(path) {
        Ok(s) => {
            tracing::info!(config = %path.display(), "reloading the configuration");
            generation.cancel();
            Some(s)
        }
        Err(e) => {
            tracing::error!("configuration not reloaded; the running one goes on: {e}");
            None
        }
    }
}

/// Runs `run` until SIGTERM or SIGINT cancels its token. SIGHUP, or a
/// change to the config set's files (looked at every `CONFIG_LOOK_EVERY`),
/// reads the config at `path` again: when it is valid, the running
/// generation is stopped as at SIGTERM and `run` starts again with the new
/// settings, in the same process (what each program keeps durably carries over, as
/// across a restart); when it is not, the problems are logged and the
/// running generation goes on. Logging and Sentry keep the settings they
/// started with.
async fn supervise<S, F, Fut>(path: &Path, mut settings: S, run: F) -> anyhow::Result<()>
where
    S: Settings,
    F: Fn(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return run(settings, CancellationToken::new()).await;
    };
    let mut seen = files::stamp(path);
    let mut look = tokio::time::interval(CONFIG_LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let generation = CancellationToken::new();
        let mut running = std::pin::pin!(run(settings, generation.clone()));
        let mut next = None;
        let result = loop {
            let changed = async {
                loop {
                    look.tick().await;
                    let now = files::stamp(path);
                    if now != seen {
                        break now;
                    }
                }
            };
            tokio::select! {
                result = &mut running => break result,
                _ = term.recv() => {
                    next = None;
                    generation.cancel();
                }
                _ = int.recv() => {
                    next = None;
                    generation.cancel();
                }
                _ = hup.recv(), if !generation.is_cancelled() => {
                    // What is read now is what the next look compares with.
                    seen = files::stamp(path);
                    next = reload(path, &generation);
                }
                now = changed, if !generation.is_cancelled() => {
                    seen = now;
                    tracing::info!(config = %path.display(), "the configuration files changed");
                    next = reload(path, &generation);
                }
            }
        };
        match next {
            Some(s) if result.is_ok() => settings = s,
            _ => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Demo {
        port: u16,
        url: String,
        log: LogConfig,
        sentry: SentryConfig,
    }

    impl Settings for Demo {
        fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
            if let Some(url) = get("DEMO_URL") {
                self.url = url;
            }
        }
        fn problems(&self) -> Vec<String> {
            let mut p: Vec<String> = self.log.problem().into_iter().collect();
            if self.port == 0 {
                p.push("port: must be positive".into());
            }
            p
        }
        fn log(&mut self) -> &mut LogConfig {
            &mut self.log
        }
        fn sentry(&self) -> &SentryConfig {
            &self.sentry
        }
    }

    #[test]
    fn unknown_keys_and_invalid_values_are_reported_together() {
        let dir = std::env::temp_dir().join(format!("logferry-daemon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("demo.toml");
        std::fs::write(&path, "zeta = 1\nalpha = 2\n[log]\nlevel = \"=bad=\"\n").expect("write");
        let err = load::<Demo>(&path).expect_err("invalid");
        assert_eq!(
            err.problems[..2],
            ["alpha: unknown key", "zeta: unknown key"]
        );
        assert!(err.problems[2].starts_with("log.level"));
        assert_eq!(err.problems[3], "port: must be positive");
        std::fs::write(&path, "port = \"eighty\"\n").expect("write");
        let err = load::<Demo>(&path).expect_err("type error");
        assert!(err.to_string().contains("port"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn command_line_is_consistent() {
        command(Program {
            name: "demo",
            version: "1",
            about: "a demo",
            default_config: "/etc/demo.toml",
        })
        .debug_assert();
    }

    #[test]
    fn environment_applies_before_validation() {
        let (mut demo, unknown) = parse::<Demo>("port = 1\n").expect("parses");
        assert!(unknown.is_empty());
        demo.apply_env(&|k| (k == "DEMO_URL").then(|| "http://x".into()));
        assert_eq!(demo.url, "http://x");
        assert!(demo.problems().is_empty());
    }
}
