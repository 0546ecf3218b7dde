//! Builds the config bodies tests start the gateway with (everything but `listen`/`admin`,
//! which [`Gateway`](super::Gateway) adds), so a test states only what it is about.
//!
//! Pieces that vary freely (a section, an upstream's extra fields, a route's retry policy) are
//! given as YAML text; only the shape every config shares (upstreams by name, routes with a
//! match, a stripped prefix and targets) is typed. Tests about the YAML text itself (reload,
//! config errors) keep writing it inline.

use std::fmt;

/// A config body; `Display` renders it as YAML (what [`Gateway::start`](super::Gateway::start)
/// takes).
#[derive(Clone, Default)]
pub struct Config {
    sections: Vec<String>,
    upstreams: Vec<String>,
    routes: Vec<Route>,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// The usual setup: one upstream `mock` at `url` and a route per provider wire format
    /// (`/openai`, `/anthropic`, `/gemini`, `/ollama`, prefix stripped), without retries (the
    /// retry and failover tests configure their own).
    pub fn providers(url: &str) -> Config {
        ["openai", "anthropic", "gemini", "ollama"]
            .into_iter()
            .fold(Config::new().upstream("mock", url), |config, name| {
                config.route(
                    Route::prefixed(name)
                        .targets("[mock]")
                        .with("retry: { attempts: 1 }"),
                )
            })
    }

    /// A top-level section as YAML text, e.g. `cache: { max_entry_bytes: 100 }`; written
    /// before `upstreams`, in the order added.
    pub fn section(mut self, yaml: impl Into<String>) -> Config {
        self.sections.push(yaml.into());
        self
    }

    /// Upstream `name` at `url`.
    pub fn upstream(self, name: &str, url: &str) -> Config {
        self.upstream_with(name, url, "")
    }

    /// Upstream `name` at `url` with more fields in YAML flow style, e.g.
    /// `timeouts: { first_byte: 200ms }, max_concurrent: 1`.
    pub fn upstream_with(mut self, name: &str, url: &str, fields: &str) -> Config {
        let more = if fields.is_empty() {
            String::new()
        } else {
            format!(", {fields}")
        };
        self.upstreams
            .push(format!("  {name}: {{ url: \"{url}\"{more} }}\n"));
        self
    }

    pub fn route(mut self, route: Route) -> Config {
        self.routes.push(route);
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for section in &self.sections {
            writeln!(f, "{section}")?;
        }
        if !self.upstreams.is_empty() {
            writeln!(f, "upstreams:")?;
            for upstream in &self.upstreams {
                f.write_str(upstream)?;
            }
        }
        if !self.routes.is_empty() {
            writeln!(f, "routes:")?;
            for route in &self.routes {
                write!(f, "{route}")?;
            }
        }
        Ok(())
    }
}

/// One entry of `routes:`.
#[derive(Clone)]
pub struct Route {
    name: String,
    path_prefix: Option<String>,
    model: Option<String>,
    strip_prefix: bool,
    targets: Option<String>,
    /// Priority groups: (name, targets as YAML).
    groups: Vec<(String, String)>,
    fields: Vec<String>,
}

impl Route {
    /// Route `name`, matching every request until [`prefix`](Route::prefix) or
    /// [`model`](Route::model) narrow it.
    pub fn new(name: &str) -> Route {
        Route {
            name: name.to_owned(),
            path_prefix: None,
            model: None,
            strip_prefix: false,
            targets: None,
            groups: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Route `name` for requests under `/name`, which the upstream gets without that prefix
    /// (`/openai/v1/chat/completions` arrives as `/v1/chat/completions`).
    pub fn prefixed(name: &str) -> Route {
        Route::new(name).prefix(&format!("/{name}"))
    }

    /// Matches requests under `path_prefix` and strips it before forwarding.
    pub fn prefix(mut self, path_prefix: &str) -> Route {
        self.path_prefix = Some(path_prefix.to_owned());
        self.strip_prefix = true;
        self
    }

    /// Forwards the path as received, prefix included.
    pub fn keep_prefix(mut self) -> Route {
        self.strip_prefix = false;
        self
    }

    /// Matches only requests whose body's model matches `pattern` (a glob, e.g. `gpt-4*`).
    pub fn model(mut self, pattern: &str) -> Route {
        self.model = Some(pattern.to_owned());
        self
    }

    /// The targets as YAML: `[a, b]`, or `[{ upstream: a, model: llama3.2 }]`.
    pub fn targets(mut self, yaml: &str) -> Route {
        self.targets = Some(yaml.to_owned());
        self
    }

    /// A priority group `name` (chosen by `x-promptgate-priority` or `auto:<name>`) over
    /// `targets`, YAML as for [`targets`](Route::targets).
    pub fn group(mut self, name: &str, targets: &str) -> Route {
        self.groups.push((name.to_owned(), targets.to_owned()));
        self
    }

    /// Another field as YAML text, e.g. `retry: { attempts: 1 }`; a block over several lines
    /// is indented to sit under the route.
    pub fn with(mut self, yaml: &str) -> Route {
        self.fields.push(yaml.to_owned());
        self
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  - name: {}", self.name)?;
        let mut matches = Vec::new();
        if let Some(prefix) = &self.path_prefix {
            matches.push(format!("path_prefix: {prefix}"));
        }
        if let Some(model) = &self.model {
            matches.push(format!("model: \"{model}\""));
        }
        if !matches.is_empty() {
            writeln!(f, "    match: {{ {} }}", matches.join(", "))?;
        }
        if self.strip_prefix {
            writeln!(f, "    strip_prefix: true")?;
        }
        if let Some(targets) = &self.targets {
            writeln!(f, "    targets: {targets}")?;
        }
        if !self.groups.is_empty() {
            writeln!(f, "    groups:")?;
            for (name, targets) in &self.groups {
                writeln!(f, "      {name}: {targets}")?;
            }
        }
        for field in &self.fields {
            for line in field.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

#[test]
fn renders_sections_then_upstreams_then_routes() {
    let yaml = Config::new()
        .route(
            Route::new("cheap")
                .prefix("/openai")
                .model("gpt-4*")
                .targets("[{ upstream: a, model: llama3.2 }]")
                .group("speed", "[a]")
                .group("quality", "[b]")
                .with("retry:\n  attempts: 2"),
        )
        .upstream_with(
            "a",
            "http://127.0.0.1:1/base",
            "timeouts: { first_byte: 1s }",
        )
        .upstream("b", "http://127.0.0.1:2")
        .section("limits: { max_body_bytes: 10 }")
        .route(Route::prefixed("plain").keep_prefix())
        .to_string();
    assert_eq!(
        yaml,
        r#"limits: { max_body_bytes: 10 }
upstreams:
  a: { url: "http://127.0.0.1:1/base", timeouts: { first_byte: 1s } }
  b: { url: "http://127.0.0.1:2" }
routes:
  - name: cheap
    match: { path_prefix: /openai, model: "gpt-4*" }
    strip_prefix: true
    targets: [{ upstream: a, model: llama3.2 }]
    groups:
      speed: [a]
      quality: [b]
    retry:
      attempts: 2
  - name: plain
    match: { path_prefix: /plain }
"#
    );
}
