//! Log output: levels from `RUST_LOG` (env_logger), lines as text or JSON (`log.format`), and
//! the structured access log line.
//!
//! Pingora and promptgate both log through the `log` crate, so env_logger with our own format
//! function covers every line without a second logging stack (tracing would need a bridge for
//! Pingora's records). Structured fields travel as `log` key-values: text lines print them as
//! `key=value`, JSON lines as fields.
//!
//! Levels: `RUST_LOG`'s directives are laid over the default `info,pingora=warn`, so a quiet
//! start is the default and whatever `RUST_LOG` names wins for what it names: `RUST_LOG=debug`
//! raises promptgate to debug and leaves Pingora at `warn`; `RUST_LOG=pingora=info` adds
//! Pingora's own lines (service start-up, shutdown phases) to promptgate's. Pingora is quiet by
//! default because its `info` lines are internal: a dozen at start-up, ending in "service …
//! exited", read like a failure.
//!
//! Pingora's request-handling crates never go above `info` unless `RUST_LOG` names them. Why: at
//! debug level Pingora logs the raw head of every request it cannot parse — request line with
//! query string, `Authorization`, `x-api-key` and all — and a client can trigger that at will.
//! `RUST_LOG=debug,pingora=debug` is how operators look at everything, so it must stay free of
//! keys; whoever needs those crates' debug output asks for each by name
//! (`RUST_LOG=debug,pingora_proxy=debug`).

use crate::config::schema::LogFormat;
use log::kv::{self, VisitSource, VisitValue};
use log::LevelFilter;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The access log's target, to filter on (`RUST_LOG=promptgate::access=off` silences it).
pub const ACCESS_TARGET: &str = "promptgate::access";

/// Pingora crates whose debug/trace output can carry request heads.
const PINGORA_MODULES: &[&str] = &["pingora_proxy", "pingora_core", "pingora_http"];

/// What `RUST_LOG` is laid over. `pingora` covers every `pingora_*` crate (a directive applies
/// to each target it is a prefix of).
const DEFAULT_FILTER: &[(Option<&str>, LevelFilter)] = &[
    (None, LevelFilter::Info),
    (Some("pingora"), LevelFilter::Warn),
];

/// Set from the config at start-up and on reload, read per line.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger: levels from [`DEFAULT_FILTER`] with `RUST_LOG` laid over it, text
/// format until the config says otherwise.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = Filter::new(&spec);
    let mut builder = env_logger::Builder::new();
    for (module, level) in &filter.directives {
        builder.filter(module.as_deref(), *level);
    }
    if let Some(regex) = &filter.regex {
        builder.parse_filters(&format!("/{regex}"));
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
    for ignored in &filter.ignored {
        log::warn!(
            "RUST_LOG: ignoring {ignored:?}: not a level (error, warn, info, debug, trace, off)"
        );
    }
}

/// The level directives in force: the defaults, `RUST_LOG`'s over them, and the cap on
/// Pingora's request-handling crates.
#[derive(Debug, PartialEq)]
struct Filter {
    /// `(module, level)`; `None` is every target. The longest module that is a prefix of a
    /// target decides its level (env_logger's rule).
    directives: Vec<(Option<String>, LevelFilter)>,
    /// `RUST_LOG`'s `/regex` suffix, which keeps only lines whose message matches.
    regex: Option<String>,
    /// Directives whose level is not one.
    ignored: Vec<String>,
}

impl Filter {
    fn new(spec: &str) -> Filter {
        let (mods, regex) = match spec.split_once('/') {
            Some((mods, regex)) => (mods, Some(regex.to_string())),
            None => (spec, None),
        };
        let mut filter = Filter {
            directives: DEFAULT_FILTER
                .iter()
                .map(|(m, l)| (m.map(str::to_string), *l))
                .collect(),
            regex,
            ignored: Vec::new(),
        };
        let mut named = Vec::new();
        for directive in mods.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let parsed = match directive.split_once('=') {
                Some((module, level)) => level
                    .trim()
                    .parse()
                    .ok()
                    .map(|l| (Some(module.trim().to_string()), l)),
                // A bare word is a level for everything, or a module to log at every level.
                None => Some(match directive.parse() {
                    Ok(level) => (None, level),
                    Err(_) => (Some(directive.to_string()), LevelFilter::Trace),
                }),
            };
            match parsed {
                Some((module, level)) => {
                    named.extend(module.clone());
                    filter.set(module, level);
                }
                None => filter.ignored.push(directive.to_string()),
            }
        }
        // A level for everything below Pingora's default applies to Pingora too: `RUST_LOG=error`
        // means errors only.
        if !named.iter().any(|n| n == "pingora") {
            let everything = filter.level_of("");
            filter.set(Some("pingora".into()), LevelFilter::Warn.min(everything));
        }
        for module in PINGORA_MODULES {
            if !named.iter().any(|n| covers_exactly(n, module)) {
                let level = filter.level_of(module).min(LevelFilter::Info);
                filter.set(Some(module.to_string()), level);
            }
        }
        filter
    }

    /// Sets `module`'s level, replacing a directive for the same module.
    fn set(&mut self, module: Option<String>, level: LevelFilter) {
        match self.directives.iter_mut().find(|(m, _)| *m == module) {
            Some(d) => d.1 = level,
            None => self.directives.push((module, level)),
        }
    }

    /// The level a line from `target` is logged at (or above).
    fn level_of(&self, target: &str) -> LevelFilter {
        self.directives
            .iter()
            .filter(|(m, _)| m.as_deref().is_none_or(|m| target.starts_with(m)))
            .max_by_key(|(m, _)| m.as_deref().map_or(0, str::len))
            .map_or(LevelFilter::Off, |(_, l)| *l)
    }
}

/// True when a directive for `name` is about `module` itself or a module inside it (not merely
/// a prefix of its name, like `pingora` of `pingora_proxy`).
fn covers_exactly(name: &str, module: &str) -> bool {
    name == module || name.starts_with(&format!("{module}::"))
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

    fn level(spec: &str, target: &str) -> LevelFilter {
        Filter::new(spec).level_of(target)
    }

    #[test]
    fn the_default_is_info_with_pingora_at_warn() {
        assert_eq!(level("", "promptgate::server"), LevelFilter::Info);
        assert_eq!(level("", "promptgate::access"), LevelFilter::Info);
        assert_eq!(level("", "pingora_core::server"), LevelFilter::Warn);
        assert_eq!(level("", "pingora_proxy"), LevelFilter::Warn);
        assert_eq!(level("", "pingora_pool::connection"), LevelFilter::Warn);
    }

    #[test]
    fn rust_log_is_laid_over_the_default() {
        // Pingora's own lines on top of promptgate's, not instead of them.
        assert_eq!(
            level("pingora=info", "pingora_core::server"),
            LevelFilter::Info
        );
        assert_eq!(
            level("pingora=info", "promptgate::server"),
            LevelFilter::Info
        );
        // A level for everything leaves Pingora quiet...
        assert_eq!(level("debug", "promptgate::proxy"), LevelFilter::Debug);
        assert_eq!(level("debug", "pingora_core::server"), LevelFilter::Warn);
        // ...and a module's level leaves the rest at the default.
        assert_eq!(
            level("promptgate=debug", "promptgate::proxy"),
            LevelFilter::Debug
        );
        assert_eq!(level("promptgate=debug", "pingora_core"), LevelFilter::Warn);
        assert_eq!(
            level("promptgate::access=off", "promptgate::access"),
            LevelFilter::Off
        );
        assert_eq!(
            level("promptgate::access=off", "promptgate::cli"),
            LevelFilter::Info
        );
        // Quieter than the default applies to everything named.
        assert_eq!(
            level("error,pingora=error", "pingora_core"),
            LevelFilter::Error
        );
        assert_eq!(level("off", "promptgate::server"), LevelFilter::Off);
        assert_eq!(level("off", "pingora_core"), LevelFilter::Off);
        assert_eq!(level("error", "pingora_core::server"), LevelFilter::Error);
        assert_eq!(
            level("info,pingora_core=info", "pingora_core::server"),
            LevelFilter::Info
        );
        assert_eq!(
            level("info,pingora_core=info", "pingora_pool"),
            LevelFilter::Warn
        );
    }

    #[test]
    fn pingora_request_crates_stay_at_info_unless_named() {
        assert_eq!(
            level("debug,pingora=debug", "pingora_proxy"),
            LevelFilter::Info
        );
        assert_eq!(
            level("debug,pingora=debug", "pingora_core::protocols"),
            LevelFilter::Info
        );
        assert_eq!(
            level("debug,pingora=debug", "pingora_pool"),
            LevelFilter::Debug
        );
        assert_eq!(level("trace", "pingora_http"), LevelFilter::Warn);
        assert_eq!(
            level("pingora_proxy=debug", "pingora_proxy"),
            LevelFilter::Debug
        );
        assert_eq!(
            level(
                "pingora_core::protocols=trace",
                "pingora_core::protocols::http"
            ),
            LevelFilter::Trace
        );
        // Named by a longer prefix only: still capped.
        assert_eq!(
            level("pingora_core_x=debug", "pingora_core"),
            LevelFilter::Warn
        );
    }

    #[test]
    fn bad_directives_are_reported_and_regexes_kept() {
        let f = Filter::new("debug,promptgate=loud, ,info/HIT");
        assert_eq!(f.ignored, vec!["promptgate=loud".to_string()]);
        assert_eq!(f.regex.as_deref(), Some("HIT"));
        assert_eq!(f.level_of("promptgate::x"), LevelFilter::Info);
        // A bare module name logs it at every level (env_logger's rule).
        assert_eq!(level("promptgate", "promptgate::x"), LevelFilter::Trace);
    }
}
