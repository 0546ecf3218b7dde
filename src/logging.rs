//! Log output: levels from `RUST_LOG` (env_logger), lines as text or JSON (`log.format`), and
//! the structured access log line.
//!
//! Pingora and promptgate both log through the `log` crate, so env_logger with our own format
//! function covers every line without a second logging stack (tracing would need a bridge for
//! Pingora's records). Structured fields travel as `log` key-values: text lines print them as
//! `key=value`, JSON lines as fields.
//!
//! Pingora's own modules stay at `info` unless `RUST_LOG` names them. Why: at debug level
//! Pingora logs the raw head of every request it cannot parse — request line with query string,
//! `Authorization`, `x-api-key` and all — and a client can trigger that at will. `RUST_LOG=debug`
//! is how operators look at promptgate, so it must stay free of keys; whoever needs Pingora's
//! debug output asks for it by name (`RUST_LOG=debug,pingora_proxy=debug`).

use crate::config::schema::LogFormat;
use log::kv::{self, VisitSource, VisitValue};
use log::LevelFilter;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The access log's target, to filter on (`RUST_LOG=promptgate::access=off` silences it).
pub const ACCESS_TARGET: &str = "promptgate::access";

/// Pingora crates whose debug/trace output can carry request heads.
const PINGORA_MODULES: &[&str] = &["pingora_proxy", "pingora_core", "pingora_http"];

/// Set from the config at start-up and on reload, read per line.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger: `RUST_LOG` levels (default `info`), text format until the config says
/// otherwise.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    for module in PINGORA_MODULES {
        if !names_module(&spec, module) {
            builder.filter_module(module, LevelFilter::Info.min(max_level(&spec)));
        }
    }
    builder
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            if JSON.load(Ordering::Relaxed) {
                let mut line = serde_json::Map::new();
                line.insert("ts".into(), ts.to_string().into());
                line.insert("level".into(), record.level().as_str().into());
                line.insert("target".into(), record.target().into());
                line.insert("msg".into(), record.args().to_string().into());
                let _ = record.key_values().visit(&mut JsonFields(&mut line));
                writeln!(buf, "{}", serde_json::Value::Object(line))
            } else {
                let mut fields = String::new();
                let _ = record.key_values().visit(&mut TextFields(&mut fields));
                writeln!(
                    buf,
                    "[{ts} {:<5} {}] {}{fields}",
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}

/// Switches every following line to `format`.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// One request, as the access log records it. `path` never includes the query string: some
/// providers take the API key there.
pub struct Access<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// `x-promptgate-cache` (HIT, MISS, BYPASS), absent on routes without cache.
    pub cache: Option<&'a str>,
    pub coalesced: bool,
    pub duration_ms: f64,
    /// Every prompt token, prompt-cache reads and writes included.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Of `input_tokens`, those read from and written to the provider's prompt cache.
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub retries: u32,
    pub failovers: u32,
    pub error: Option<&'a str>,
}

/// Writes the access log line of one request.
pub fn access(a: &Access) {
    log::info!(
        target: ACCESS_TARGET,
        status = a.status,
        route = a.route,
        upstream = a.upstream,
        cache = a.cache,
        coalesced = a.coalesced,
        duration_ms = (a.duration_ms * 100.0).round() / 100.0,
        input_tokens = a.input_tokens,
        output_tokens = a.output_tokens,
        cache_read_tokens = a.cache_read_tokens,
        cache_write_tokens = a.cache_write_tokens,
        retries = a.retries,
        failovers = a.failovers,
        error = a.error;
        "{} {}", a.method, a.path
    );
}

/// ` key=value` per field; absent values as `-`.
struct TextFields<'s>(&'s mut String);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut json = serde_json::Value::Null;
        value.visit(JsonValue(&mut json))?;
        let shown = match json {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        self.0.push_str(&format!(" {key}={shown}"));
        Ok(())
    }
}

struct JsonFields<'m>(&'m mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut json = serde_json::Value::Null;
        value.visit(JsonValue(&mut json))?;
        self.0.insert(key.to_string(), json);
        Ok(())
    }
}

/// A `log` value as JSON: numbers, booleans and null as themselves, anything else as its text.
struct JsonValue<'v>(&'v mut serde_json::Value);

impl<'v> VisitValue<'v> for JsonValue<'_> {
    fn visit_any(&mut self, value: kv::Value) -> Result<(), kv::Error> {
        *self.0 = value.to_string().into();
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), kv::Error> {
        *self.0 = serde_json::Value::Null;
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        *self.0 = value.into();
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        *self.0 = value.into();
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        *self.0 = serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into);
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        *self.0 = value.into();
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        *self.0 = value.into();
        Ok(())
    }
}

/// True when a `RUST_LOG` spec has a directive for `module` (or a module inside it).
fn names_module(spec: &str, module: &str) -> bool {
    spec.split(',').any(|directive| {
        let name = directive.split('=').next().unwrap_or_default().trim();
        name == module || name.starts_with(&format!("{module}::"))
    })
}

/// The most verbose level a spec asks for anywhere, so capping Pingora never makes it *more*
/// verbose than the spec (`RUST_LOG=warn` keeps Pingora at warn).
fn max_level(spec: &str) -> LevelFilter {
    if spec.trim().is_empty() {
        return LevelFilter::Info;
    }
    spec.split(',')
        .map(|d| d.rsplit('=').next().unwrap_or_default().trim())
        .map(|level| level.parse::<LevelFilter>().unwrap_or(LevelFilter::Trace))
        .max()
        .unwrap_or(LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_render_as_text_and_json() {
        let kvs: &[(&str, kv::Value)] = &[
            ("status", kv::Value::from(200u16)),
            ("route", kv::Value::null()),
            ("cache", kv::Value::from("HIT")),
            ("ms", kv::Value::from(1.5f64)),
            ("coalesced", kv::Value::from(false)),
        ];
        let mut text = String::new();
        kv::Source::visit(&kvs, &mut TextFields(&mut text)).unwrap();
        assert_eq!(text, " status=200 route=- cache=HIT ms=1.5 coalesced=false");
        let mut map = serde_json::Map::new();
        kv::Source::visit(&kvs, &mut JsonFields(&mut map)).unwrap();
        assert_eq!(
            serde_json::Value::Object(map).to_string(),
            r#"{"status":200,"route":null,"cache":"HIT","ms":1.5,"coalesced":false}"#
        );
    }

    #[test]
    fn pingora_is_capped_unless_named() {
        assert!(!names_module("debug", "pingora_proxy"));
        assert!(!names_module("promptgate=debug", "pingora_proxy"));
        assert!(names_module("debug,pingora_proxy=trace", "pingora_proxy"));
        assert!(names_module(
            "pingora_core::protocols=debug",
            "pingora_core"
        ));
        assert!(!names_module("pingora_core_x=debug", "pingora_core"));
    }

    #[test]
    fn the_cap_is_never_more_verbose_than_asked() {
        assert_eq!(max_level("warn"), LevelFilter::Warn);
        assert_eq!(max_level(""), LevelFilter::Info);
        assert_eq!(max_level("debug"), LevelFilter::Debug);
        assert_eq!(
            LevelFilter::Info.min(max_level("promptgate=trace")),
            LevelFilter::Info
        );
    }
}
