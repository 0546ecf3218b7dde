//! The command line: `promptgate run | check | health`, with `--config` resolution.

use crate::config;
use crate::health;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "promptgate",
    version,
    about = "A caching reverse proxy for LLM APIs (OpenAI, Anthropic, Gemini, Ollama)",
    long_about = "promptgate sits between your app and LLM provider APIs. Point an SDK at it with \
                  one variable (e.g. OPENAI_BASE_URL=http://127.0.0.1:8080/openai/v1) and it \
                  routes, rewrites and forwards requests as conf/promptgate.yaml says.",
    after_help = "Config file lookup when --config is absent: $PROMPTGATE_CONFIG, \
                  ./conf/promptgate.yaml, /etc/promptgate/promptgate.yaml.\n\
                  Log level: RUST_LOG (default: info), e.g. RUST_LOG=debug."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy until SIGTERM (graceful) or SIGINT; SIGHUP reloads the config file;
    /// SIGQUIT hands the listeners to a process started with --upgrade, SIGUSR2 starts one.
    Run(RunArgs),
    /// Validate the config file: exit 0 when valid, else list every problem and exit 1.
    Check(ConfigArg),
    /// Ask the admin listener's /healthz: exit 0 on 200, else say why and exit 1.
    Health(HealthArgs),
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
    fn load(&self) -> anyhow::Result<(PathBuf, crate::routing::Table)> {
        let path = config::resolve_path(self.config.as_deref())?;
        let table = config::load(&path)?;
        Ok((path, table))
    }
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(RunArgs { config, upgrade }) => {
            let (path, table) = config.load()?;
            log::info!(
                "config {} loaded: {} route(s)",
                path.display(),
                table.routes.len()
            );
            crate::server::run(table, path, upgrade).context("promptgate stopped with an error")
        }
        Command::Check(arg) => {
            let (path, table) = arg.load()?;
            println!(
                "{}: ok ({} route(s), proxy on {}, admin on {})",
                path.display(),
                table.routes.len(),
                table.listen,
                table.admin
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
