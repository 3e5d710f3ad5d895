//! logferry-agent: follows log files and accepts gRPC pushes, keeps every
//! record in a durable RocksDB queue, and forwards batches to collectors.
//!
//! Layout:
//! - `config`: the TOML config, its validation and environment overrides;
//! - `redact`: the detectors a source's lines pass before they are queued;
//! - `tail`: discovery (globs, notify, rescan), file identity and
//!   checkpoints, line framing, the reader thread;
//! - `queue`: the RocksDB queue (records, batch manifests, checkpoints);
//! - `push`: the gRPC receiver for applications;
//! - `forward`: batching, sending with failover and backoff, acknowledging,
//!   setting aside what every collector refuses for good;
//! - `allocator`: glibc's tunables, set by running the agent once more;
//! - `commands`: `dead-letters`, `check-state`, `repair`, run with the
//!   agent stopped;
//! - `server`: wires the pieces together and shuts them down in order.

pub mod allocator;
pub mod commands;
pub mod config;
pub mod forward;
pub mod metrics;
pub mod push;
pub mod queue;
pub mod redact;
pub mod server;
pub mod tail;
