//! Why a batch was not stored: one variant per cause, each with its answer
//! to the agent (`status`) and its label in
//! `logferry_collector_ingest_refused_batches_total` (`label`), so that
//! neither is read back from the other's words.

use std::time::Duration;

use logferry_daemon::error_chain;
use logferry_proto::{REFUSAL_KEY, REFUSAL_MALFORMED, REFUSAL_TOO_LARGE, RETRY_AFTER_MS_KEY};
use tonic::Status;

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub enum Refusal {
    /// The credential check answered this (no or a refused credential, an
    /// agent id another credential owns; or the lookup failed).
    Auth(Status),
    /// For good: the batch does not decode, or its identity is incomplete.
    Malformed(String),
    /// For good: more records than `ingest.max_batch_records`.
    TooLarge(String),
    /// The batch is being stored elsewhere, or an INSERT of it still runs.
    Busy(String),
    /// Not stored within `ingest.batch_deadline_ms`.
    Deadline,
    /// Beyond admission, or ClickHouse's too many parts: retry after.
    Overloaded { after: Duration, message: String },
    /// ClickHouse unreachable or failing, or the collector not ready.
    Unavailable(String),
    /// The batch's decoding task failed (a panic).
    Internal(&'static str),
}

impl Refusal {
    /// A ClickHouse failure: retry later.
    pub fn store(e: StoreError) -> Refusal {
        Refusal::Unavailable(format!(
            "clickhouse unavailable, retry later: {}",
            error_chain(&e)
        ))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Auth(s) => match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => "unauthenticated",
                _ => "unavailable",
            },
            Refusal::Malformed(_) => "invalid",
            Refusal::TooLarge(_) => "too_large",
            Refusal::Busy(_) => "busy",
            Refusal::Deadline => "deadline",
            Refusal::Overloaded { .. } => "overloaded",
            Refusal::Unavailable(_) | Refusal::Internal(_) => "unavailable",
        }
    }

    /// No resend of the batch can change the answer: the agent sets it
    /// aside once every collector said so.
    pub fn permanent(&self) -> bool {
        matches!(self, Refusal::Malformed(_) | Refusal::TooLarge(_))
    }

    /// Worth retrying soon, and common in an outage: logged at most every
    /// 10 s.
    pub fn transient(&self) -> bool {
        match self {
            Refusal::Auth(s) => s.code() == tonic::Code::Unavailable,
            Refusal::Busy(_) | Refusal::Overloaded { .. } | Refusal::Unavailable(_) => true,
            _ => false,
        }
    }

    /// The answer to the agent. A permanent refusal carries
    /// `logferry-refusal`; an overloaded one `logferry-retry-after-ms`.
    pub fn status(self) -> Status {
        match self {
            Refusal::Auth(s) => s,
            Refusal::Malformed(m) => permanent(REFUSAL_MALFORMED, m),
            Refusal::TooLarge(m) => permanent(REFUSAL_TOO_LARGE, m),
            Refusal::Busy(m) | Refusal::Unavailable(m) => Status::unavailable(m),
            Refusal::Deadline => {
                Status::deadline_exceeded("batch deadline passed before its insert; retry")
            }
            Refusal::Overloaded { after, message } => {
                let mut status = Status::resource_exhausted(message);
                if let Ok(v) = after.as_millis().to_string().parse() {
                    status.metadata_mut().insert(RETRY_AFTER_MS_KEY, v);
                }
                status
            }
            Refusal::Internal(m) => Status::internal(m),
        }
    }
}

fn permanent(reason: &'static str, message: String) -> Status {
    let mut status = Status::invalid_argument(message);
    status.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static(reason),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_answer_and_label() {
        let cases = [
            (
                Refusal::Auth(Status::unauthenticated("no")),
                tonic::Code::Unauthenticated,
                "unauthenticated",
            ),
            (
                Refusal::Auth(Status::unavailable("lookup")),
                tonic::Code::Unavailable,
                "unavailable",
            ),
            (
                Refusal::Malformed("m".into()),
                tonic::Code::InvalidArgument,
                "invalid",
            ),
            (
                Refusal::TooLarge("t".into()),
                tonic::Code::InvalidArgument,
                "too_large",
            ),
            (Refusal::Busy("b".into()), tonic::Code::Unavailable, "busy"),
            (Refusal::Deadline, tonic::Code::DeadlineExceeded, "deadline"),
            (
                Refusal::Overloaded {
                    after: Duration::from_millis(1500),
                    message: "o".into(),
                },
                tonic::Code::ResourceExhausted,
                "overloaded",
            ),
            (
                Refusal::Unavailable("u".into()),
                tonic::Code::Unavailable,
                "unavailable",
            ),
            (Refusal::Internal("i"), tonic::Code::Internal, "unavailable"),
        ];
        for (refusal, code, label) in cases {
            assert_eq!(refusal.label(), label, "{refusal:?}");
            let permanent = refusal.permanent();
            let status = refusal.status();
            assert_eq!(status.code(), code);
            let marked = status
                .metadata()
                .get(REFUSAL_KEY)
                .map(|v| v.to_str().expect("ascii").to_string());
            match label {
                "invalid" => assert_eq!(marked.as_deref(), Some(REFUSAL_MALFORMED)),
                "too_large" => assert_eq!(marked.as_deref(), Some(REFUSAL_TOO_LARGE)),
                _ => assert_eq!(marked, None),
            }
            assert_eq!(permanent, marked.is_some());
            let after = status
                .metadata()
                .get(RETRY_AFTER_MS_KEY)
                .map(|v| v.to_str().expect("ascii").to_string());
            assert_eq!(after.as_deref(), (label == "overloaded").then_some("1500"));
        }
    }
}
