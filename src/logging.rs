//! Log output: levels from `RUST_LOG`, lines as text or JSON (`log.format`), written by one
//! writer thread off the request path; and the structured access log line.
//!
//! Pingora and promptgate both log through the `log` crate, so one `log::Log` of our own covers
//! every line without a second logging stack (tracing would need a bridge for Pingora's
//! records). env_logger parses `RUST_LOG` and filters; the line is formatted here, straight
//! into a per-thread buffer (no JSON tree, no string per field), and handed to a bounded queue
//! (tracing-appender's non-blocking writer, lossy): a request never waits for the disk. When
//! the queue is full the line is dropped and counted ([`dropped_lines`], the metric
//! `promptgate_access_log_dropped_total`). The writer thread writes what has queued up in one
//! `write(2)` per batch, then pauses [`BATCH_PAUSE`] so that under load lines arrive as
//! batches rather than one wake-up each; at exit (`main` returning, or `std::process::exit`)
//! the queue is written out first.
//!
//! Structured fields travel as `log` key-values: text lines print them as `key=value`, JSON
//! lines as fields.
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
//! (`RUST_LOG=debug,pingora_core=debug`).

use crate::config::schema::LogFormat;
use log::kv::{self, VisitSource, VisitValue};
use log::{LevelFilter, Log, Metadata, Record};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

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

/// Lines waiting for the writer thread, at most; a line past this is dropped and counted.
/// 16,384 access lines are about 4 MiB, or a third of a second at 50,000 requests/s with the
/// disk stalled.
pub const QUEUE_LINES: usize = 16_384;

/// How long the writer thread waits after writing a batch before taking the next (ms-scale:
/// a line appears at most this much later; under load each batch holds many lines).
pub const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// One batch's buffer when stderr is a regular file: one `write(2)` per 64 KiB at most.
const FILE_BATCH_BYTES: usize = 64 * 1024;

/// One batch's buffer when stderr is a pipe or socket (journald, a container runtime): a write
/// of at most `PIPE_BUF` bytes is atomic, so whole lines never interleave with another
/// process's (the old and new process during an upgrade share stderr).
const PIPE_BATCH_BYTES: usize = 4096;

/// A line buffer that grew past this (a huge message) is given back after use.
const KEEP_LINE_BYTES: usize = 16 * 1024;

/// Set from the config at start-up and on reload, read per line.
static JSON: AtomicBool = AtomicBool::new(false);

/// The process's log queue, once [`init`] ran.
static QUEUE: OnceLock<(NonBlocking, ErrorCounter)> = OnceLock::new();

/// Our logger, once installed (the access log formats its line itself then).
static LINES: OnceLock<&'static Lines> = OnceLock::new();

/// Dropping it writes out what is queued; taken by [`flush`].
static WORKER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the logger: levels from [`DEFAULT_FILTER`] with `RUST_LOG` laid over it, text
/// format until the config says otherwise, lines written to stderr by the writer thread. Call
/// [`flush`] before exiting.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let levels = Filter::new(&spec);
    let mut builder = env_logger::Builder::new();
    for (module, level) in &levels.directives {
        builder.filter(module.as_deref(), *level);
    }
    if let Some(regex) = &levels.regex {
        builder.parse_filters(&format!("/{regex}"));
    }
    let filter = builder.build();
    let batch = if stderr_is_file() {
        FILE_BATCH_BYTES
    } else {
        PIPE_BATCH_BYTES
    };
    let (queue, worker) = queue(io::stderr(), QUEUE_LINES, batch, BATCH_PAUSE);
    let counter = queue.error_counter();
    if QUEUE.set((queue.clone(), counter)).is_err() {
        return; // installed already
    }
    *WORKER.lock().unwrap_or_else(PoisonError::into_inner) = Some(worker);
    // `std::process::exit` (Pingora calls it when an upgrade or start-up fails, right after
    // logging why) runs atexit handlers: the reason must not stay in the queue.
    // SAFETY: registers a plain `extern "C" fn` with no arguments, as atexit requires; it
    // only takes a mutex and joins our writer thread, which is safe during exit.
    unsafe {
        libc::atexit(flush_at_exit);
    }
    let max = filter.filter();
    let access_line = log::Metadata::builder()
        .level(log::Level::Info)
        .target(ACCESS_TARGET)
        .build();
    let lines: &'static Lines = Box::leak(Box::new(Lines {
        access: filter.enabled(&access_line),
        regex: levels.regex.is_some(),
        filter,
        queue,
    }));
    if log::set_logger(lines).is_ok() {
        log::set_max_level(max);
        let _ = LINES.set(lines);
    }
    for ignored in &levels.ignored {
        log::warn!(
            "RUST_LOG: ignoring {ignored:?}: not a level (error, warn, info, debug, trace, off)"
        );
    }
}

/// Writes out every queued line and stops the writer thread; lines logged later are dropped
/// (and counted). Idempotent. `main` calls it before printing its own error and exiting.
pub fn flush() {
    let worker = WORKER.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(worker);
}

extern "C" fn flush_at_exit() {
    flush();
}

/// Lines dropped since start because the queue was full (or the writer had stopped).
pub fn dropped_lines() -> u64 {
    QUEUE
        .get()
        .map_or(0, |(_, counter)| counter.dropped_lines() as u64)
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

/// True when stderr is a regular file (not a pipe, socket or terminal).
fn stderr_is_file() -> bool {
    use std::os::fd::AsFd;
    io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.file_type().is_file())
}

/// A lossy queue of `lines` lines in front of a writer thread that writes to `out` in batches
/// of up to `batch` bytes, pausing `pause` after each.
fn queue<W: Write + Send + 'static>(
    out: W,
    lines: usize,
    batch: usize,
    pause: Duration,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name("promptgate-log")
        .finish(Batches {
            out: BufWriter::with_capacity(batch, out),
            pause,
        })
}

/// The writer thread's end. tracing-appender's worker writes every queued line here, then
/// flushes once the queue is empty: the lines go out in one `write(2)`, and the pause keeps
/// the thread away while the next batch queues up (senders then never have to wake it).
struct Batches<W: Write> {
    out: BufWriter<W>,
    pause: Duration,
}

impl<W: Write> Write for Batches<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        let written = self.out.flush();
        std::thread::sleep(self.pause);
        written
    }
}

/// The installed logger: env_logger's filter, our format, the queue.
struct Lines {
    filter: env_logger::Logger,
    queue: NonBlocking,
    /// Whether the filter lets access lines through, asked once: it is fixed for the process,
    /// and asking per request (target against every directive, twice) was a tenth of the
    /// access line's cost.
    access: bool,
    /// `RUST_LOG` has a regex: each access line's message must still match it.
    regex: bool,
}

/// Per thread: the line being formatted (reused), this thread's handle on the queue, and the
/// current second's timestamp prefix.
struct Local {
    line: Vec<u8>,
    queue: Option<NonBlocking>,
    clock: Clock,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { line: Vec::new(), queue: None, clock: Clock::new() })
    };
}

impl Log for Lines {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if self.filter.matches(record) {
            self.send(|line, clock, now, json| write_line(line, clock, now, record, json));
        }
    }

    fn flush(&self) {}
}

impl Lines {
    /// Formats a line with `write` into this thread's buffer and queues it.
    fn send(&self, write: impl Fn(&mut Vec<u8>, &mut Clock, SystemTime, bool)) {
        let json = JSON.load(Ordering::Relaxed);
        let now = SystemTime::now();
        let sent = LOCAL.try_with(|local| {
            // Busy when a value being formatted logs itself: that line gets its own buffer.
            let Ok(mut local) = local.try_borrow_mut() else {
                return false;
            };
            let Local { line, queue, clock } = &mut *local;
            line.clear();
            write(line, clock, now, json);
            let _ = queue
                .get_or_insert_with(|| self.queue.clone())
                .write_all(line);
            if line.capacity() > KEEP_LINE_BYTES {
                *line = Vec::new();
            }
            true
        });
        if sent != Ok(true) {
            let mut line = Vec::new();
            write(&mut line, &mut Clock::new(), now, json);
            let _ = self.queue.clone().write_all(&line);
        }
    }
}

/// One whole line, newline included, in the format `json` says:
/// `[{ts} {level:<5} {target}] {msg} k=v…` or `{"ts":…,"level":…,"target":…,"msg":…,"k":v,…}`.
fn write_line(line: &mut Vec<u8>, clock: &mut Clock, now: SystemTime, record: &Record, json: bool) {
    write_head(line, clock, now, record.level(), record.target(), json);
    if json {
        json_display(line, record.args());
    } else {
        match record.args().as_str() {
            Some(msg) => line.extend_from_slice(msg.as_bytes()),
            None => {
                let _ = fmt::Write::write_fmt(&mut Text(line), *record.args());
            }
        }
    }
    let _ = record.key_values().visit(&mut Fields { line, json });
    write_end(line, json);
}

/// A line up to its message: `[{ts} {level:<5} {target}] ` or `{"ts":…,"level":…,"target":…,"msg":`.
fn write_head(
    line: &mut Vec<u8>,
    clock: &mut Clock,
    now: SystemTime,
    level: log::Level,
    target: &str,
    json: bool,
) {
    if json {
        line.extend_from_slice(b"{\"ts\":\"");
        clock.write(line, now);
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(level.as_str().as_bytes());
        line.extend_from_slice(b"\",\"target\":");
        json_str(line, target);
        line.extend_from_slice(b",\"msg\":");
    } else {
        line.push(b'[');
        clock.write(line, now);
        line.push(b' ');
        let level = level.as_str();
        line.extend_from_slice(level.as_bytes());
        line.extend(std::iter::repeat_n(
            b' ',
            5usize.saturating_sub(level.len()),
        ));
        line.push(b' ');
        line.extend_from_slice(target.as_bytes());
        line.extend_from_slice(b"] ");
    }
}

/// The end of a line after its fields.
fn write_end(line: &mut Vec<u8>, json: bool) {
    line.extend_from_slice(if json { b"}\n" } else { b"\n" });
}

/// The access log line of `a`, written straight from its fields (no `log` key-values): the
/// same bytes as the generic path would write for [`access`]'s record.
fn write_access(line: &mut Vec<u8>, clock: &mut Clock, now: SystemTime, a: &Access, json: bool) {
    if json {
        write_access_as::<true>(line, clock, now, a);
    } else {
        write_access_as::<false>(line, clock, now, a);
    }
}

/// [`write_access`] in one format: its keys and separators are then constants, copied without
/// a call each.
fn write_access_as<const JSON: bool>(
    line: &mut Vec<u8>,
    clock: &mut Clock,
    now: SystemTime,
    a: &Access,
) {
    write_head(line, clock, now, log::Level::Info, ACCESS_TARGET, JSON);
    if JSON {
        line.push(b'"');
        escape(line, a.method);
        line.push(b' ');
        escape(line, a.path);
        line.push(b'"');
    } else {
        line.extend_from_slice(a.method.as_bytes());
        line.push(b' ');
        line.extend_from_slice(a.path.as_bytes());
    }
    let mut f = Fields { line, json: JSON };
    // Each key with its separators as one piece, spelt out at compile time (what `key` writes
    // in three, escaping JSON keys as it goes).
    macro_rules! key {
        ($name:literal) => {
            f.line.extend_from_slice(if JSON {
                concat!(",\"", $name, "\":").as_bytes()
            } else {
                concat!(" ", $name, "=").as_bytes()
            })
        };
    }
    key!("status");
    f.int(u64::from(a.status));
    key!("route");
    f.text(a.route);
    key!("upstream");
    f.text(a.upstream);
    key!("cache");
    f.text(a.cache);
    key!("coalesced");
    let _ = f.visit_bool(a.coalesced);
    key!("duration_ms");
    f.millis(a.duration_ms);
    key!("input_tokens");
    f.opt_int(a.input_tokens);
    key!("output_tokens");
    f.opt_int(a.output_tokens);
    key!("cache_read_tokens");
    f.opt_int(a.cache_read_tokens);
    key!("cache_write_tokens");
    f.opt_int(a.cache_write_tokens);
    key!("retries");
    f.int(u64::from(a.retries));
    key!("failovers");
    f.int(u64::from(a.failovers));
    key!("error");
    f.text(a.error);
    write_end(line, JSON);
}

/// Text appended to a line. (`io::Write` for `Vec` would panic on a `Display` that fails; a
/// failing value here just ends early.)
struct Text<'l>(&'l mut Vec<u8>);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    escape(line, s);
    line.push(b'"');
}

/// `value`'s text as a JSON string, escaped on the way (no intermediate `String`).
fn json_display(line: &mut Vec<u8>, value: &dyn fmt::Display) {
    line.push(b'"');
    let _ = fmt::Write::write_fmt(&mut Escaped(line), format_args!("{value}"));
    line.push(b'"');
}

/// Text appended to a line, escaped for a JSON string.
struct Escaped<'l>(&'l mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// The inside of a JSON string, as serde_json writes it: `"` and `\` escaped, the short
/// escapes `\b \f \n \r \t`, other control characters as `\u00xx`; everything else as is.
fn escape(line: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..=0x1f => b'u',
            _ => continue,
        };
        line.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if short == b'u' {
            line.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            line.extend_from_slice(&[b'\\', short]);
        }
    }
    line.extend_from_slice(&bytes[plain..]);
}

/// Text: ` key=value` per field, absent values as `-`, strings as they are. JSON: `,"key":value`
/// per field: numbers, booleans and null as themselves, anything else as a string.
struct Fields<'l> {
    line: &'l mut Vec<u8>,
    json: bool,
}

impl Fields<'_> {
    /// ` key=` or `,"key":`.
    fn key(&mut self, key: &str) {
        if self.json {
            self.line.push(b',');
            json_str(self.line, key);
            self.line.push(b':');
        } else {
            self.line.push(b' ');
            self.line.extend_from_slice(key.as_bytes());
            self.line.push(b'=');
        }
    }

    fn int(&mut self, value: u64) {
        self.line
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn opt_int(&mut self, value: Option<u64>) {
        match value {
            Some(v) => self.int(v),
            None => {
                let _ = self.visit_null();
            }
        }
    }

    /// A duration in milliseconds to two decimals, as [`Self::visit_f64`] writes the rounded
    /// value (`0.41`, `3.0`, `12.5`: for a number of hundredths below 10^15, its shortest form
    /// is exactly its two decimals without a trailing zero), without formatting a float.
    fn millis(&mut self, ms: f64) {
        let hundredths = (ms * 100.0).round();
        if !(hundredths.is_sign_positive() && hundredths < 1e15) {
            let _ = self.visit_f64(hundredths / 100.0);
            return;
        }
        let hundredths = hundredths as u64;
        let (whole, tenths, last) = (hundredths / 100, hundredths / 10 % 10, hundredths % 10);
        self.int(whole);
        let digits = [b'.', b'0' + tenths as u8, b'0' + last as u8];
        self.line
            .extend_from_slice(&digits[..if last == 0 { 2 } else { 3 }]);
    }

    fn text(&mut self, value: Option<&str>) {
        let _ = match value {
            Some(v) => self.visit_str(v),
            None => self.visit_null(),
        };
    }
}

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        self.key(key.as_str());
        value.visit(self)
    }
}

impl<'v> VisitValue<'v> for Fields<'_> {
    fn visit_any(&mut self, value: kv::Value) -> Result<(), kv::Error> {
        if self.json {
            json_display(self.line, &value);
        } else {
            let _ = fmt::Write::write_fmt(&mut Text(self.line), format_args!("{value}"));
        }
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.line
            .extend_from_slice(if self.json { b"null" } else { b"-" });
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.int(value);
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.line
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        // As serde_json writes a finite float (its shortest form, `1e+21`), else null.
        if value.is_finite() {
            let _ = serde_json::to_writer(&mut *self.line, &value);
            Ok(())
        } else {
            self.visit_null()
        }
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.line
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        if self.json {
            json_str(self.line, value);
        } else {
            self.line.extend_from_slice(value.as_bytes());
        }
        Ok(())
    }
}

/// RFC 3339 UTC with milliseconds (`2025-06-01T10:00:00.123Z`, as env_logger printed it); the
/// date and time of day are formatted once per second.
struct Clock {
    second: u64,
    prefix: [u8; 19],
}

impl Clock {
    const fn new() -> Clock {
        Clock {
            second: u64::MAX,
            prefix: [0; 19],
        }
    }

    fn write(&mut self, line: &mut Vec<u8>, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if second != self.second {
            let at = UNIX_EPOCH + Duration::from_secs(second);
            // "YYYY-MM-DDTHH:MM:SSZ"; humantime stops at year 9999 (an error is the epoch).
            let mut text = String::with_capacity(32);
            let ok = fmt::Write::write_fmt(
                &mut text,
                format_args!("{}", humantime::format_rfc3339_seconds(at)),
            )
            .is_ok()
                && text.len() == 20;
            self.prefix.copy_from_slice(if ok {
                &text.as_bytes()[..19]
            } else {
                b"1970-01-01T00:00:00"
            });
            self.second = second;
        }
        let millis = since.subsec_millis();
        line.extend_from_slice(&self.prefix);
        line.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
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

impl Access<'_> {
    /// `duration_ms` as logged: to two decimals.
    fn rounded_ms(&self) -> f64 {
        (self.duration_ms * 100.0).round() / 100.0
    }
}

/// Writes the access log line of one request: formatted straight from its fields by our
/// logger; as a `log` record with key-values under any other.
pub fn access(a: &Access) {
    if let Some(lines) = LINES.get() {
        if !lines.access {
            return;
        }
        if lines.regex {
            // The regex sees the message as the generic path would give it.
            let args = format_args!("{} {}", a.method, a.path);
            let record = Record::builder()
                .level(log::Level::Info)
                .target(ACCESS_TARGET)
                .args(args)
                .build();
            if !lines.filter.matches(&record) {
                return;
            }
        }
        lines.send(|line, clock, now, json| write_access(line, clock, now, a, json));
        return;
    }
    if !log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
        return;
    }
    log::info!(
        target: ACCESS_TARGET,
        status = a.status,
        route = a.route,
        upstream = a.upstream,
        cache = a.cache,
        coalesced = a.coalesced,
        duration_ms = a.rounded_ms(),
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{mpsc, Arc};

    // The format as it was (env_logger's closure over a serde_json tree), the reference the
    // new lines must equal byte for byte.
    /// ` key=value` per field; absent values as `-`.
    struct TextFields<'s>(&'s mut String);

    impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
        fn visit_pair(
            &mut self,
            key: kv::Key<'kvs>,
            value: kv::Value<'kvs>,
        ) -> Result<(), kv::Error> {
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
        fn visit_pair(
            &mut self,
            key: kv::Key<'kvs>,
            value: kv::Value<'kvs>,
        ) -> Result<(), kv::Error> {
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
            *self.0 =
                serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into);
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

    /// A line as the old format closure wrote it (`ts` as env_logger's `timestamp_millis()`).
    fn reference(ts: &str, record: &Record, json: bool) -> String {
        if json {
            let mut line = serde_json::Map::new();
            line.insert("ts".into(), ts.into());
            line.insert("level".into(), record.level().as_str().into());
            line.insert("target".into(), record.target().into());
            line.insert("msg".into(), record.args().to_string().into());
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            format!("{}\n", serde_json::Value::Object(line))
        } else {
            let mut fields = String::new();
            let _ = record.key_values().visit(&mut TextFields(&mut fields));
            format!(
                "[{ts} {:<5} {}] {}{fields}\n",
                record.level(),
                record.target(),
                record.args()
            )
        }
    }

    fn line(now: SystemTime, record: &Record, json: bool) -> String {
        let mut line = Vec::new();
        write_line(&mut line, &mut Clock::new(), now, record, json);
        String::from_utf8(line).unwrap()
    }

    /// Calls `check` with a record of every value kind, in the access log's shape and others
    /// (an `Option` field is its value, or null when absent, as `log` passes it).
    fn records(check: &mut dyn FnMut(&Record)) {
        let access: &[(&str, kv::Value)] = &[
            ("status", kv::Value::from(200u16)),
            ("route", kv::Value::from("openai")),
            ("upstream", kv::Value::null()),
            ("cache", kv::Value::from("HIT")),
            ("coalesced", kv::Value::from(false)),
            ("duration_ms", kv::Value::from(0.41f64)),
            ("input_tokens", kv::Value::from(12u64)),
            ("output_tokens", kv::Value::null()),
            ("retries", kv::Value::from(0u32)),
            ("failovers", kv::Value::from(2u32)),
            ("error", kv::Value::from("client_closed")),
        ];
        let odd: &[(&str, kv::Value)] = &[
            (
                "quote\"key",
                kv::Value::from("a \"quoted\" \\ value\n\t\u{1}\u{7f} é ✓ /"),
            ),
            ("negative", kv::Value::from(-42i64)),
            ("big", kv::Value::from(u64::MAX)),
            ("huge", kv::Value::from(u128::MAX)),
            ("wide", kv::Value::from(i128::MIN)),
            ("letter", kv::Value::from('x')),
            ("whole", kv::Value::from(3.0f64)),
            ("tiny", kv::Value::from(1e-7f64)),
            ("large", kv::Value::from(1e21f64)),
            ("minus_zero", kv::Value::from(-0.0f64)),
            ("nan", kv::Value::from(f64::NAN)),
            ("inf", kv::Value::from(f64::NEG_INFINITY)),
            ("shown", kv::Value::from_display(&"display \"text\"")),
            ("empty", kv::Value::from("")),
        ];
        for (level, target, kvs) in [
            (log::Level::Info, ACCESS_TARGET, access),
            (log::Level::Warn, "promptgate::proxy", odd),
            (log::Level::Error, "weird \"target\"", &[][..]),
            (log::Level::Debug, "pingora_core::x", access),
        ] {
            let method = "POST";
            check(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .key_values(&kvs)
                    .args(format_args!("{method} /v1/chat \"x\"\n\u{2028}"))
                    .build(),
            );
            check(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .key_values(&kvs)
                    .args(format_args!("static message"))
                    .build(),
            );
        }
    }

    #[test]
    fn lines_are_byte_identical_to_the_old_format() {
        let now = UNIX_EPOCH + Duration::from_millis(1_748_772_000_123);
        let ts = humantime::format_rfc3339_millis(now).to_string();
        assert_eq!(ts, "2025-06-01T10:00:00.123Z");
        let mut seen = 0;
        records(&mut |record| {
            for json in [false, true] {
                assert_eq!(line(now, record, json), reference(&ts, record, json));
                seen += 1;
            }
        });
        assert_eq!(seen, 16);
    }

    /// Access lines of every shape: hit, miss with tokens, nothing known, odd text, odd times.
    fn accesses() -> Vec<Access<'static>> {
        let hit = Access {
            method: "POST",
            path: "/openai/v1/chat/completions",
            status: 200,
            route: Some("openai"),
            upstream: None,
            cache: Some("HIT"),
            coalesced: false,
            duration_ms: 0.4149,
            input_tokens: Some(12),
            output_tokens: Some(40),
            cache_read_tokens: None,
            cache_write_tokens: Some(8),
            retries: 0,
            failovers: 0,
            error: None,
        };
        vec![
            Access { ..hit },
            Access {
                upstream: Some("openai-eu"),
                cache: Some("MISS"),
                coalesced: true,
                duration_ms: 812.4,
                retries: 2,
                failovers: 1,
                ..hit
            },
            Access {
                method: "GET",
                path: "/nowhere",
                status: 404,
                route: None,
                cache: None,
                duration_ms: 0.0,
                input_tokens: None,
                output_tokens: None,
                ..hit
            },
            Access {
                path: "/a \"quoted\" \\ path\t\u{1}é",
                status: 499,
                error: Some("client_closed"),
                duration_ms: 1e21,
                input_tokens: Some(u64::MAX),
                retries: u32::MAX,
                ..hit
            },
            Access {
                duration_ms: f64::NAN,
                error: Some("with \"quotes\""),
                ..hit
            },
            Access {
                duration_ms: 3.0,
                ..hit
            },
        ]
    }

    /// The access line as the old `access` wrote it: a `log` record with key-values.
    fn old_access_line(ts: &str, a: &Access, json: bool) -> String {
        use log::kv::ToValue;
        let duration_ms = (a.duration_ms * 100.0).round() / 100.0;
        let kvs: &[(&str, kv::Value)] = &[
            ("status", a.status.to_value()),
            ("route", a.route.to_value()),
            ("upstream", a.upstream.to_value()),
            ("cache", a.cache.to_value()),
            ("coalesced", a.coalesced.to_value()),
            ("duration_ms", duration_ms.to_value()),
            ("input_tokens", a.input_tokens.to_value()),
            ("output_tokens", a.output_tokens.to_value()),
            ("cache_read_tokens", a.cache_read_tokens.to_value()),
            ("cache_write_tokens", a.cache_write_tokens.to_value()),
            ("retries", a.retries.to_value()),
            ("failovers", a.failovers.to_value()),
            ("error", a.error.to_value()),
        ];
        reference(
            ts,
            &Record::builder()
                .level(log::Level::Info)
                .target(ACCESS_TARGET)
                .key_values(&kvs)
                .args(format_args!("{} {}", a.method, a.path))
                .build(),
            json,
        )
    }

    #[test]
    fn access_lines_are_byte_identical_to_the_old_ones() {
        let now = UNIX_EPOCH + Duration::from_millis(1_748_772_000_456);
        let ts = humantime::format_rfc3339_millis(now).to_string();
        for a in accesses() {
            for json in [false, true] {
                let mut line = Vec::new();
                write_access(&mut line, &mut Clock::new(), now, &a, json);
                assert_eq!(
                    String::from_utf8(line).unwrap(),
                    old_access_line(&ts, &a, json)
                );
            }
        }
        // Durations of every size, each written as the rounded float was.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut durations = vec![
            0.0,
            -0.0,
            0.004,
            0.005,
            0.006,
            0.015,
            0.1,
            0.41,
            1.0,
            1.005,
            2.675,
            9.995,
            12.5,
            99.999,
            100.0,
            123_456.789,
            9.99e12,
            1e13,
            1e14,
            1e16,
            -1.0,
            f64::INFINITY,
        ];
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let scale = 10f64.powi((seed % 14) as i32 - 3);
            durations.push((seed >> 11) as f64 / (1u64 << 53) as f64 * scale);
        }
        for duration_ms in durations {
            let a = Access {
                duration_ms,
                ..accesses()[0]
            };
            for json in [false, true] {
                let mut line = Vec::new();
                write_access(&mut line, &mut Clock::new(), now, &a, json);
                assert_eq!(
                    String::from_utf8(line).unwrap(),
                    old_access_line(&ts, &a, json),
                    "{duration_ms}"
                );
            }
        }
        // And the documented example, exactly.
        let mut line = Vec::new();
        write_access(&mut line, &mut Clock::new(), now, &accesses()[0], true);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"ts\":\"2025-06-01T10:00:00.456Z\",\"level\":\"INFO\",\"target\":\"promptgate::access\",\"msg\":\"POST /openai/v1/chat/completions\",\"status\":200,\"route\":\"openai\",\"upstream\":null,\"cache\":\"HIT\",\"coalesced\":false,\"duration_ms\":0.41,\"input_tokens\":12,\"output_tokens\":40,\"cache_read_tokens\":null,\"cache_write_tokens\":8,\"retries\":0,\"failovers\":0,\"error\":null}\n"
        );
    }

    #[test]
    fn text_and_json_lines_agree_field_by_field() {
        let now = SystemTime::now();
        let mut seen = 0;
        records(&mut |record| {
            let text = line(now, record, false);
            let json: serde_json::Value = serde_json::from_str(&line(now, record, true)).unwrap();
            let head = format!(
                "[{} {:<5} {}] ",
                json["ts"].as_str().unwrap(),
                json["level"].as_str().unwrap(),
                json["target"].as_str().unwrap()
            );
            assert!(text.starts_with(&head), "{text}");
            let rest = text[head.len()..].strip_suffix('\n').unwrap();
            let msg = json["msg"].as_str().unwrap();
            let mut fields = rest
                .strip_prefix(msg)
                .expect("the same message")
                .trim_start_matches(' ');
            let object = json.as_object().unwrap();
            // Every field, in order: text `key=value` equals the JSON value (null as `-`,
            // strings unquoted).
            for (key, value) in object.iter().skip(4) {
                let shown = match value {
                    serde_json::Value::Null => "-".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let pair = format!("{key}={shown}");
                fields = fields
                    .strip_prefix(&pair)
                    .unwrap_or_else(|| panic!("{pair} in {fields:?}"));
                fields = fields.strip_prefix(' ').unwrap_or(fields);
                seen += 1;
            }
            assert_eq!(fields, "", "{text}");
        });
        assert!(seen > 40, "{seen}");
        // The access lines too, written straight from their fields.
        for a in accesses() {
            let (mut text, mut json) = (Vec::new(), Vec::new());
            write_access(&mut text, &mut Clock::new(), now, &a, false);
            write_access(&mut json, &mut Clock::new(), now, &a, true);
            let text = String::from_utf8(text).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
            for (key, value) in json.as_object().unwrap().iter().skip(4) {
                let shown = match value {
                    serde_json::Value::Null => "-".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert!(
                    text.contains(&format!(" {key}={shown}")),
                    "{key}={shown} in {text}"
                );
            }
            assert_eq!(json["msg"], format!("{} {}", a.method, a.path));
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let every: String = (0u8..=0x7f)
            .map(char::from)
            .chain("é✓\u{2028}😀".chars())
            .collect();
        for s in [every.as_str(), "", "plain", "\"", "tail\\", "\u{1f}x\u{0}"] {
            let mut line = Vec::new();
            json_str(&mut line, s);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(s).unwrap()
            );
            let mut line = Vec::new();
            json_display(&mut line, &format_args!("{s}{s}"));
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&format!("{s}{s}")).unwrap()
            );
        }
    }

    #[test]
    fn a_value_that_fails_to_format_ends_its_text_early() {
        struct Fails;
        impl fmt::Display for Fails {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("part")?;
                Err(fmt::Error)
            }
        }
        let kvs: &[(&str, kv::Value)] = &[("v", kv::Value::from_display(&Fails))];
        for json in [false, true] {
            let text = line(
                UNIX_EPOCH,
                &Record::builder()
                    .target("t")
                    .key_values(&kvs)
                    .args(format_args!("{} after", Fails))
                    .build(),
                json,
            );
            assert!(text.ends_with('\n') && text.contains("part"), "{text}");
        }
    }

    #[test]
    fn the_clock_writes_rfc3339_millis() {
        let mut clock = Clock::new();
        let mut at = UNIX_EPOCH;
        for step_ms in [
            0,
            999,
            1,
            59_000,
            86_400_000 * 366,
            1_748_772_000_123,
            7,
            3_600_500,
        ] {
            at += Duration::from_millis(step_ms);
            let mut line = Vec::new();
            clock.write(&mut line, at);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                humantime::format_rfc3339_millis(at).to_string()
            );
        }
        let mut line = Vec::new();
        clock.write(
            &mut line,
            UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 5),
        );
        assert_eq!(line, b"1970-01-01T00:00:00.000Z", "past year 9999");
    }

    /// A writer that records each `write` it gets, and can hold the writer thread.
    struct Probe {
        writes: mpsc::Sender<Vec<u8>>,
        entered: mpsc::SyncSender<()>,
        gate: Arc<Mutex<mpsc::Receiver<()>>>,
        hold: bool,
    }

    impl Write for Probe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.hold {
                let _ = self.entered.try_send(());
                let _ = self.gate.lock().unwrap().recv();
            }
            let _ = self.writes.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn probe(
        hold: bool,
    ) -> (
        Probe,
        mpsc::Receiver<Vec<u8>>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let (writes, written) = mpsc::channel();
        let (entered, entering) = mpsc::sync_channel(1);
        let (open, gate) = mpsc::channel();
        let probe = Probe {
            writes,
            entered,
            gate: Arc::new(Mutex::new(gate)),
            hold,
        };
        (probe, written, entering, open)
    }

    #[test]
    fn a_full_queue_drops_lines_and_counts_them() {
        let (out, written, entering, open) = probe(true);
        let (mut queue, worker) = queue(out, 2, 4096, Duration::ZERO);
        let counter = queue.error_counter();
        queue.write_all(b"first\n").unwrap();
        // The writer thread holds "first" in its write: the queue (2 lines) fills, then drops.
        entering.recv_timeout(Duration::from_secs(5)).unwrap();
        for i in 0..10 {
            // Never blocks, never fails.
            queue.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(counter.dropped_lines(), 8);
        for _ in 0..3 {
            let _ = open.send(());
        }
        drop(worker); // writes out what is queued
        let out: Vec<u8> = written.try_iter().flatten().collect();
        assert_eq!(String::from_utf8(out).unwrap(), "first\nline 0\nline 1\n");
        assert_eq!(counter.dropped_lines(), 8);
    }

    #[test]
    fn lines_are_written_in_batches() {
        let (out, written, _entering, _open) = probe(false);
        let (mut queue, worker) = queue(out, 1000, 4096, Duration::from_millis(50));
        queue.write_all(b"wake\n").unwrap();
        // While the writer pauses after its first batch, 200 lines queue up.
        std::thread::sleep(Duration::from_millis(10));
        for i in 0..200 {
            queue
                .write_all(format!("line {i:03} of the batch\n").as_bytes())
                .unwrap();
        }
        drop(worker);
        let writes: Vec<Vec<u8>> = written.try_iter().collect();
        let text = String::from_utf8(writes.concat()).unwrap();
        assert_eq!(text.lines().count(), 201);
        assert!(text
            .lines()
            .skip(1)
            .enumerate()
            .all(|(i, l)| l == format!("line {i:03} of the batch")));
        // 200 lines of 23 bytes in 4 KiB batches: two writes for them, each of whole lines.
        assert!(writes.len() <= 4, "{} writes", writes.len());
        assert!(writes.iter().all(|w| w.ends_with(b"\n") && w.len() <= 4096));
        assert_eq!(queue.error_counter().dropped_lines(), 0);
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
