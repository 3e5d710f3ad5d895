//! logferry-collector: the central, stateless service agents ship to. It
//! stores logs in ClickHouse, exactly once per record.
//!
//! Layout:
//! - `config`: the TOML config, its validation and environment overrides;
//! - `ingest`: the gRPC ingest service and the exactly-once protocol;
//! - `auth`: users, tokens, agent credentials, roles, tenants, logins;
//! - `query`: search parameters, the query syntax and its SQL;
//! - `api`: the HTTP and gRPC query and admin API over one service layer;
//! - `tls`: certificates for every listener;
//! - `bootstrap`: the `bootstrap` command (first admin, first tenant);
//! - `decode`: batches into rows (JSON and text lines, pushed records);
//! - `record`: the row type and the mapping of well-known keys to columns;
//! - `store`: ClickHouse client, migrations, ledger, retention;
//! - `background`: work not awaited where it starts (notifications, agent
//!   reports), which shutdown waits for;
//! - `server`: wires the pieces together and shuts them down in order.

pub mod alerts;
pub mod analyze;
pub mod api;
pub mod auth;
pub mod background;
pub mod bootstrap;
pub mod config;
pub mod decode;
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
