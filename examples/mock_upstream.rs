//! The integration tests' mock LLM upstream as a standalone process, for tests written in
//! other languages (`tests/python/`): `cargo run --example mock_upstream -- [--port PORT]`.
//!
//! Serves on 127.0.0.1:PORT (default 0: any free port) until killed. The first line on stdout
//! is the port actually bound, so a caller can start it with port 0 and read the port back.

#[path = "../tests/integration/support/mock_upstream/mod.rs"]
mod mock_upstream;

use std::io::Write;
use std::process::ExitCode;

use mock_upstream::MockUpstream;

const USAGE: &str = "usage: mock_upstream [--port PORT]";

/// `--help`: what a user trying promptgate against the mock needs to write a config and make
/// requests, without reading the test support code.
const HELP: &str = "\
usage: mock_upstream [--port PORT]

A mock LLM provider on 127.0.0.1:PORT (default 0: any free port; the first line on stdout is
the port bound), for trying promptgate offline. Point an upstream at it:
  upstreams: { mock: { url: \"http://127.0.0.1:PORT\" } }

It answers OpenAI (/v1/chat/completions, /v1/embeddings, /v1/responses, /v1/audio/...),
Anthropic (/v1/messages), Gemini (/v1beta/models/MODEL:generateContent ...) and Ollama
(/api/chat, /api/generate) requests, streamed or not, with the text
\"Hello from mock #N\" (N counts the requests it served), so a fresh answer and a cached one
differ. Any other path echoes the request it received as JSON (method, path, headers).

Request headers that change its answer (an upstream's `headers:` can set them):
  x-mock-delay-ms: N         wait N ms before answering, like a model thinking
  x-mock-chunk-delay-ms: N   wait N ms between the chunks of a stream
  x-mock-status: S           answer status S with the provider's error body
  x-mock-fault: reset|truncate|close   break the connection
  x-mock-outcome: error|partial|refusal   a 200 that is not a whole answer";

fn parse_port(mut args: impl Iterator<Item = String>) -> Result<u16, String> {
    let mut port = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {value:?}"))?;
            }
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(port) => port,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mock = MockUpstream::start_on(port).await;
    let mut stdout = std::io::stdout().lock();
    // Flushed at once: the caller blocks on this line to learn the port.
    if writeln!(stdout, "{}", mock.addr().port())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    eprintln!("mock upstream listening on {}", mock.url());
    // Serve until killed; Ctrl-C ends it cleanly too.
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
