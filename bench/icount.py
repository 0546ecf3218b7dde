#!/usr/bin/env python3
"""Instructions per request of a promptgate binary, under callgrind (all threads, user space).

    python3 bench/icount.py BINARY [on|off] [hit|pass|hit-1m|pass-1m] [N1 N2]
    python3 bench/icount.py --floor MODE[,FLAG...] FLOOR_BINARY [-] [hit|pass|...] [N1 N2]
    python3 bench/icount.py --nginx nginx [on|off] pass [N1 N2]
    python3 bench/icount.py --cache ...   (any of the above, with cache misses)

Runs the binary twice under valgrind's callgrind with the pinned rows' config of bench/run.py
(`threads: 1`), sends N1 (default 300) and then N2 (default 2,300) sequential keep-alive requests
(the 924-byte chat request; `-1m`: the 1 MiB one) after two warm-up requests, and prints (Ir(N2) - Ir(N1)) / (N2 - N1):
start-up and shutdown cancel out. `on` leaves RUST_LOG unset (access log on, to a file), `off`
sets RUST_LOG=warn. `--floor MODE` measures a Pingora floor (bench/floors, e.g. `exchange` or
`hyper`; extra flags after commas, `hyper,--h2`) on one thread instead, with the same requests
(the on/off argument is ignored). `--nginx` measures bench/run.py's nginx `proxy_pass` (one
worker, no master process; on/off: its access log). Deterministic to a few hundred instructions, unlike CPU time on a busy
machine. Uses bench/run.py's fixtures, config and nginx upstream (127.0.0.1:28101, so not while
bench/run.py runs); works in bench/.icount (callgrind.MODE.KIND.N, for callgrind_annotate); promptgate listens on 127.0.0.1:28411/28491. `--cache` adds callgrind's cache simulation
(`--cache-sim=yes`, the host's L1 sizes) and prints first-level instruction-fetch and data
misses per request too: where CPU time as shipped parts from instructions, code footprint shows
as I1 misses.
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


def instructions(binary, mode, kind, path, n, config, body_file, floor=None):
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    if mode == "off":
        env["RUST_LOG"] = "warn"
    if floor == "nginx":
        px = OUT / "icount-nginx"
        args = [binary, "-p", str(px), "-c", str(px / "nginx.conf"),
                "-g", "daemon off; master_process off;"]
        mode = f"nginx-{mode}"
    elif floor:
        # The floor's mode and flags (after commas); it answers on the same port.
        fmode, *flags = floor.split(",")
        args = [binary, fmode, "--listen", f"127.0.0.1:{PORT}", "--threads", "1", *flags]
        args += ["--body", str(OUT / "response.json")] if fmode == "static" else \
            ["--upstream", f"127.0.0.1:{bench.P_UP_H2 if '--h2' in flags else bench.P_UP}"]
        mode = "floor-" + floor.replace(",", "")
    else:
        args = [binary, "run", "--config", str(config)]
    # One file per log mode, request kind and count: a hit run leaves a pass run's files alone.
    out = OUT / f"callgrind.{mode}.{kind}.{n}"
    with open(OUT / f"promptgate.{mode}.{kind}.{n}.log", "w") as log:
        sim = ["--cache-sim=yes"] if CACHE else []
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", *sim,
                                 f"--callgrind-out-file={out}", *args],
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
    events = re.search(r"^events:\s+(.*)$", text, re.M).group(1).split()
    totals = re.search(r"^(?:summary|totals):\s+(.*)$", text, re.M).group(1).split()
    return dict(zip(events, map(int, totals)))


CACHE = False


def main():
    global CACHE
    argv = sys.argv[1:]
    if argv[:1] == ["--cache"]:
        CACHE, argv = True, argv[1:]
    floor = None
    if argv[:1] == ["--floor"] and len(argv) > 1:
        floor, argv = argv[1], argv[2:]
    elif argv[:1] == ["--nginx"]:
        floor, argv = "nginx", argv[1:]
    if not argv:
        sys.exit(__doc__)
    binary = argv[0]
    mode = argv[1] if len(argv) > 1 else "on"
    kind = argv[2] if len(argv) > 2 else "hit"
    n1, n2 = (int(argv[3]), int(argv[4])) if len(argv) > 4 else (300, 2300)
    path = ("/openai" if kind.startswith("hit") else "/pass") + "/v1/chat/completions"
    if floor:
        path = "/v1/chat/completions"  # a floor has no routes: hit or pass is its mode's
    if floor and floor != "nginx":
        mode = "-"
    OUT.mkdir(exist_ok=True)
    bench.RUN = OUT
    response_json, sse, req_1k, req_1m, _ = bench.fixtures()
    bench.write_upstream(response_json, sse)
    body_file = OUT / "request.json"
    body_file.write_text(req_1m if kind.endswith("-1m") else req_1k)
    config = OUT / "promptgate.yaml"
    config.write_text(bench.promptgate_yaml(PORT, ADMIN, 1))
    if floor == "nginx":
        # run.py's nginx proxy (proxy_pass on PORT), one worker in the foreground process.
        bench.define_nginx_proxy("icount-nginx", 1, PORT, ADMIN, None)
        conf = OUT / "icount-nginx" / "nginx.conf"
        if mode == "off":
            conf.write_text(re.sub(r"access_log [^;]*;", "access_log off;", conf.read_text()))
    up = OUT / "nginx-up"
    subprocess.run(["nginx", "-c", str(up / "nginx.conf"), "-p", str(up)], check=True)
    try:
        a = instructions(binary, mode, kind, path, n1, config, body_file, floor)
        b = instructions(binary, mode, kind, path, n2, config, body_file, floor)
    finally:
        subprocess.run(["nginx", "-s", "stop", "-c", str(up / "nginx.conf"), "-p", str(up)])
    what = f"proxy_pass, access log {mode}" if floor == "nginx" else \
        f"floor {floor}" if floor else f"log {mode}, {kind}"
    per = {k: (b[k] - a[k]) / (n2 - n1) for k in a}
    misses = ", ".join(f"{per[k]:,.0f} {k}" for k in ("I1mr", "D1mr", "D1mw") if k in per)
    print(f"{binary} {what}: {per['Ir']:,.0f} instructions/request"
          + (f" ({misses})" if misses else ""))


if __name__ == "__main__":
    main()
