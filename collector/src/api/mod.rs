//! The query, analytics and admin API: one service context (`service`)
//! with its operations by concern (`search`, `accounts`, `analytics`,
//! `alerts`), served over HTTP (`http`, axum) and gRPC (`grpc`, tonic),
//! with the crate's one error table (`crate::error`).

pub mod accounts;
pub mod alerts;
pub mod analytics;
pub mod grpc;
pub mod http;
pub mod search;
pub mod service;

pub use crate::error::ApiError;
pub use service::Service;
