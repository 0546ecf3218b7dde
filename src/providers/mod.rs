//! What differs per provider, one file per question:
//! - [`format`]: what a body is, from its `Content-Type` ([`BodyFormat::of`]);
//! - [`verdict`]: whether it is a whole answer the provider vouches for ([`Verdict`]), per
//!   format: what a successful end looks like, and what an error or a refusal looks like;
//! - [`usage`]: the tokens a response used ([`Usage`]), prompt-cache reads and writes apart;
//! - [`reader`]: reads a body once as it passes, for both ([`ResponseReader`]);
//! - `doc`: the fields of a provider document those two read, parsed in one pass;
//! - `skim`: only the usage fields of a document, the rest skimmed (an answer not judged);
//! - `decode`: `Content-Encoding`, decoded for reading only, bounded;
//! - `lines`: the line framing the stream readers share;
//! - [`anthropic`]: the request side of Anthropic's prompt caching (`cache_control`
//!   breakpoints, [`anthropic::with_breakpoints`]).

pub mod anthropic;
mod decode;
mod doc;
mod format;
mod lines;
mod reader;
mod skim;
mod usage;
mod verdict;

pub use format::{BodyFormat, StreamFormat};
pub use reader::{ResponseReader, DEFAULT_JSON_LIMIT};
pub use usage::Usage;
pub use verdict::{Failure, Verdict};
