//! logferry-collector: the central, stateless service agents ship to. It
//! stores logs in ClickHouse, exactly once per record.
//!
//! Layout, top down (each module uses only those below it; the `layers`
//! test fails on an import cycle or an import that goes up):
//! - `server`: wires the pieces together and shuts them down in order;
//! - `bootstrap`: the `bootstrap` command (first admin, first tenant);
//! - `ingest`: the gRPC ingest service and the exactly-once protocol;
//! - `api`: the HTTP and gRPC query and admin API: requests, callers and
//!   responses, over one service context;
//! - `error`: the one table of errors a caller sees (HTTP status, gRPC
//!   code), for the API and ingest's credential checks;
//! - `auth`: users, tokens, agent credentials, roles, tenants, logins;
//! - `tls`: certificates for every listener;
//! - `config`: the TOML config, its validation and environment overrides;
//! - `alerts`: rules, their evaluation, state and notifications;
//! - `analytics`: the analytics views (error groups, performance,
//!   security, users, health, daily report) over the store;
//! - `analyze`: what ingest stamps on each record (pattern, route, class);
//! - `store`: ClickHouse: connection, migrations, ledger, retention, and
//!   the queries of every reader;
//! - `decode`: batches into rows (JSON and text lines, pushed records);
//! - `record`, `query`, `clock`, `metrics`, `geoip`, `listen`,
//!   `background`, `offline`: the row type, the query syntax and its SQL,
//!   time, counters, addresses, listeners, work shutdown waits for, and the
//!   offline tools.

pub mod alerts;
pub mod analytics;
pub mod analyze;
pub mod api;
pub mod auth;
pub mod background;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod decode;
pub mod error;
pub mod geoip;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod offline;
pub mod query;
pub mod record;
pub mod server;
pub mod store;
pub mod tls;
