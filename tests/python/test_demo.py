"""`make demo` (scripts/demo.sh) as a new user runs it: no terminal, no stdin, CI=true.

It must show a MISS then a HIT for the plain question and for the streamed one, print the hit
rate and the cost saved from /metrics, and leave no process behind — also when interrupted.
The debug binaries (built by `make python-test`) stand in for the release build.
"""

import os
import re
import signal
import socket
import subprocess
import time

from conftest import MOCK_BIN, PROMPTGATE_BIN, REPO, binary, free_port

SCRIPT = REPO / "scripts" / "demo.sh"


def demo_env(listen, admin):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTGATE_")}
    env.update(
        CI="true",
        PROMPTGATE_BIN=binary(PROMPTGATE_BIN),
        MOCK_BIN=binary(MOCK_BIN),
        PROMPTGATE_DEMO_LISTEN=f"127.0.0.1:{listen}",
        PROMPTGATE_DEMO_ADMIN=f"127.0.0.1:{admin}",
    )
    return env


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def mock_port(output):
    match = re.search(r"mock LLM upstream\s+on 127\.0\.0\.1:(\d+)", output)
    assert match, output
    return int(match.group(1))


def test_demo_shows_miss_then_hit_and_stops_everything():
    listen, admin = free_port(), free_port()
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env=demo_env(listen, admin),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    statuses = re.findall(r"^\s+(MISS|HIT)\s+.*\"Hello from mock #(\d+)\"", out, re.MULTILINE)
    # Plain, then streamed: each a MISS answered by the upstream, then a HIT with that answer.
    assert statuses == [("MISS", "1"), ("HIT", "1"), ("MISS", "2"), ("HIT", "2")], out
    latencies = [float(ms) for ms in re.findall(r"^\s+(?:MISS|HIT)\s+([\d.]+) ms", out, re.MULTILINE)]
    assert len(latencies) == 2 and latencies[0] >= 600 > latencies[1], out
    assert re.search(r"hit rate\s+50% \(2 hits, 2 misses\)", out), out
    saved = re.search(r"cost saved\s+\$([\d.]+)", out)
    assert saved and float(saved.group(1)) > 0, out

    for port in (listen, admin, mock_port(out)):
        assert not listening(port), f"port {port} still served after the demo"


def test_demo_stops_everything_when_interrupted():
    listen, admin = free_port(), free_port()
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env=demo_env(listen, admin),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Interrupt once both processes serve (the first line says so).
    first = process.stdout.readline()
    assert first.startswith("promptgate on"), first
    second = process.stdout.readline()
    upstream = mock_port(first + second)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode != 0
    deadline = time.monotonic() + 5
    while any(listening(p) for p in (listen, admin, upstream)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for port in (listen, admin, upstream):
        assert not listening(port), f"port {port} still served after Ctrl-C"


def test_mock_upstream_help_says_how_to_use_it_and_its_paths_are_answered():
    """A user building their own config around the mock reads its --help: exit 0, how to point
    an upstream at it, its x-mock-* headers, and paths that it really answers (not echoes)."""
    help_run = subprocess.run([binary(MOCK_BIN), "--help"], capture_output=True, text=True, timeout=10)
    assert help_run.returncode == 0, help_run.stderr
    text = help_run.stdout
    for words in ["upstreams: { mock: { url:", "x-mock-delay-ms", "Hello from mock #N"]:
        assert words in text, text
    mock = subprocess.Popen([binary(MOCK_BIN), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(mock.stdout.readline())
        body = (
            b'{"model":"m","input":"hi","prompt":"hi","messages":[{"role":"user","content":"hi"}],'
            b'"contents":[{"parts":[{"text":"hi"}]}],"max_tokens":5,"stream":false}'
        )
        answered = {  # as --help names it: a path to send
            "/v1/chat/completions": "/v1/chat/completions",
            "/v1/embeddings": "/v1/embeddings",
            "/v1/responses": "/v1/responses",
            "/v1/messages": "/v1/messages",
            "/v1beta/models/MODEL:generateContent": "/v1beta/models/m:generateContent",
            "/api/chat": "/api/chat",
            "/api/generate": "/api/generate",
        }
        for named, path in answered.items():
            assert named in text, named
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert b" 200 " in answer.split(b"\r\n")[0] and b"body_blake3" not in answer, (path, answer[:300])
    finally:
        mock.terminate()
        mock.wait(timeout=10)
