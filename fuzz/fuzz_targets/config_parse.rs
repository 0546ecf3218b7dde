//! Config parsing and validation on arbitrary text: never panics, and a problem message never
//! carries an `${ENV}` value (where API keys live) unless the text itself contained it.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "sk-fuzz-0d9e8f7a6b5c";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The error text is what `check`, the log and `POST /reload` show.
    if let Err(e) = promptgate::config::parse(text, "fuzz.yaml", &|_| Some(SECRET.to_string())) {
        let shown = e.to_string();
        assert!(text.contains(SECRET) || !shown.contains(SECRET), "{shown}");
    }
});
