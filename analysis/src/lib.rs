//! What the collector derives from each record as it arrives, so that
//! analytics are aggregations rather than scans:
//!
//! - [`patterns`]: the message's template (variables masked) and a stable
//!   id, and the grouping of templates that differ only where a value
//!   varies;
//! - [`security`]: whether an HTTP request is an attack, a scanner or a
//!   bot, and which rules said so.
//!
//! Both are pure functions of their input (the grouping of a set of
//! templates too), so every collector, and the offline `patterns` and
//! `classify` commands, agree.

pub mod patterns;
pub mod security;
