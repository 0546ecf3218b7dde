//! Reading only the usage of a provider document: its top-level fields that report tokens or
//! the model (and those of a wrapped `message` or `response`), found by skimming past the rest
//! of the document instead of parsing it. For an answer nobody judges (a pass-through, a miss
//! that will not be stored), where parsing the whole body to find its `usage` was a tenth of
//! the request's instructions.
//!
//! Skimming jumps strings 16 bytes at a look (SSE2, part of every x86_64; elsewhere and past
//! a string's first 64 bytes `memchr`: an answer is mostly the text of its content) and counts
//! brackets; only the values of the fields usage reads are parsed, by the same lenient
//! field types as [`super::doc`], so they read exactly as a whole parse reads them. A `"usage"`
//! anywhere but at the top level (in a message's text, inside `choices`) is a string or a
//! nested key, skipped like any other.
//!
//! What it checks of the skipped parts is their structure: every string closed, brackets
//! balanced and matching, nothing after the document but whitespace. A truncated body has no
//! usage, as before; a body whose skipped parts are otherwise malformed (a bad number, a
//! control character in a string) may still report the usage a whole parse would have refused.
//! A usage field given twice is refused, as the whole parse refuses it.

use super::doc::{CachedDetails, Counts, Doc, Num, Obj, Text};
use serde::Deserialize;
use std::borrow::Cow;

/// How deep `message`/`response` wrappers are read by skimming; deeper ones are parsed whole.
const MAX_WRAPPERS: usize = 4;

/// The fields [`Doc::merge_usage`] reads, in the order of the bit recording each one's
/// presence (a second occurrence refuses the document).
const FIELDS: [&[u8]; 8] = [
    b"model",
    b"modelVersion",
    b"usage",
    b"usageMetadata",
    b"prompt_eval_count",
    b"eval_count",
    b"message",
    b"response",
];

/// The fields of a `usage` object ([`Counts`]), in the order of their bits.
const COUNTS: [&[u8]; 8] = [
    b"prompt_tokens",
    b"completion_tokens",
    b"input_tokens",
    b"output_tokens",
    b"cache_creation_input_tokens",
    b"cache_read_input_tokens",
    b"prompt_tokens_details",
    b"input_tokens_details",
];

/// Bytes that start or end something the skimmer must see: a string, an object, an array.
static STRUCTURAL: [bool; 256] = table(b"\"{}[]");

/// Bytes that end a number or a literal: what may follow a value, whitespace included.
static ENDS_SCALAR: [bool; 256] = table(b",}] \t\n\r");

/// A byte table, true for `bytes`.
const fn table(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

/// The usage fields of one JSON object document, every other field left at its default;
/// `None` when `json` is not one whole object (whitespace around it aside), or a usage field
/// appears twice or does not parse.
pub(super) fn usage_doc(json: &[u8]) -> Option<Doc<'_>> {
    let mut s = Skim { b: json, i: 0 };
    s.ws();
    if s.peek()? != b'{' {
        return None;
    }
    let doc = s.object(0)?;
    s.ws();
    (s.i == json.len()).then_some(doc)
}

/// A cursor over the bytes of a document.
struct Skim<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Skim<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Past JSON whitespace.
    fn ws(&mut self) {
        // Compact JSON has none: one compare says so.
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek().filter(|&c| c <= b' ') {
            self.i += 1;
        }
    }

    /// Past the string whose opening quote is at the cursor: the range of its raw content, and
    /// whether it holds an escape.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i + 1;
        // Most strings a skim passes are keys and short values, ended within two looks.
        let end = match look(self.b, start) {
            Some(n @ 0..16) => start + n as usize,
            Some(_) => match look(self.b, start + 16) {
                Some(n @ 0..16) => start + 16 + n as usize,
                _ => return self.long_string(start),
            },
            None => return self.long_string(start),
        };
        if self.b[end] == b'"' {
            self.i = end + 1;
            return Some((start, end, false));
        }
        self.long_string(start)
    }

    /// [`Self::string`] for a string longer than two looks (32 bytes) or holding an escape.
    #[inline(never)]
    fn long_string(&mut self, start: usize) -> Option<(usize, usize, bool)> {
        let mut at = start;
        let mut escaped = false;
        loop {
            // A few looks over a string's first bytes, then `memchr2` for a long text.
            let found = match look(self.b, at) {
                Some(n @ 0..16) => at + n as usize,
                Some(_) if at - start < 64 => {
                    at += 16;
                    continue;
                }
                _ => at + memchr::memchr2(b'"', b'\\', self.b.get(at..)?)?,
            };
            if self.b[found] == b'"' {
                self.i = found + 1;
                return Some((start, found, escaped));
            }
            escaped = true;
            at = found + 2; // the escaped byte can be a quote; `\uXXXX` needs no care
        }
    }

    /// Past one value of any type.
    #[inline(always)]
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => self.container(),
            _ => {
                let start = self.i;
                while self.peek().is_some_and(|c| !ENDS_SCALAR[usize::from(c)]) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// Past the object or array opening at the cursor, nested ones included.
    fn container(&mut self) -> Option<()> {
        // One bit per open bracket, 1 for `{`: at most 128 deep (serde_json's own limit).
        let mut open: u128 = 0;
        let mut depth = 0u32;
        loop {
            // Numbers, literals, commas and colons need no look.
            while !STRUCTURAL[usize::from(self.peek()?)] {
                self.i += 1;
            }
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                c @ (b'{' | b'[') => {
                    if depth == 128 {
                        return None;
                    }
                    open = open << 1 | u128::from(c == b'{');
                    depth += 1;
                }
                c @ (b'}' | b']') => {
                    if (open & 1 == 1) != (c == b'}') {
                        return None;
                    }
                    open >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Walks the object opening at the cursor: `read` reads the value of each field named in
    /// `names` (by its index there), every other value is skimmed. A named field given twice
    /// refuses the object, as a whole parse into a struct refuses it.
    fn fields(
        &mut self,
        names: &[&[u8]],
        mut read: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        let mut seen = 0u32;
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let (start, end, escaped) = self.string()?;
            let field = if escaped {
                // A key spelled with escapes is still that key.
                let key: String = serde_json::from_slice(&self.b[start - 1..end + 1]).ok()?;
                names.iter().position(|f| *f == key.as_bytes())
            } else {
                names.iter().position(|f| *f == &self.b[start..end])
            };
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            match field {
                None => self.value()?,
                Some(n) => {
                    if seen & 1 << n != 0 {
                        return None;
                    }
                    seen |= 1 << n;
                    read(self, n)?;
                }
            }
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The object opening at the cursor, with its usage fields read.
    fn object(&mut self, wrappers: usize) -> Option<Doc<'a>> {
        let mut doc = Doc::default();
        self.fields(&FIELDS, |s, n| s.field(&mut doc, n, wrappers))?;
        Some(doc)
    }

    /// Reads the value at the cursor into `doc`'s field number `n` of [`FIELDS`].
    fn field(&mut self, doc: &mut Doc<'a>, n: usize, wrappers: usize) -> Option<()> {
        let wrapper = n >= 6;
        if wrapper && wrappers < MAX_WRAPPERS {
            // A wrapped document is skimmed too: its content is most of it (Ollama's message).
            let inner = if self.peek()? == b'{' {
                Obj(Some(Box::new(self.object(wrappers + 1)?)))
            } else {
                self.value()?;
                Obj(None)
            };
            match n {
                6 => doc.message = inner,
                _ => doc.response = inner,
            }
            return Some(());
        }
        if n == 2 && self.peek()? == b'{' {
            doc.usage = Obj(Some(self.counts()?));
            return Some(());
        }
        let start = self.i;
        if n < 2 && self.peek()? == b'"' {
            let (from, to, escaped) = self.string()?;
            let t = text(&self.b[from..to], escaped)
                .map_or_else(|| parse(&self.b[start..self.i]), Some)?;
            match n {
                0 => doc.model = t,
                _ => doc.model_version = t,
            }
            return Some(());
        }
        self.value()?;
        let v = &self.b[start..self.i];
        match n {
            0 => doc.model = parse(v)?,
            1 => doc.model_version = parse(v)?,
            2 => doc.usage = parse(v)?,
            3 => doc.usage_metadata = parse(v)?,
            4 => doc.prompt_eval_count = parse(v)?,
            5 => doc.eval_count = parse(v)?,
            6 => doc.message = parse(v)?,
            _ => doc.response = parse(v)?,
        }
        Some(())
    }

    /// The `usage` object opening at the cursor, read field by field (serde's derived parser
    /// was most of what remained of reading an answer's usage).
    fn counts(&mut self) -> Option<Counts> {
        let mut c = Counts::default();
        self.fields(&COUNTS, |s, n| {
            if n >= 6 {
                let details = if s.peek()? == b'{' {
                    let mut d = CachedDetails::default();
                    s.fields(&[b"cached_tokens"], |s, _| {
                        d.cached_tokens = s.num()?;
                        Some(())
                    })?;
                    Obj(Some(d))
                } else {
                    let start = s.i;
                    s.value()?;
                    parse(&s.b[start..s.i])?
                };
                match n {
                    6 => c.prompt_tokens_details = details,
                    _ => c.input_tokens_details = details,
                }
                return Some(());
            }
            let num = s.num()?;
            match n {
                0 => c.prompt_tokens = num,
                1 => c.completion_tokens = num,
                2 => c.input_tokens = num,
                3 => c.output_tokens = num,
                4 => c.cache_creation_input_tokens = num,
                _ => c.cache_read_input_tokens = num,
            }
            Some(())
        })?;
        Some(c)
    }

    /// The count at the cursor: a plain integer read here, anything else (a sign, a fraction,
    /// an exponent, another type, a malformed number) as [`Num`] reads it.
    fn num(&mut self) -> Option<Num> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        let digits = self.i - start;
        // 19 digits always fit in a u64; JSON allows no leading zero.
        let plain = (1..=19).contains(&digits)
            && (self.b[start] != b'0' || digits == 1)
            && self.peek().is_some_and(|c| ENDS_SCALAR[usize::from(c)]);
        if plain {
            return Some(Num(Some(n)));
        }
        self.i = start;
        self.value()?;
        parse(&self.b[start..self.i])
    }
}

/// A plain string's content (no escape, no control character, UTF-8) read in place; `None`
/// for any other, which [`Text`]'s parse reads.
fn text(inner: &[u8], escaped: bool) -> Option<Text<'_>> {
    if escaped || inner.iter().filter(|&&c| c < 0x20).count() != 0 {
        return None;
    }
    let s = std::str::from_utf8(inner).ok()?;
    Some(Text(Some(Cow::Borrowed(s))))
}

/// Where the first `"` or `\\` is among the 16 bytes of `b` from `at`: its offset, or 16 when
/// there is none; `None` when fewer than 16 bytes are left (or off x86_64).
#[inline(always)]
fn look(b: &[u8], at: usize) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let chunk = b.get(at..at.checked_add(16)?)?;
        // SAFETY: SSE2 is part of x86_64's baseline; the load reads the 16 bytes of `chunk`.
        let mask = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            _mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            ))
        };
        Some(mask.trailing_zeros().min(16))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (b, at);
        None
    }
}

fn parse<'a, T: Deserialize<'a>>(v: &'a [u8]) -> Option<T> {
    serde_json::from_slice(v).ok()
}

#[cfg(test)]
mod tests {
    use super::super::doc::parse_doc;
    use super::super::usage::Usage;
    use super::*;

    /// The usage `usage_doc` reads, and the usage a whole parse reads, of one document.
    fn both(json: &str) -> (Option<Usage>, Option<Usage>) {
        let mut skimmed = None;
        if let Some(d) = usage_doc(json.as_bytes()) {
            d.merge_usage(&mut skimmed);
        }
        let mut parsed = None;
        if let Some(d) = parse_doc(json.as_bytes()) {
            d.merge_usage(&mut parsed);
        }
        (skimmed, parsed)
    }

    /// (input, output, model) as skimmed, after checking a whole parse reads the same.
    fn skim(json: &str) -> Option<(u64, u64, Option<String>)> {
        let (skimmed, parsed) = both(json);
        assert_eq!(skimmed, parsed, "{json}");
        skimmed.map(|u| (u.input, u.output, u.model))
    }

    #[test]
    fn a_usage_in_content_or_nested_objects_is_not_the_top_level_one() {
        // in the message text, quoted, with escaped quotes around it
        assert_eq!(
            skim(
                r#"{"model":"m","choices":[{"message":{"content":"say \"usage\":{\"prompt_tokens\":99} and \\","usage":{"prompt_tokens":98}},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#
            ),
            Some((3, 4, Some("m".into())))
        );
        // only nested usages: none at the top level
        assert_eq!(
            skim(
                r#"{"choices":[{"usage":{"prompt_tokens":5}}],"x":{"usage":{"prompt_tokens":6},"model":"nested"}}"#
            ),
            None
        );
        // a key that merely contains the word, and a string value "usage"
        assert_eq!(
            skim(r#"{"usage_hint":{"prompt_tokens":7},"note":"usage","usage":null}"#),
            None
        );
        // a content string ending in a backslash before the real usage
        assert_eq!(
            skim(r#"{"content":"a\\","usage":{"input_tokens":1,"output_tokens":2}}"#),
            Some((1, 2, None))
        );
    }

    #[test]
    fn usage_anywhere_among_the_top_level_fields_and_any_whitespace() {
        assert_eq!(
            skim(
                " \r\n{ \"usage\" :\t{\"prompt_tokens\": 10 ,\"completion_tokens\":2 } ,\n \"model\" : \"gpt-4o\" , \"choices\" : [ { \"message\" : { \"content\" : \"hi\" } } ] }\n "
            ),
            Some((10, 2, Some("gpt-4o".into())))
        );
        // an escaped key is the same key; an escaped model reads unescaped
        assert_eq!(
            skim(r#"{"usag\u0065":{"prompt_tokens":1},"model":"a\/b"}"#),
            Some((1, 0, Some("a/b".into())))
        );
        // Ollama's chat: the message (its text skimmed) wraps no usage
        assert_eq!(
            skim(
                r#"{"model":"llama3.2","message":{"role":"assistant","content":"{\"eval_count\":1}"},"done":true,"prompt_eval_count":9,"eval_count":4}"#
            ),
            Some((9, 4, Some("llama3.2".into())))
        );
        // Anthropic's message_start and a Responses event wrap theirs
        assert_eq!(
            skim(
                r#"{"type":"message_start","message":{"model":"claude","content":[],"usage":{"input_tokens":25,"output_tokens":1}}}"#
            ),
            Some((25, 1, Some("claude".into())))
        );
        assert_eq!(
            skim(
                r#"{"type":"response.completed","response":{"model":"gpt-4.1","output":[{"content":[{"text":"x"}]}],"usage":{"input_tokens":21,"output_tokens":6}}}"#
            ),
            Some((21, 6, Some("gpt-4.1".into())))
        );
        // deep wrappers past the skimmed depth are parsed whole, to the same result
        let deep = format!(
            "{}{{\"usage\":{{\"prompt_tokens\":8}}}}{}",
            r#"{"message":"#.repeat(6),
            "}".repeat(6)
        );
        assert_eq!(skim(&deep), Some((8, 0, None)));
    }

    #[test]
    fn counts_read_as_a_whole_parse_reads_them() {
        for counts in [
            r#"{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#,
            r#"{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":20}"#,
            r#"{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":1500,"output_tokens":393}"#,
            r#"{ "prompt_tokens" : 0 , "completion_tokens" : 18446744073709551615 }"#,
            r#"{"prompt_tokens":18446744073709551616,"completion_tokens":9999999999999999999}"#,
            r#"{"prompt_tokens":-3,"completion_tokens":1.0,"input_tokens":1e2,"output_tokens":"7"}"#,
            r#"{"prompt_tokens":null,"completion_tokens":[1],"input_tokens":{"a":1},"output_tokens":true}"#,
            r#"{"prompt_tokens_details":[1],"input_tokens_details":null,"prompt_tokens":5}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":"1"},"prompt_tokens":5}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":9,"cached_tokens":8},"prompt_tokens":5}"#,
            r#"{"prompt_tokens":01}"#,
            r#"{"prompt_tokens":1234567890123456789,"completion_tokens":12345678901234567890}"#,
            r#"{"prompt_tokens":0,"completion_tokens":00}"#,
            r#"{"prompt_tokens":-0,"completion_tokens":7 ,"input_tokens":8}"#,
            r#"{"prompt_tokens":1.5e3,"completion_tokens":2E1,"output_tokens":3.}"#,
            r#"{"prompt_tokens":12x}"#,
            r#"{"prompt_tokens":12"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens":1,}"#,
            r#"{"prompt_tokens":1 "completion_tokens":2}"#,
            r#"{"prompt_tok\u0065ns":4,"completion_tokens":2}"#,
            r#"{}"#,
        ] {
            let doc = format!(r#"{{"model":"m","usage":{counts}}}"#);
            skim(&doc);
        }
    }

    /// Model names (read in place when plain) and strings of any length: as a whole parse
    /// reads them.
    #[test]
    fn model_names_and_strings_of_any_length_read_as_a_whole_parse_reads_them() {
        for model in [
            r#""gpt-4o""#,
            r#""""#,
            r#""gpt\u002d4o""#,
            r#""a\"b""#,
            r#""tab\there""#,
            "\"raw\u{1}control\"",
            "\"raw\ttab\"",
            r#""ü-modèle""#,
            r#""0123456789abcde""#,
            r#""0123456789abcdef""#,
            r#""0123456789abcdefg""#,
            r#""0123456789abcdef\"q""#,
            r#""0123456789abcde\\""#,
            r#""a-very-long-model-name-well-beyond-sixteen-bytes\n""#,
            "7",
            "null",
            r#"["gpt"]"#,
        ] {
            for key in ["k", "0123456789abcdef", "0123456789abcdefghij", "k\\u0061"] {
                let doc = format!(
                    r#"{{"{key}":"0123456789abcdef\"","model":{model},"usage":{{"prompt_tokens":1}}}}"#
                );
                skim(&doc);
            }
        }
        assert_eq!(
            skim(r#"{"model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":1}}"#),
            Some((1, 0, Some("gpt-4o-mini-2024-07-18".into())))
        );
        // Any length, an escape anywhere (around each 16-byte look and past the looks), the
        // string in the middle or at the very end of the document.
        for len in 0..100 {
            for escape in [
                None,
                Some(0),
                Some(14),
                Some(15),
                Some(16),
                Some(17),
                Some(63),
            ]
            .into_iter()
            .chain([Some(31), Some(32), Some(33), Some(64), Some(65), Some(70)])
            .chain([Some(len.max(1) - 1)])
            {
                let mut name = "m".repeat(len);
                if let Some(at) = escape.filter(|&at| at < len) {
                    name.replace_range(at..at + 1, r#"\""#);
                }
                for doc in [
                    format!(r#"{{"{name}":1,"model":"{name}","usage":{{"prompt_tokens":1}}}}"#),
                    format!(
                        r#"{{"usage":{{"prompt_tokens":1}},"{name}":"{name}","model":"{name}"}}"#
                    ),
                ] {
                    skim(&doc);
                }
            }
        }
        // Unclosed.
        for n in 14..19 {
            let doc = format!(r#"{{"model":"{}"#, "m".repeat(n));
            assert_eq!(skim(&doc), None, "{doc}");
        }
    }

    /// Answers shaped as each provider documents them (OpenAI chat with a tool call, embeddings,
    /// Responses with plain and with listed instructions, Anthropic with a tool whose input has
    /// a `usage` key, Gemini, Ollama's chat and generate), compact and indented: the skim reads
    /// what a whole parse reads; cut short anywhere, they have no usage.
    #[test]
    fn provider_answers_read_as_a_whole_parse_reads_them() {
        let openai = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1732500000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"usage\":{\"prompt_tokens\":1},\"model\":\"x\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#;
        let embeddings = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,-1e-5]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let responses = r#"{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":INSTRUCTIONS,"max_output_tokens":null,"max_tool_calls":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi \"usage\""}]}],"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},"safety_identifier":null,"service_tier":"default","store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"usage":{"type":"object"}}}}],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":32},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{"usage":"tag","model":"m"}}"#;
        let anthropic = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_01","name":"record","input":{"usage":{"input_tokens":999},"model":"y"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":45,"service_tier":"standard"}}"#;
        let gemini = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"totalTokenCount":27,"cachedContentTokenCount":4,"promptTokensDetails":[{"modality":"TEXT","tokenCount":10}],"thoughtsTokenCount":12},"modelVersion":"gemini-2.5-flash","responseId":"abc"}"#;
        let ollama_chat = r#"{"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant","content":"Hello! {\"eval_count\":1}"},"done_reason":"stop","done":true,"total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}"#;
        let ollama_generate = r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"The sky is blue.","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,"eval_duration":4232710000}"#;
        let listed = r#"[{"type":"message","role":"developer","content":[{"type":"input_text","text":"Be brief."}]}]"#;
        let cases = [
            (openai.to_string(), (18, 17, "gpt-4o-2024-08-06")),
            (embeddings.to_string(), (8, 0, "text-embedding-3-small")),
            (
                responses.replace("INSTRUCTIONS", r#""Be brief.""#),
                (4, 87, "gpt-4.1-2025-04-14"),
            ),
            (
                responses.replace("INSTRUCTIONS", listed),
                (4, 87, "gpt-4.1-2025-04-14"),
            ),
            (
                anthropic.to_string(),
                (12, 45, "claude-sonnet-4-5-20250929"),
            ),
            (gemini.to_string(), (6, 17, "gemini-2.5-flash")),
            (ollama_chat.to_string(), (26, 298, "llama3.2")),
            (ollama_generate.to_string(), (26, 259, "llama3.2")),
        ];
        for (doc, (input, output, model)) in cases {
            let value: serde_json::Value = serde_json::from_str(&doc).expect("valid JSON");
            let indented = serde_json::to_string_pretty(&value).expect("serialises");
            for doc in [&doc, &indented] {
                let want = Some((input, output, Some(model.to_string())));
                assert_eq!(skim(doc), want, "{doc}");
            }
            // A body cut short has no usage.
            for end in 0..doc.len() {
                let cut = &doc.as_bytes()[..end];
                assert!(usage_doc(cut).is_none(), "{}", String::from_utf8_lossy(cut));
            }
        }
    }

    /// Documents made of random top-level fields (each at most once, in any order, with any
    /// whitespace), decoys among them: the skim reads what the whole parse reads.
    #[test]
    fn random_documents_read_as_a_whole_parse_reads_them() {
        let fields = [
            r#""model":"gpt-4o""#,
            r#""modelVersion":"gemini-2.5-flash""#,
            r#""usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2}}"#,
            r#""usage":{"input_tokens":7,"cache_read_input_tokens":100,"output_tokens":3}"#,
            r#""usage":null"#,
            r#""usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":2}"#,
            r#""prompt_eval_count":9"#,
            r#""eval_count":4"#,
            r#""choices":[{"index":0,"message":{"role":"assistant","content":"a \"usage\":{\"prompt_tokens\":99} \\ [{"},"finish_reason":"stop"}]"#,
            r#""message":{"role":"assistant","content":"]}\"model\":\"x\"","usage":{"input_tokens":1}}"#,
            r#""response":{"model":"gpt-4.1","usage":{"input_tokens":21,"output_tokens":6}}"#,
            r#""x":{"usage":{"prompt_tokens":50},"model":"nested","a":[[{}],[],{"b":[1,2.5e3,-1,true,null]}]}"#,
            r#""created":1732500000"#,
            r#""note":"usage","usage_hint":{"prompt_tokens":1}"#,
            r#""esc\u0061ped":"\ud83d\ude00 \n \/""#,
        ];
        let spaces = ["", " ", "\n", "\t ", "\r\n  "];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        for _ in 0..2000 {
            let mut order: Vec<usize> = (0..fields.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, next(i + 1));
            }
            // Only one `usage` of the three.
            let mut usage_seen = false;
            let mut chosen = Vec::new();
            for &f in order.iter().take(next(fields.len()) + 1) {
                if fields[f].starts_with(r#""usage":"#) {
                    if usage_seen {
                        continue;
                    }
                    usage_seen = true;
                }
                chosen.push(fields[f]);
            }
            let mut doc = String::from(spaces[next(spaces.len())]);
            doc.push('{');
            for (i, f) in chosen.iter().enumerate() {
                if i > 0 {
                    doc.push(',');
                }
                doc.push_str(spaces[next(spaces.len())]);
                doc.push_str(f);
                doc.push_str(spaces[next(spaces.len())]);
            }
            doc.push('}');
            doc.push_str(spaces[next(spaces.len())]);
            let valid = serde_json::from_str::<serde_json::Value>(&doc).is_ok();
            assert!(valid, "the generator made invalid JSON: {doc}");
            let (skimmed, parsed) = both(&doc);
            assert_eq!(skimmed, parsed, "{doc}");
        }
    }

    #[test]
    fn missing_or_unreadable_usage() {
        assert_eq!(skim(r#"{"choices":[],"object":"chat.completion"}"#), None);
        assert_eq!(skim(r#"{}"#), None);
        assert_eq!(skim(r#"{"error":{"message":"no"}}"#), None);
        // fields of other types read as absent, as in a whole parse
        assert_eq!(skim(r#"{"usage":[1,2],"model":7,"eval_count":"3"}"#), None);
        assert_eq!(
            skim(r#"{"usage":{"prompt_tokens":-1,"completion_tokens":3}}"#),
            Some((0, 3, None))
        );
        // not one object
        for json in [
            "",
            "[]",
            "3",
            "\"usage\"",
            "{\"usage\":{\"prompt_tokens\":1}} x",
            "{\"usage\":{\"prompt_tokens\":1}}}",
        ] {
            assert!(usage_doc(json.as_bytes()).is_none(), "{json:?}");
        }
    }

    #[test]
    fn a_broken_document_has_no_usage() {
        let whole = r#"{"model":"m","choices":[{"message":{"content":"a \"quoted\" text"}}],"usage":{"prompt_tokens":3}}"#;
        assert!(usage_doc(whole.as_bytes()).is_some());
        // every truncation of it
        for end in 0..whole.len() {
            assert!(
                usage_doc(&whole.as_bytes()[..end]).is_none(),
                "{}",
                &whole[..end]
            );
        }
        for json in [
            // brackets that do not match
            r#"{"choices":[{"a":1]],"usage":{"prompt_tokens":3}}"#,
            r#"{"choices":[1},"usage":{"prompt_tokens":3}}"#,
            // a usage that does not parse
            r#"{"usage":{"prompt_tokens":3,}}"#,
            // a key without its colon, a missing comma
            r#"{"choices" [],"usage":{"prompt_tokens":3}}"#,
            r#"{"choices":[] "usage":{"prompt_tokens":3}}"#,
            // a usage field twice (a whole parse refuses it too)
            r#"{"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":4}}"#,
            r#"{"model":"a","choices":[],"model":"b"}"#,
        ] {
            assert!(usage_doc(json.as_bytes()).is_none(), "{json}");
            let (skimmed, parsed) = both(json);
            assert!(skimmed.is_none() && parsed.is_none(), "{json}");
        }
        // nesting past 128 levels is refused, as serde_json refuses it
        let deep = format!(
            "{{\"x\":{}{},\"usage\":{{}}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(usage_doc(deep.as_bytes()).is_none());
    }
}
