//! Logger set-up: `RUST_LOG` as usual (default `info`), with Pingora's own modules held at `info`
//! unless `RUST_LOG` names them.
//!
//! Why: at debug level Pingora logs the raw head of every request it cannot parse — request
//! line with query string, `Authorization`, `x-api-key` and all — and a client can trigger that
//! at will. `RUST_LOG=debug` is how operators look at promptgate, so it must stay free of keys;
//! whoever needs Pingora's debug output asks for it by name (`RUST_LOG=debug,pingora_proxy=debug`)
//! and knows what it contains.

use log::LevelFilter;

/// Pingora crates whose debug/trace output can carry request heads.
const PINGORA_MODULES: &[&str] = &["pingora_proxy", "pingora_core", "pingora_http"];

/// Installs the global logger. Call once, first thing in `main`.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    for module in PINGORA_MODULES {
        if !names_module(&spec, module) {
            builder.filter_module(module, LevelFilter::Info.min(max_level(&spec)));
        }
    }
    builder.init();
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
