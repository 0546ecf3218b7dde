//! The command line: `promptgate run | check | key | warm | health`, with `--config` resolution.

pub(crate) mod health;
pub(crate) mod warm;

use crate::config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "promptgate",
    version,
    about = "A caching reverse proxy for LLM APIs (OpenAI, Anthropic, Gemini, Ollama)",
    long_about = "promptgate is a caching reverse proxy for LLM APIs (OpenAI, Anthropic, Gemini, \
                  Ollama). Point an SDK at it with one variable (e.g. \
                  OPENAI_BASE_URL=http://127.0.0.1:8080/openai/v1): it answers a request it has \
                  seen before from its cache (memory or Redis) without calling the provider \
                  again, and routes, rewrites and forwards the rest as conf/promptgate.yaml says.",
    after_help = "Config file lookup when --config is absent: $PROMPTGATE_CONFIG, \
                  ./conf/promptgate.yaml, /etc/promptgate/promptgate.yaml.\n\
                  Log levels: RUST_LOG over the default info,pingora=warn, e.g. RUST_LOG=debug, \
                  RUST_LOG=pingora=info (adds Pingora's own lines)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the caching proxy: answer repeated requests from the cache, forward the rest.
    ///
    /// Serves until SIGTERM (drains the requests in flight for at most shutdown_grace, then
    /// exits) or SIGINT (exits at once). SIGHUP reloads the config file; SIGQUIT hands the
    /// listening sockets to a process started with --upgrade, SIGUSR2 starts one. Logs go to
    /// stderr: one line once it listens, then one access line per request.
    Run(RunArgs),
    /// Validate the config file: exit 0 when valid, else list every problem and exit 1.
    Check(ConfigArg),
    /// Print the cache key of a request (body on stdin) and the canonical form that was hashed.
    Key(KeyArgs),
    /// Send a JSONL file of requests through a running promptgate to fill its cache.
    Warm(WarmArgs),
    /// Ask the admin listener's /healthz: exit 0 on 200, else say why and exit 1.
    Health(HealthArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The route the request goes to.
    #[arg(long)]
    pub route: String,
    /// The request path as the client sends it (default: the route's path_prefix).
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// A request header, `name: value` (repeatable), e.g. the credential or a vary header.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// JSONL file, one request per line: {"path" | "route" [+ "path"], "body", "headers"?, "method"?}.
    pub file: PathBuf,
    /// Base URL of the running promptgate (default: http:// + the config's `listen`).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Take over the listening sockets of the running promptgate (zero-downtime upgrade):
    /// start this, then send the old process SIGQUIT within 5 seconds.
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Health URL to ask instead of the config's admin address, e.g. http://127.0.0.1:9090/healthz.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file (YAML).
    #[arg(short, long, env = "PROMPTGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<(PathBuf, crate::runtime::Runtime)> {
        let path = config::resolve_path(self.config.as_deref())?;
        let runtime = crate::runtime::load(&path)?;
        Ok((path, runtime))
    }
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(RunArgs { config, upgrade }) => {
            let (path, runtime) = config.load()?;
            crate::logging::set_format(runtime.log.format);
            for warning in runtime.sections.warnings() {
                log::warn!("config {}: {warning}", path.display());
            }
            crate::server::run(runtime, path, upgrade).context("promptgate stopped with an error")
        }
        Command::Key(args) => print_key(args),
        Command::Warm(args) => {
            let (_, runtime) = args.config.load()?;
            let proxy = args
                .proxy
                .unwrap_or_else(|| format!("http://{}", runtime.listen));
            let tokio_rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let s = tokio_rt.block_on(crate::cli::warm::run(
                &args.file,
                &proxy,
                &runtime,
                args.concurrency,
            ))?;
            println!(
                "warmed {}, already cached {}, failed {}",
                s.warmed, s.already_cached, s.failed
            );
            if s.failed > 0 {
                anyhow::bail!("{} request(s) failed", s.failed);
            }
            Ok(())
        }
        Command::Check(arg) => {
            let (path, runtime) = arg.load()?;
            for warning in runtime.sections.warnings() {
                eprintln!("warning: {}: {warning}", path.display());
            }
            println!(
                "{}: ok ({} route(s), proxy on {}, admin on {})",
                path.display(),
                runtime.routes.len(),
                runtime.listen,
                runtime.admin
            );
            Ok(())
        }
        Command::Health(HealthArgs { config, url }) => {
            let target = match url {
                Some(url) => health::Target::from_url(&url)?,
                None => health::Target::admin(config.load()?.1.admin),
            };
            let status = health::check(&target).context("unhealthy")?;
            println!("healthy: {} answered {status}", target.url());
            Ok(())
        }
    }
}

/// The semantic side of `promptgate key`: the context key, the compared text and what the
/// literal guard reads in it — or why the request is only exactly cached.
fn print_semantic(
    req: &pingora::http::RequestHeader,
    route: &crate::routing::Route,
    spec: &crate::config::schema::SemanticSpec,
    embedder: &crate::routing::upstream::Upstream,
    body: &[u8],
) {
    use crate::cache::semantic::guard::Literals;
    match crate::proxy::semantic::probe(req, route, spec, embedder, req.uri.path(), body) {
        Ok(probe) => {
            println!("context:   {}", probe.context.hex());
            println!("compared:  {:?}", probe.text);
            match Literals::of(&probe.text) {
                Ok(lits) => {
                    let literals: Vec<String> = lits
                        .sorted()
                        .iter()
                        .map(|(class, value)| format!("{class}:{value:?}"))
                        .collect();
                    let names: Vec<&str> = lits.names().collect();
                    println!("literals:  [{}]", literals.join(", "));
                    println!("names:     [{}]", names.join(", "));
                }
                Err(e) => println!("literals:  none ({e}; never a semantic hit)"),
            }
        }
        Err(e) => println!("semantic:  not compared ({e}); exact caching only"),
    }
}

/// `promptgate key`: derives the key exactly as the proxy does for this request.
fn print_key(args: KeyArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let (_, runtime) = args.config.load()?;
    let route = runtime
        .routes
        .iter()
        .find(|r| r.name == args.route)
        .with_context(|| {
            let names: Vec<&str> = runtime.routes.iter().map(|r| r.name.as_str()).collect();
            format!("no route {:?} (routes: {})", args.route, names.join(", "))
        })?;
    let path = args
        .path
        .clone()
        .or_else(|| route.matcher.path_prefix.clone())
        .unwrap_or_else(|| "/".into());
    let mut req = pingora::http::RequestHeader::build(args.method.as_str(), path.as_bytes(), None)
        .with_context(|| format!("invalid method or path: {} {path}", args.method))?;
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `name: value`"))?;
        req.append_header(name.trim().to_ascii_lowercase(), value.trim())
            .with_context(|| format!("invalid header {name:?}"))?;
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the request body from stdin")?;
    let key = crate::cache::policy::request_key(
        &req,
        &route.key_name,
        &route.cache,
        req.uri.path(),
        &crate::body::ParsedBody::new(&body),
        None,
    );
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let canonical =
        crate::cache::key::canonical_body(content_type, &body, &route.cache.ignore_fields);
    let kind = match canonical {
        crate::cache::key::CanonicalBody::Json(_) => "canonical JSON",
        crate::cache::key::CanonicalBody::Multipart(_) => {
            "multipart form, by its parts (key version promptgate-cache-v2)"
        }
        crate::cache::key::CanonicalBody::Raw(_) => "raw bytes (not JSON)",
    };
    println!("key:       {}", key.hex());
    println!(
        "redis key: {}",
        crate::cache::redis_key(&runtime.cache.redis.prefix, &route.name, &key)
    );
    println!("scope:     {}", route.cache.scope.as_str());
    let cacheable = crate::cache::operations::cacheable(
        &route.cache.operations,
        &req.method,
        route.forward_path(req.uri.path()),
        &crate::body::ParsedBody::new(&body),
    );
    if !cacheable {
        println!("note:      not a cacheable operation on this route (cache.operations): never cached, BYPASS");
        // Without --path the route's bare prefix is keyed, which no SDK ever requests.
        if args.path.is_none() {
            println!(
                "hint:      no --path given, so {path} was keyed; give the path the client sends, \
                 e.g. --path {}/v1/chat/completions",
                path.trim_end_matches('/')
            );
        }
    }
    // A request the cache never looks up is never compared either.
    if let (true, Some(spec), Some(embedder)) = (cacheable, &route.cache.semantic, &route.embedder)
    {
        print_semantic(&req, route, spec, embedder, &body);
    }
    println!("body:      {kind}, {} bytes", canonical.as_bytes().len());
    println!("{}", String::from_utf8_lossy(canonical.as_bytes()));
    Ok(())
}
