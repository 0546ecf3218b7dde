//! What differs per provider, one file per question:
//! - [`format`]: what a body is, from its `Content-Type` ([`BodyFormat::of`]);
//! - [`stream_end`]: whether a stream reached its end marker ([`StreamEnd`]);
//! - [`usage`]: the tokens a response used ([`UsageObserver`]), prompt-cache reads and writes
//!   apart;
//! - [`anthropic`]: the request side of Anthropic's prompt caching (`cache_control`
//!   breakpoints, [`anthropic::with_breakpoints`]);
//! - `lines`: the line framing the stream readers share.

pub mod anthropic;
mod format;
mod lines;
mod stream_end;
mod usage;

pub use format::{BodyFormat, StreamFormat};
pub use stream_end::StreamEnd;
pub use usage::{Usage, UsageObserver};
