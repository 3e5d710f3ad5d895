//! Errors a caller of the collector can see, and the one table that maps
//! each to an HTTP status and a gRPC code, so that the two query APIs and
//! ingest's credential checks never disagree.

use axum::http::StatusCode;
use serde::Serialize;
use tonic::Code;

use crate::auth::AuthError;
use crate::query::QueryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A bounded resource (live tails) is exhausted; fails fast.
    #[error("{0}")]
    Busy(String),
    #[error("the collector is still connecting to clickhouse; retry later")]
    Starting,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an error shows on each API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub http: StatusCode,
    pub grpc: tonic::Code,
    /// Stable machine-readable code in JSON error bodies.
    pub code: &'static str,
}

const fn map(http: StatusCode, grpc: tonic::Code, code: &'static str) -> Mapping {
    Mapping { http, grpc, code }
}

const UNAUTHENTICATED: Mapping = map(
    StatusCode::UNAUTHORIZED,
    Code::Unauthenticated,
    "unauthenticated",
);
const FORBIDDEN: Mapping = map(StatusCode::FORBIDDEN, Code::PermissionDenied, "forbidden");
const TOO_MANY_ATTEMPTS: Mapping = map(
    StatusCode::TOO_MANY_REQUESTS,
    Code::ResourceExhausted,
    "too_many_attempts",
);
const INVALID_QUERY: Mapping = map(
    StatusCode::BAD_REQUEST,
    Code::InvalidArgument,
    "invalid_query",
);
const INVALID_REQUEST: Mapping = map(
    StatusCode::BAD_REQUEST,
    Code::InvalidArgument,
    "invalid_request",
);
const NOT_FOUND: Mapping = map(StatusCode::NOT_FOUND, Code::NotFound, "not_found");
const CONFLICT: Mapping = map(StatusCode::CONFLICT, Code::AlreadyExists, "conflict");
const BUSY: Mapping = map(
    StatusCode::TOO_MANY_REQUESTS,
    Code::ResourceExhausted,
    "busy",
);
const TOO_EXPENSIVE: Mapping = map(
    StatusCode::UNPROCESSABLE_ENTITY,
    Code::FailedPrecondition,
    "query_too_expensive",
);
const UNAVAILABLE: Mapping = map(
    StatusCode::SERVICE_UNAVAILABLE,
    Code::Unavailable,
    "unavailable",
);

impl ApiError {
    /// Every row of the table, for the API's documentation.
    pub const TABLE: [Mapping; 10] = [
        UNAUTHENTICATED,
        FORBIDDEN,
        TOO_MANY_ATTEMPTS,
        INVALID_QUERY,
        INVALID_REQUEST,
        NOT_FOUND,
        CONFLICT,
        BUSY,
        TOO_EXPENSIVE,
        UNAVAILABLE,
    ];

    /// The table.
    pub fn mapping(&self) -> Mapping {
        match self {
            ApiError::Auth(AuthError::Unauthenticated(_)) => UNAUTHENTICATED,
            ApiError::Auth(AuthError::Forbidden(_)) => FORBIDDEN,
            ApiError::Auth(AuthError::TooManyAttempts { .. }) => TOO_MANY_ATTEMPTS,
            ApiError::Query(_) => INVALID_QUERY,
            ApiError::BadRequest(_) => INVALID_REQUEST,
            ApiError::NotFound(_) => NOT_FOUND,
            ApiError::Conflict(_) => CONFLICT,
            ApiError::Busy(_) => BUSY,
            ApiError::Store(StoreError::TooExpensive) => TOO_EXPENSIVE,
            ApiError::Starting | ApiError::Store(_) | ApiError::Auth(AuthError::Store(_)) => {
                UNAVAILABLE
            }
        }
    }

    /// Where in the query text the mistake is, for query errors.
    pub fn position(&self) -> Option<usize> {
        match self {
            ApiError::Query(QueryError::Invalid { pos, .. }) => *pos,
            _ => None,
        }
    }

    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::Auth(AuthError::TooManyAttempts { retry_after_s }) => Some(*retry_after_s),
            _ => None,
        }
    }

    /// Whether the cause is inside the collector or ClickHouse, not in the
    /// request: its details (ClickHouse's text, generated SQL) go to the
    /// collector's log, never to the caller.
    fn internal(&self) -> bool {
        matches!(
            self,
            ApiError::Store(e) | ApiError::Auth(AuthError::Store(e))
                if !matches!(e, StoreError::TooExpensive)
        )
    }

    /// The message shown to the caller: the whole chain for mistakes in
    /// the request; for internal failures only what happened, with the
    /// request id under which the log has the details.
    pub fn message_for(&self, request_id: &str) -> String {
        if self.internal() {
            return format!(
                "the collector could not complete this request (ClickHouse failed or is unreachable); retry later, \
                 or ask an operator to look for request {request_id} in the collector's log"
            );
        }
        self.message()
    }

    /// The whole chain of causes, for the log.
    pub fn message(&self) -> String {
        logferry_daemon::error_chain(self)
    }

    /// The response body, and for an internal failure the request id it
    /// was logged under.
    pub fn body(&self) -> ErrorBody {
        let request_id = self.internal().then(|| self.log_internal());
        ErrorBody {
            error: ErrorDetail {
                code: self.mapping().code,
                message: self.message_for(request_id.as_deref().unwrap_or("")),
                position: self.position(),
                request_id,
            },
        }
    }

    /// Logs an internal failure with its causes under a new request id.
    fn log_internal(&self) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        tracing::warn!(request_id = %id, error = %self.message(), "api request failed");
        id
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `unauthenticated`, `forbidden`, `too_many_attempts`, `invalid_query`,
    /// `invalid_request`, `not_found`, `conflict`, `busy`,
    /// `query_too_expensive` or `unavailable`.
    pub code: &'static str,
    pub message: String,
    /// For `invalid_query`: the character position of the mistake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// For `unavailable`: the id under which the collector logged the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let request_id = e.internal().then(|| e.log_internal());
        let mut message = e.message_for(request_id.as_deref().unwrap_or(""));
        if let Some(pos) = e.position() {
            message = format!("{message} (position {pos})");
        }
        tonic::Status::new(e.mapping().grpc, message)
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = self.mapping().http;
        let retry = self.retry_after_s();
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(s) = retry {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which row of the table an error takes. No arm is a wildcard over
    /// `ApiError` or `AuthError`, so a new variant does not compile until
    /// it has a row here; `every_row` then needs an example of it.
    fn row(e: &ApiError) -> usize {
        match e {
            ApiError::Auth(AuthError::Unauthenticated(_)) => 0,
            ApiError::Auth(AuthError::Forbidden(_)) => 1,
            ApiError::Auth(AuthError::TooManyAttempts { .. }) => 2,
            ApiError::Auth(AuthError::Store(_)) => 3,
            ApiError::Query(QueryError::Invalid { .. }) => 4,
            ApiError::BadRequest(_) => 5,
            ApiError::NotFound(_) => 6,
            ApiError::Conflict(_) => 7,
            ApiError::Busy(_) => 8,
            ApiError::Starting => 9,
            ApiError::Store(StoreError::TooExpensive) => 10,
            ApiError::Store(_) => 11,
        }
    }

    const ROWS: usize = 12;

    /// An error of every row, in row order.
    fn every_row() -> Vec<ApiError> {
        let errors = vec![
            ApiError::Auth(AuthError::Unauthenticated("x".into())),
            ApiError::Auth(AuthError::Forbidden("x".into())),
            ApiError::Auth(AuthError::TooManyAttempts { retry_after_s: 3 }),
            ApiError::Auth(AuthError::Store(StoreError::Decode("x".into()))),
            ApiError::Query(QueryError::Invalid {
                pos: Some(4),
                message: "x".into(),
            }),
            ApiError::BadRequest("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::Busy("x".into()),
            ApiError::Starting,
            ApiError::Store(StoreError::TooExpensive),
            ApiError::Store(StoreError::Decode("x".into())),
        ];
        let rows: Vec<usize> = errors.iter().map(row).collect();
        assert_eq!(rows, (0..ROWS).collect::<Vec<_>>(), "one example per row");
        for m in ApiError::TABLE {
            assert!(
                errors.iter().any(|e| e.mapping() == m),
                "{} is in TABLE but no error maps to it",
                m.code
            );
        }
        for e in &errors {
            assert!(
                ApiError::TABLE.contains(&e.mapping()),
                "{e:?} is not in TABLE"
            );
        }
        errors
    }

    #[test]
    fn http_status_and_grpc_code_agree() {
        let errors = every_row();
        for e in errors {
            let m = e.mapping();
            let status = tonic::Status::from(e);
            assert_eq!(status.code(), m.grpc);
            // The gRPC-over-HTTP mapping of each code (grpc/doc/http-grpc-status-mapping).
            let expected = match m.grpc {
                tonic::Code::Unauthenticated => 401,
                tonic::Code::PermissionDenied => 403,
                tonic::Code::ResourceExhausted => 429,
                tonic::Code::InvalidArgument => 400,
                tonic::Code::NotFound => 404,
                tonic::Code::AlreadyExists => 409,
                tonic::Code::FailedPrecondition => 422,
                tonic::Code::Unavailable => 503,
                c => panic!("unmapped {c:?}"),
            };
            assert_eq!(m.http.as_u16(), expected, "{}", m.code);
        }
    }

    #[test]
    fn internal_failures_keep_their_details_in_the_log() {
        let e = ApiError::Store(StoreError::Decode(
            "Code: 215. DB::Exception: any(host) is found in WHERE: SELECT agent_id".into(),
        ));
        let body = e.body();
        let id = body.error.request_id.clone().expect("a request id");
        assert!(body.error.message.contains(&id), "{}", body.error.message);
        assert!(
            !body.error.message.contains("SELECT"),
            "{}",
            body.error.message
        );
        assert!(
            !body.error.message.contains("DB::Exception"),
            "{}",
            body.error.message
        );
        let status = tonic::Status::from(e);
        assert!(!status.message().contains("SELECT"), "{}", status.message());
        // A mistake in the request keeps its explanation and gets no id.
        let e = ApiError::BadRequest("limit must be between 1 and 1000".into());
        assert_eq!(e.body().error.message, "limit must be between 1 and 1000");
        assert_eq!(e.body().error.request_id, None);
    }
}
