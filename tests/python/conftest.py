"""The official Python SDKs against the real promptgate binary, in front of the mock upstream.

One promptgate and one mock upstream (`examples/mock_upstream.rs`, the integration tests' mock
as a process) run for the whole session. Both are the debug builds in `target/debug/` (or
`$CARGO_TARGET_DIR/debug/`), which `make python-test` builds first with
`cargo build --examples --bins`; run that yourself before calling pytest directly.

Each SDK is configured only through its own environment variable (see `sdk_env`). The mock
answers `"Hello from mock #N"`, N counting its answers, so two responses with the same N are one
upstream answer served twice: a cache hit. The cache lives as long as the session, so every
test sends prompts of its own (see `prompt`).
"""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
PROMPTGATE_BIN = TARGET_DIR / "debug" / "promptgate"
MOCK_BIN = TARGET_DIR / "debug" / "examples" / "mock_upstream"

MOCK_TEXT = re.compile(r"Hello from mock #(\d+)")

# Every variable that could point an SDK elsewhere or change how it authenticates; cleared so
# the developer's own environment cannot leak into the tests.
FOREIGN_ENV = [
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_WEBHOOK_SECRET",
    "ANTHROPIC_AUTH_TOKEN",
    "OLLAMA_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_USE_ENTERPRISE",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_VERTEX_BASE_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
]


def mock_number(text):
    """N in "Hello from mock #N": which upstream answer `text` is."""
    match = MOCK_TEXT.search(text or "")
    assert match, f"not a mock answer: {text!r}"
    return int(match.group(1))


def binary(path):
    if not path.is_file():
        pytest.exit(
            f"{path} is missing: build it with `cargo build --examples --bins` "
            "(or run `make python-test`)",
            returncode=1,
        )
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, log, timeout=20.0):
    """Waits until something accepts connections on `port`; fails if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.exit(
        f"promptgate did not listen on {port} (exit {process.returncode}); log:\n"
        f"{log.read_text()}",
        returncode=1,
    )


def stop(process):
    process.kill()
    process.wait()


@pytest.fixture(scope="session")
def mock_upstream_url(tmp_path_factory):
    """`http://127.0.0.1:PORT` of the mock upstream process."""
    log = tmp_path_factory.mktemp("mock") / "mock_upstream.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [binary(MOCK_BIN), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    # The first line is the port it bound; EOF (an empty line) if it failed to start.
    port = process.stdout.readline().strip()
    if not port.isdigit():
        stop(process)
        pytest.exit(f"mock upstream did not start; log:\n{log.read_text()}", returncode=1)
    yield f"http://127.0.0.1:{port}"
    stop(process)


def promptgate_config(listen, admin, upstream_url):
    """The default config's four provider routes (conf/promptgate.yaml), every upstream the
    mock, and `/limited`, an OpenAI route with a rate limit. Upstream errors are retried once, quickly (Retry-After capped at 100 ms), so the
    SDKs' own error handling is exercised without slowing the suite."""
    upstreams = "".join(
        f"  {name}:\n    url: \"{upstream_url}\"\n"
        for name in ("openai", "anthropic", "gemini", "ollama")
    )
    routes = "".join(
        f"  - name: {name}\n"
        f"    match: {{ path_prefix: /{name} }}\n"
        f"    strip_prefix: true\n"
        f"    targets: [{name}]\n"
        f"    retry: {{ attempts: 2, base: 10ms, max: 100ms }}\n"
        for name in ("openai", "anthropic", "gemini", "ollama")
    )
    # A rate-limited OpenAI route: two requests a minute per API key.
    routes += (
        "  - name: limited\n"
        "    match: { path_prefix: /limited }\n"
        "    strip_prefix: true\n"
        "    targets: [openai]\n"
        "    rate_limit: { requests_per_minute: 2 }\n"
    )
    return (
        f'listen: "{listen}"\nadmin: "{admin}"\nthreads: 2\n'
        f"upstreams:\n{upstreams}routes:\n{routes}"
        "cache:\n  enabled: true\n  backend: memory\n"
    )


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, mock_upstream_url):
    """(proxy, admin): `http://127.0.0.1:PORT` of a running promptgate whose four routes lead
    to the mock, and of its admin listener."""
    directory = tmp_path_factory.mktemp("promptgate")
    port, admin = free_port(), free_port()
    config = directory / "promptgate.yaml"
    config.write_text(
        promptgate_config(f"127.0.0.1:{port}", f"127.0.0.1:{admin}", mock_upstream_url)
    )
    log = directory / "promptgate.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMPTGATE_CONFIG"}
    env["RUST_LOG"] = "info"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [binary(PROMPTGATE_BIN), "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wait_for_port(port, process, log)
    wait_for_port(admin, process, log)
    yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    stop(process)


@pytest.fixture(scope="session")
def proxy(gateway):
    """`http://127.0.0.1:PORT` of the running promptgate (see `gateway`)."""
    return gateway[0]


@pytest.fixture
def sdk_env(monkeypatch, proxy):
    """Points every SDK at promptgate through its own variable, with dummy keys (the mock
    accepts any). Returns the variables set, for subprocesses."""
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    variables = {
        "OPENAI_BASE_URL": f"{proxy}/openai/v1",
        "OPENAI_API_KEY": "sk-dummy",
        "ANTHROPIC_BASE_URL": f"{proxy}/anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "OLLAMA_HOST": f"{proxy}/ollama",
        "GOOGLE_GEMINI_BASE_URL": f"{proxy}/gemini",
        "GEMINI_API_KEY": "gemini-dummy",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def prompt(request):
    """A prompt no other test sends, so its first request is always a cache miss."""
    return f"Say hello ({request.node.nodeid})"
