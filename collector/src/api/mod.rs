//! The query and admin API: one service layer (`service`), served over
//! HTTP (`http`, axum) and gRPC (`grpc`, tonic), with one error table
//! (`error`).

pub mod error;
pub mod grpc;
pub mod http;
pub mod service;

pub use error::ApiError;
pub use service::Service;
