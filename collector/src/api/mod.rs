//! The query, analytics and admin API: one service layer (`service`,
//! `analytics`), served over
//! HTTP (`http`, axum) and gRPC (`grpc`, tonic), with one error table
//! (`error`).

pub mod alerts;
pub mod analytics;
pub mod error;
pub mod grpc;
pub mod http;
pub mod service;

pub use error::ApiError;
pub use service::Service;
