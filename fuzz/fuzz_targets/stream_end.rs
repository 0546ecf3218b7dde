//! The response reader on streams: never panics, and its verdict and usage do not depend on
//! how the bytes were cut into chunks (the network decides that, not the provider).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use promptgate::providers::{ResponseReader, Usage, Verdict};

fn read(content_type: &str, chunks: &mut dyn Iterator<Item = &[u8]>) -> (Verdict, Option<Usage>) {
    let mut reader = ResponseReader::new(content_type, None);
    for chunk in chunks {
        reader.observe(&Bytes::copy_from_slice(chunk));
    }
    reader.finish();
    (reader.verdict(), reader.into_usage())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let content_type = if control & 1 == 0 {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let whole = read(content_type, &mut std::iter::once(body));
    let size = usize::from(control >> 1) + 1;
    let chunked = read(content_type, &mut body.chunks(size));
    let bytewise = read(content_type, &mut body.chunks(1));
    assert_eq!(whole, chunked, "chunks of {size} changed the verdict");
    assert_eq!(whole, bytewise, "byte-by-byte changed the verdict");
});
