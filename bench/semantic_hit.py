#!/usr/bin/env python3
"""What a semantic hit adds beside its embedder call, end to end, on loopback.

    python3 bench/semantic_hit.py [--n 300]

Starts the mock upstream (examples/mock_upstream, release: LLM and the bag-of-words embedder
`mock-bow`) and promptgate (target/release/promptgate) with a semantic route, then, over one
keep-alive connection, for each i: asks "What's the tempo of loop i?" (a miss, stored and
indexed), then "what is the TEMPO of loop i" (a semantic hit: embed, search the context, guard,
serve) and the same again (an exact hit: the semantic hit became that request's entry), and
calls the embedder directly with the same text. All loops share one context, so each search
scans up to max_per_context (64) vectors.

added latency of a semantic hit = p50(semantic hit) - p50(exact hit) - p50(embedder call).
Also prints promptgate's own search time (promptgate_semantic_search_duration_seconds). Build
first: cargo build --release --bin promptgate --example mock_upstream. Stdlib only.
"""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="questions (default 300)")
    ap.add_argument("--bin", default=str(ROOT / "target/release/promptgate"))
    ap.add_argument("--mock", default=str(ROOT / "target/release/examples/mock_upstream"))
    args = ap.parse_args()

    mock = subprocess.Popen([args.mock], stdout=subprocess.PIPE, text=True)
    mock_port = int(mock.stdout.readline())
    port, admin = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="pg-semantic-"))
    cfg = work / "promptgate.yaml"
    cfg.write_text(f"""listen: "127.0.0.1:{port}"
admin: "127.0.0.1:{admin}"
reload: {{ watch: false }}
upstreams:
  mock: {{ url: "http://127.0.0.1:{mock_port}" }}
routes:
  - name: openai
    match: {{ path_prefix: /openai }}
    strip_prefix: true
    targets: [mock]
    cache:
      semantic: {{ upstream: mock, model: mock-bow, threshold: 0.8 }}
""")
    env = dict(os.environ, RUST_LOG="warn")
    pg = subprocess.Popen([args.bin, "run", "--config", str(cfg)], env=env,
                          stdout=open(work / "log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        proxy = http.client.HTTPConnection("127.0.0.1", port)
        embedder = http.client.HTTPConnection("127.0.0.1", mock_port)

        def post(conn, path, body):
            data = json.dumps(body).encode()
            t = time.perf_counter()
            conn.request("POST", path, data, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            took = time.perf_counter() - t
            return took, resp.getheader("x-promptgate-cache"), resp.getheader(
                "x-promptgate-cache-match")

        def chat(text):
            return {"model": "gpt-4o-mini", "temperature": 0, "messages": [
                {"role": "system", "content": "You are a music production assistant."},
                {"role": "user", "content": text}]}

        semantic, exact, embed = [], [], []
        for i in range(args.n):
            _, cache, _ = post(proxy, "/openai/v1/chat/completions", chat(f"What's the tempo of loop {i}?"))
            assert cache == "MISS", cache
            reworded = f"what is the TEMPO of loop {i}"
            took, cache, match = post(proxy, "/openai/v1/chat/completions", chat(reworded))
            assert (cache, match) == ("HIT", "semantic"), (i, cache, match)
            semantic.append(took)
            took, cache, match = post(proxy, "/openai/v1/chat/completions", chat(reworded))
            assert (cache, match) == ("HIT", None), (i, cache, match)
            exact.append(took)
            took, _, _ = post(embedder, "/v1/embeddings", {"model": "mock-bow", "input": reworded})
            embed.append(took)
        metrics = http.client.HTTPConnection("127.0.0.1", admin)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()

        def series(name):
            m = re.search(rf'^{name}{{route="openai"}} (\S+)$', text, re.M)
            return float(m.group(1)) if m else float("nan")

        search_sum = series("promptgate_semantic_search_duration_seconds_sum")
        search_count = series("promptgate_semantic_search_duration_seconds_count")
        ms = lambda v: f"{v * 1000:.3f} ms"
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"{args.n} questions, one keep-alive connection each, load average {load}")
        for name, values in [("semantic hit", semantic), ("exact hit", exact),
                             ("embedder call (direct)", embed)]:
            print(f"  {name:24} p50 {ms(pct(values, 0.5))}  p99 {ms(pct(values, 0.99))}")
        added = pct(semantic, 0.5) - pct(exact, 0.5) - pct(embed, 0.5)
        print(f"  added by a semantic hit beyond the embedder call (p50): {ms(added)}")
        print(f"  promptgate's search (read vectors, compare, guard, fetch entry), mean: "
              f"{ms(search_sum / search_count)} over {int(search_count)} lookups")
    finally:
        pg.terminate()
        mock.terminate()
        pg.wait()
        mock.wait()


if __name__ == "__main__":
    main()
