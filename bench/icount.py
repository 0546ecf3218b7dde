#!/usr/bin/env python3
"""Instructions per request of a promptgate binary, under callgrind (all threads, user space).

    python3 bench/icount.py BINARY [on|off] [hit|pass|hit-1m|pass-1m] [N1 N2]

Runs the binary twice under valgrind's callgrind with the pinned rows' config of bench/run.py
(`threads: 1`), sends N1 (default 300) and then N2 (default 2,300) sequential keep-alive requests
(the 924-byte chat request; `-1m`: the 1 MiB one) after two warm-up requests, and prints (Ir(N2) - Ir(N1)) / (N2 - N1):
start-up and shutdown cancel out. `on` leaves RUST_LOG unset (access log on, to a file), `off`
sets RUST_LOG=warn. Deterministic to a few hundred instructions, unlike CPU time on a busy
machine. Uses bench/run.py's fixtures, config and nginx upstream (127.0.0.1:28101, so not while
bench/run.py runs); works in bench/.icount; promptgate listens on 127.0.0.1:28411/28491.
"""
import http.client
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / ".icount"
PORT, ADMIN = 28411, 28491

sys.path.insert(0, str(BENCH))
_argv, sys.argv = sys.argv, [sys.argv[0]]
import run as bench  # noqa: E402  (bench/run.py: fixtures, configs; it parses argv on import)
sys.argv = _argv


def wait_port(port):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def instructions(binary, mode, path, n, config, body_file):
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    if mode == "off":
        env["RUST_LOG"] = "warn"
    out = OUT / f"callgrind.{mode}.{n}"
    with open(OUT / f"promptgate.{mode}.{n}.log", "w") as log:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 binary, "run", "--config", str(config)],
                                stdout=log, stderr=log, env=env)
    try:
        wait_port(PORT)
        body = body_file.read_bytes()
        headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        for i in range(n + 2):
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"request {i}: status {resp.status}")
        conn.close()
        time.sleep(0.5)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = out.read_text()
    return int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "on"
    kind = sys.argv[3] if len(sys.argv) > 3 else "hit"
    n1, n2 = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (300, 2300)
    path = ("/openai" if kind.startswith("hit") else "/pass") + "/v1/chat/completions"
    OUT.mkdir(exist_ok=True)
    bench.RUN = OUT
    response_json, sse, req_1k, req_1m, _ = bench.fixtures()
    bench.write_upstream(response_json, sse)
    body_file = OUT / "request.json"
    body_file.write_text(req_1m if kind.endswith("-1m") else req_1k)
    config = OUT / "promptgate.yaml"
    config.write_text(bench.promptgate_yaml(PORT, ADMIN, 1))
    up = OUT / "nginx-up"
    subprocess.run(["nginx", "-c", str(up / "nginx.conf"), "-p", str(up)], check=True)
    try:
        a = instructions(binary, mode, path, n1, config, body_file)
        b = instructions(binary, mode, path, n2, config, body_file)
    finally:
        subprocess.run(["nginx", "-s", "stop", "-c", str(up / "nginx.conf"), "-p", str(up)])
    print(f"{binary} log {mode}, {kind}: {(b - a) / (n2 - n1):,.0f} instructions/request")


if __name__ == "__main__":
    main()
