//! The agent's configuration: TOML into serde structs, defaults in code,
//! environment overrides for endpoints, and validation that reports every
//! problem at once before anything is opened (loading and unknown keys:
//! `logferry_daemon`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use logferry_daemon::{LogConfig, SentryConfig, Settings};
use serde::Deserialize;

/// Environment variable that replaces `forward.endpoints` (comma-separated).
pub const ENV_ENDPOINTS: &str = "LOGFERRY_COLLECTOR_ENDPOINTS";
pub const ENV_TOKEN_FILE: &str = "LOGFERRY_AGENT_TOKEN_FILE";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the queue, checkpoints and the agent id live.
    pub data_dir: PathBuf,
    /// `host.name` stamped on every record; the machine's host name when empty.
    pub host_name: String,
    /// Static resource attributes stamped on every record.
    pub resource: BTreeMap<String, String>,
    pub sources: Vec<SourceConfig>,
    pub tail: TailConfig,
    pub queue: QueueConfig,
    pub push: PushConfig,
    pub forward: ForwardConfig,
    pub metrics: MetricsConfig,
    pub memory: MemoryConfig,
    pub sentry: SentryConfig,
    pub log: LogConfig,
    pub shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Prometheus metrics at `http://<listen>/metrics`; empty: not served.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// What the agent may hold for records at once: lines being read, pushes
    /// being received, batches being sent, and the queue's write buffers
    /// and block cache, which get what the others' limits leave
    /// (`Config::memory_plan`).
    pub budget_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget_bytes: 96 << 20,
        }
    }
}

/// The least memory the queue's RocksDB is given: two write buffers of
/// the records family and a few blocks. A budget that leaves the queue
/// less is a configuration problem.
pub const MIN_QUEUE_MEMORY: u64 = 4 << 20;

/// How `memory.budget_bytes` is shared, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// A read of `tail.read_chunk_bytes` and the chunk its lines become.
    pub files: u64,
    /// `push.max_concurrent` messages of `push.max_message_bytes`, each as
    /// received (up to twice its size while it arrives), decoded (about
    /// twice) and encoded again for the queue.
    pub pushes: u64,
    /// `forward.max_in_flight` batches of `forward.batch_max_bytes`, each
    /// with the request encoded from it and its compressed copy.
    pub batches: u64,
    /// The rest: the queue's write buffers and block cache.
    pub queue: u64,
}

impl Config {
    pub fn memory_plan(&self) -> MemoryPlan {
        let files = if self.sources.is_empty() {
            0
        } else {
            2 * self.tail.read_chunk_bytes as u64
        };
        let pushes = if self.push.listen.is_empty() {
            0
        } else {
            5 * self.push.max_concurrent as u64 * self.push.max_message_bytes as u64
        };
        let batches = self.forward.max_in_flight as u64 * self.forward.batch_max_bytes * 5 / 2;
        MemoryPlan {
            files,
            pushes,
            batches,
            queue: self
                .memory
                .budget_bytes
                .saturating_sub(files + pushes + batches),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/logferry-agent"),
            host_name: String::new(),
            resource: BTreeMap::new(),
            sources: Vec::new(),
            tail: TailConfig::default(),
            queue: QueueConfig::default(),
            push: PushConfig::default(),
            forward: ForwardConfig::default(),
            metrics: MetricsConfig::default(),
            memory: MemoryConfig::default(),
            sentry: SentryConfig::default(),
            log: LogConfig::default(),
            shutdown_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SourceConfig {
    pub name: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub format: Format,
    /// Where to start in a file that exists, unknown, when the agent first
    /// sees it at start-up. Files that appear later are always read whole.
    pub start_at: StartAt,
    pub service: String,
    pub attributes: BTreeMap<String, String>,
    /// Longer lines are cut to this size and marked `logferry.truncated`.
    pub max_line_bytes: usize,
    /// How long a final line without its newline waits before it is shipped.
    pub partial_line_timeout_ms: u64,
    /// Built-in detectors whose findings are replaced before queueing
    /// (`redact::built_in_names`).
    pub redact: Vec<String>,
    /// Custom regexes redacted the same way (one capture group: only it is
    /// replaced).
    pub redact_patterns: Vec<String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            name: String::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            format: Format::Json,
            start_at: StartAt::Beginning,
            service: String::new(),
            attributes: BTreeMap::new(),
            max_line_bytes: 1 << 20,
            partial_line_timeout_ms: 1_000,
            redact: Vec::new(),
            redact_patterns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TailConfig {
    /// Safety-net rescan of every glob, besides filesystem events.
    pub rescan_interval_ms: u64,
    /// Most bytes read from one file before the next file gets its turn.
    pub read_chunk_bytes: usize,
    /// Bytes at the head of a file that identify it with its inode.
    pub fingerprint_bytes: usize,
    /// How long a file that no longer matches (rotated away or deleted) is
    /// kept open after its last new byte, for writers that still hold it.
    pub rotated_grace_ms: u64,
    /// Tailing pauses while the queue holds this much: a file is its own
    /// durable buffer, so copying far ahead of the forwarder only costs disk
    /// writes. Pushes, which have no other buffer, may fill the queue up to
    /// `queue.max_bytes`.
    pub max_queued_bytes: u64,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            rescan_interval_ms: 1_000,
            read_chunk_bytes: 1 << 20,
            fingerprint_bytes: 256,
            rotated_grace_ms: 2_000,
            max_queued_bytes: 48 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Every commit is fsynced before it is acknowledged (concurrent commits
    /// share one fsync). Survives power failure.
    Always,
    /// Commits reach the OS page cache only. Survives a crash of the agent,
    /// not of the machine; see ARCHITECTURE.md for what a power failure does.
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// When the queue holds this many bytes, tailing pauses and pushes get
    /// RESOURCE_EXHAUSTED.
    pub max_bytes: u64,
    pub sync: SyncPolicy,
    /// Free space to leave on the queue's filesystem: below it, the queue
    /// refuses records as when it is full (tailing pauses, pushes get
    /// RESOURCE_EXHAUSTED) until collectors drain it or space is freed.
    pub min_free_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_bytes: 1 << 30,
            sync: SyncPolicy::Always,
            min_free_bytes: 128 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PushConfig {
    /// gRPC listen address for applications; empty disables the receiver.
    pub listen: String,
    /// Largest accepted push message.
    pub max_message_bytes: usize,
    /// Most pushes received at once; more wait for their turn.
    pub max_concurrent: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            listen: String::new(),
            max_message_bytes: 1 << 20,
            max_concurrent: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ForwardConfig {
    /// Collector gRPC endpoints, tried in order with failover.
    pub endpoints: Vec<String>,
    pub batch_max_records: u64,
    pub batch_max_bytes: u64,
    /// A batch is sent at the latest this long after its first record queued.
    pub batch_timeout_ms: u64,
    /// Per attempt. Must exceed the collector's `ingest.batch_deadline_ms`,
    /// so that a batch is never being stored by two collectors at once.
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub compression: Compression,
    /// File holding the agent credential (`lfa_…`) the collectors require;
    /// empty: ship without one (collectors with
    /// `ingest.require_credentials = false`).
    pub token_file: String,
    /// For `https://` endpoints.
    pub tls: ForwardTls,
}

/// How the agent checks the collectors and, for mTLS, identifies itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ForwardTls {
    /// PEM CA bundle that signed the collectors' certificates; empty: the
    /// system's trusted roots.
    pub ca_file: String,
    /// PEM client certificate and key, for collectors that ask for one.
    pub cert_file: String,
    pub key_file: String,
    /// The name the collectors' certificate must carry, when it differs
    /// from the endpoint's host.
    pub server_name: String,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            endpoints: vec!["http://127.0.0.1:4320".into()],
            batch_max_records: 100_000,
            batch_max_bytes: 16 << 20,
            batch_timeout_ms: 500,
            request_timeout_ms: 30_000,
            max_in_flight: 2,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            compression: Compression::Zstd,
            token_file: String::new(),
            tls: ForwardTls::default(),
        }
    }
}

impl Settings for Config {
    fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        self.sentry.apply_env(get);
        if let Some(v) = get(ENV_ENDPOINTS) {
            self.forward.endpoints = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get(ENV_TOKEN_FILE) {
            self.forward.token_file = v;
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            p.push("data_dir: must not be empty".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            if s.name.is_empty() {
                p.push(format!("{key}.name: must not be empty"));
            } else if !names.insert(&s.name) {
                p.push(format!(
                    "{key}.name: `{}` is used by another source",
                    s.name
                ));
            }
            if s.include.is_empty() {
                p.push(format!("{key}.include: give at least one glob"));
            }
            for (field, globs) in [("include", &s.include), ("exclude", &s.exclude)] {
                for g in globs {
                    if let Err(e) = glob::Pattern::new(g) {
                        p.push(format!("{key}.{field}: `{g}` is not a valid glob: {e}"));
                    } else if field == "include" && !Path::new(g).is_absolute() {
                        p.push(format!("{key}.include: `{g}` must be an absolute path"));
                    }
                }
            }
            if s.max_line_bytes < 64 {
                p.push(format!("{key}.max_line_bytes: must be at least 64"));
            }
            if let Err(e) = crate::redact::Redactor::new(&s.redact, &s.redact_patterns) {
                p.push(format!("{key}.redact: {e}"));
            }
        }
        if self.tail.read_chunk_bytes < 4096 {
            p.push("tail.read_chunk_bytes: must be at least 4096".into());
        }
        if self.tail.fingerprint_bytes == 0 || self.tail.fingerprint_bytes > 4096 {
            p.push("tail.fingerprint_bytes: must be between 1 and 4096".into());
        }
        if self.tail.rescan_interval_ms == 0 {
            p.push("tail.rescan_interval_ms: must be positive".into());
        }
        if self.tail.max_queued_bytes == 0 {
            p.push("tail.max_queued_bytes: must be positive".into());
        }
        if self.queue.max_bytes < 1 << 20 {
            p.push("queue.max_bytes: must be at least 1048576".into());
        }
        if self.push.max_concurrent == 0 {
            p.push("push.max_concurrent: must be at least 1".into());
        }
        let plan = self.memory_plan();
        if plan.queue < MIN_QUEUE_MEMORY {
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            p.push(format!(
                "memory.budget_bytes: {:.1} MiB leaves the queue {:.1} MiB, less than the {:.0} MiB it needs, \
                 after {:.1} MiB for batches in flight (forward.max_in_flight × forward.batch_max_bytes × 2.5), \
                 {:.1} MiB for pushes (push.max_concurrent × push.max_message_bytes × 5) and {:.1} MiB \
                 for reading files (tail.read_chunk_bytes × 2): raise the budget or lower those",
                mib(self.memory.budget_bytes),
                mib(plan.queue),
                mib(MIN_QUEUE_MEMORY),
                mib(plan.batches),
                mib(plan.pushes),
                mib(plan.files),
            ));
        }
        if !self.push.listen.is_empty() && self.push.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "push.listen: `{}` is not an address like 127.0.0.1:4317",
                self.push.listen
            ));
        }
        let f = &self.forward;
        if f.endpoints.is_empty() {
            p.push(format!(
                "forward.endpoints: give at least one collector (or set {ENV_ENDPOINTS})"
            ));
        }
        for e in &f.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://"))
                || e.parse::<tonic::transport::Uri>().is_err()
            {
                p.push(format!(
                    "forward.endpoints: `{e}` is not a URL like http://host:4320"
                ));
            }
        }
        if f.batch_max_records == 0 || f.batch_max_bytes == 0 {
            p.push("forward.batch_max_records and batch_max_bytes: must be positive".into());
        }
        if f.max_in_flight == 0 {
            p.push("forward.max_in_flight: must be at least 1".into());
        }
        if f.backoff_initial_ms == 0 || f.backoff_max_ms < f.backoff_initial_ms {
            p.push(
                "forward.backoff_initial_ms: must be positive and at most backoff_max_ms".into(),
            );
        }
        if f.request_timeout_ms < 1000 {
            p.push("forward.request_timeout_ms: must be at least 1000".into());
        }
        if f.tls.cert_file.is_empty() != f.tls.key_file.is_empty() {
            p.push("forward.tls: cert_file and key_file go together".into());
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "metrics.listen: `{}` is not an address like 127.0.0.1:9464 (empty: off)",
                self.metrics.listen
            ));
        }
        p.extend(self.sentry.problems());
        p.extend(self.log.problem());
        p
    }

    fn log(&mut self) -> &mut LogConfig {
        &mut self.log
    }

    fn sentry(&self) -> &SentryConfig {
        &self.sentry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../deploy/agent.toml");
        let (config, unknown) = logferry_daemon::parse::<Config>(text).expect("parses");
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(config.problems(), Vec::<String>::new());
        assert_eq!(config.sources[0].format, Format::Json);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            bogus = 1
            [forward]
            endpoints = []
            max_in_flight = 0
            [[sources]]
            include = ["relative/*.log"]
            colour = "red"
        "#;
        let (config, unknown) = logferry_daemon::parse::<Config>(text).expect("parses");
        assert_eq!(
            unknown,
            vec!["bogus: unknown key", "sources.0.colour: unknown key"]
        );
        let problems = config.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("sources[0].name")));
        assert!(problems
            .iter()
            .any(|p| p.contains("must be an absolute path")));
        assert!(problems.iter().any(|p| p.starts_with("forward.endpoints")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("forward.max_in_flight")));
    }

    #[test]
    fn the_memory_budget_is_shared_and_one_too_small_is_refused() {
        const MIB: u64 = 1 << 20;
        let mut config = Config::default();
        config.sources.push(SourceConfig {
            name: "app".into(),
            include: vec!["/var/log/app/*.log".into()],
            ..SourceConfig::default()
        });
        // The defaults: 2 x 16 MiB batches, one 1 MiB read, no pushes.
        assert_eq!(
            config.memory_plan(),
            MemoryPlan {
                files: 2 * MIB,
                pushes: 0,
                batches: 80 * MIB,
                queue: 14 * MIB,
            }
        );
        assert_eq!(config.problems(), Vec::<String>::new());
        // Pushes take their share from the queue's.
        config.push.listen = "127.0.0.1:4317".into();
        assert_eq!(config.memory_plan().pushes, 10 * MIB);
        assert_eq!(config.memory_plan().queue, 4 * MIB);
        assert_eq!(config.problems(), Vec::<String>::new());
        // A smaller budget leaves the queue too little: refused, with the
        // figures and the keys that make them.
        config.memory.budget_bytes = 42 * MIB;
        let problems = config.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        for part in [
            "memory.budget_bytes: 42.0 MiB leaves the queue 0.0 MiB",
            "80.0 MiB for batches in flight",
            "10.0 MiB for pushes",
            "2.0 MiB for reading files",
        ] {
            assert!(problems[0].contains(part), "{part}: {problems:?}");
        }
        // The small hosts' settings (README): 5 MiB batches.
        config.forward.batch_max_bytes = 5 * MIB;
        assert_eq!(config.memory_plan().queue, 5 * MIB);
        assert_eq!(config.problems(), Vec::<String>::new());
    }

    #[test]
    fn environment_overrides_endpoints() {
        let mut config = Config::default();
        config.apply_env(&|k| (k == ENV_ENDPOINTS).then(|| "http://a:1, http://b:2".into()));
        assert_eq!(config.forward.endpoints, vec!["http://a:1", "http://b:2"]);
    }
}
