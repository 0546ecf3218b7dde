//! The end-of-stream watcher: never panics, and its verdict does not depend on how the bytes
//! were cut into chunks (the network decides that, not the provider).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptgate::providers::StreamEnd;

fn verdict(content_type: &str, chunks: &mut dyn Iterator<Item = &[u8]>) -> bool {
    let mut watcher = StreamEnd::for_content_type(content_type).expect("a streaming type");
    for chunk in chunks {
        watcher.observe(chunk);
    }
    watcher.seen()
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
    let whole = verdict(content_type, &mut std::iter::once(body));
    let size = usize::from(control >> 1) + 1;
    let chunked = verdict(content_type, &mut body.chunks(size));
    let bytewise = verdict(content_type, &mut body.chunks(1));
    assert_eq!(whole, chunked, "chunks of {size} changed the verdict");
    assert_eq!(whole, bytewise, "byte-by-byte changed the verdict");
});
