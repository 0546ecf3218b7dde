#!/usr/bin/env python3
"""h2 versus HTTP/1.1 to an HTTPS upstream: 200 concurrent streams through promptgate, time to
first byte (p50/p99) and connections opened (issue 22, item 6). Loopback only, ~1 minute.

- Upstream: nginx (one worker; TLS with a CA made by openssl for the run; h2 and HTTP/1.1 by
  ALPN on one port) in front of the mock upstream (examples/mock_upstream), which streams 20 SSE
  events 25 ms apart (about 0.5 s a stream), so the streams of a wave are all open together.
- promptgate (release build, threads: 0, RUST_LOG=warn, cache off): three upstreams on that
  same nginx port with the same CA: `h2` (`http_version: auto`, negotiates h2) and `h1`
  (`http_version: h1`), both with the default pool (max_connections 100, max_idle 50,
  max_streams 100), and `h1-wide` (`h1` with max_connections and max_idle 1000: HTTP/1.1 with
  a pool as wide as the load).
- Client: C (200) HTTP/1.1 connections to promptgate, opened first; then one streaming chat
  request on each, all written at once (a wave). TTFB = request written -> first byte of the
  body (the first SSE event). Every stream is read to its end and must end in `data: [DONE]`.
- Waves alternate h2 / h1 / h1-wide. The first wave of each is cold (no connection to the upstream yet);
  the next N are warm (what the pool kept from the wave before).
- Connections opened: promptgate's `GET /stats` `connections_opened` per upstream, checked
  against nginx's access log (distinct `$connection` per `$server_protocol`). CPU: promptgate's
  utime + stime (/proc) over the wave.

Usage: python3 bench/h2.py [--waves N] [--concurrency C] [--out FILE]
Needs nginx, openssl and `cargo build --release --bin promptgate --example mock_upstream`
(PROMPTGATE_BIN / MOCK_BIN override the binaries).
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS, CHUNK_DELAY_MS = 20, 25
MODES = ("h2", "h1", "h1-wide")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {timeout} s")


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=promptgate bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl(d, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


def nginx_conf(d, port, backend):
    return f"""worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  log_format bench '$server_protocol $connection';
  access_log {d}/access.log bench;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def promptgate_yaml(listen, admin, upstream_port, ca):
    up = f'url: "https://127.0.0.1:{upstream_port}", tls: {{ ca_file: "{ca}" }}'
    return f"""listen: "127.0.0.1:{listen}"
admin: "127.0.0.1:{admin}"
threads: 0
upstreams:
  h2: {{ {up} }}
  h1: {{ {up}, http_version: h1 }}
  h1-wide: {{ {up}, http_version: h1, pool: {{ max_connections: 1000, max_idle: 1000 }} }}
routes:
  - {{ name: h2, match: {{ path_prefix: /h2 }}, strip_prefix: true, targets: [h2], cache: {{ enabled: false }}, retry: {{ attempts: 1 }} }}
  - {{ name: h1, match: {{ path_prefix: /h1 }}, strip_prefix: true, targets: [h1], cache: {{ enabled: false }}, retry: {{ attempts: 1 }} }}
  - {{ name: h1-wide, match: {{ path_prefix: /h1-wide }}, strip_prefix: true, targets: [h1-wide], cache: {{ enabled: false }}, retry: {{ attempts: 1 }} }}
"""


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def opened(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5) as r:
        stats = json.load(r)
    return {u["name"]: (u["connections_opened"], u["protocol"]) for u in stats["upstreams"]}


async def stream(port, path, body, ready, go):
    """One streaming request on its own connection: (TTFB seconds, complete)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nx-mock-events: {EVENTS}\r\n"
            f"x-mock-chunk-delay-ms: {CHUNK_DELAY_MS}\r\nConnection: close\r\n\r\n").encode()
    ready.release()
    await go.wait()
    started = time.perf_counter()
    writer.write(head + body)
    await writer.drain()
    response = await reader.readuntil(b"\r\n\r\n")
    first = await reader.read(1)
    ttfb = time.perf_counter() - started
    rest = await reader.read()
    writer.close()
    ok = response.startswith(b"HTTP/1.1 200") and first and b"data: [DONE]" in rest
    return ttfb, bool(ok)


async def wave(port, path, n, tag):
    ready, go = asyncio.Semaphore(0), asyncio.Event()
    bodies = [json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": f"{tag} prompt {i}"}]}).encode() for i in range(n)]
    tasks = [asyncio.create_task(stream(port, path, b, ready, go)) for b in bodies]
    for _ in range(n):  # every client connection open before the first request goes out
        await ready.acquire()
    go.set()
    return await asyncio.gather(*tasks)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--waves", type=int, default=5, help="warm waves per protocol (default 5)")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench/results/h2.md"))
    args = ap.parse_args()
    pg_bin = os.environ.get("PROMPTGATE_BIN", str(ROOT / "target/release/promptgate"))
    mock_bin = os.environ.get("MOCK_BIN", str(ROOT / "target/release/examples/mock_upstream"))
    for b in (pg_bin, mock_bin):
        if not Path(b).exists():
            sys.exit(f"{b} missing: cargo build --release --bin promptgate --example mock_upstream")
    for tool in ("nginx", "openssl"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is needed")

    d = Path(tempfile.mkdtemp(prefix="promptgate-h2-bench."))
    procs = []
    try:
        make_certificates(d)
        mock = subprocess.Popen([mock_bin], stdout=subprocess.PIPE, text=True)
        procs.append(mock)
        mock_port = int(mock.stdout.readline())
        up_port, listen, admin = free_port(), free_port(), free_port()
        (d / "nginx.conf").write_text(nginx_conf(d, up_port, mock_port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-p", str(d), "-c", str(d / "nginx.conf"),
                                       "-e", str(d / "error.log")]))
        wait_port(up_port)
        (d / "promptgate.yaml").write_text(promptgate_yaml(listen, admin, up_port, d / "ca.pem"))
        pg = subprocess.Popen([pg_bin, "run", "--config", str(d / "promptgate.yaml")],
                              env={**os.environ, "RUST_LOG": "warn"},
                              stdout=open(d / "promptgate.log", "w"), stderr=subprocess.STDOUT)
        procs.append(pg)
        wait_port(listen)
        wait_port(admin)

        results = {m: {"cold": [], "warm": [], "cpu_cold": 0.0, "cpu_warm": 0.0,
                       "opened_cold": 0, "opened_warm": 0, "failed": 0, "wall": []}
                   for m in MODES}
        for i in range(args.waves + 1):
            for mode in MODES:
                phase = "cold" if i == 0 else "warm"
                before, cpu0, t0 = opened(admin)[mode][0], cpu_seconds(pg.pid), time.perf_counter()
                out = asyncio.run(wave(listen, f"/{mode}/v1/chat/completions",
                                       args.concurrency, f"{mode}{i}"))
                wall = time.perf_counter() - t0
                r = results[mode]
                r[phase] += [t for t, _ in out]
                r["failed"] += sum(1 for _, ok in out if not ok)
                r[f"cpu_{phase}"] += cpu_seconds(pg.pid) - cpu0
                r[f"opened_{phase}"] += opened(admin)[mode][0] - before
                r["wall"].append(wall)
                print(f"wave {i} {mode:<3} {phase}: TTFB p50 {pct([t for t, _ in out], 50)*1e3:7.1f} ms"
                      f"  p99 {pct([t for t, _ in out], 99)*1e3:7.1f} ms  wall {wall:.2f} s"
                      f"  opened {opened(admin)[mode][0] - before}", flush=True)
                time.sleep(0.3)
        protocols = {name: p for name, (_, p) in opened(admin).items()}
        time.sleep(0.5)
        logged = {}
        for line in (d / "access.log").read_text().splitlines():
            proto, conn = line.split()
            logged.setdefault(proto, set()).add(conn)

        load = os.getloadavg()[0]
        rows = []
        for mode in MODES:
            r = results[mode]
            rows.append(
                f"| {mode} ({protocols[mode]} negotiated) | {pct(r['cold'], 50)*1e3:.1f} / "
                f"{pct(r['cold'], 99)*1e3:.1f} | {pct(r['warm'], 50)*1e3:.1f} / "
                f"{pct(r['warm'], 99)*1e3:.1f} | {r['opened_cold']} | "
                f"{r['opened_warm'] / max(1, args.waves):.1f} | "
                f"{r['cpu_cold']*1e3:.0f} / {r['cpu_warm'] / max(1, args.waves)*1e3:.0f} | "
                f"{r['failed']} |")
        table = "\n".join([
            f"{args.concurrency} concurrent streams per wave, 1 cold + {args.waves} warm waves "
            f"per protocol, alternated; {EVENTS} events {CHUNK_DELAY_MS} ms apart. "
            f"Load average at the end: {load:.2f} on {os.cpu_count()} cores.",
            "",
            "| upstream protocol | TTFB cold p50 / p99 (ms) | TTFB warm p50 / p99 (ms) "
            "| connections opened, cold wave | per warm wave | promptgate CPU ms, cold / warm wave "
            "| failed streams |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"nginx saw {len(logged.get('HTTP/2.0', ()))} h2 and "
            f"{len(logged.get('HTTP/1.1', ()))} HTTP/1.1 connections in all.",
        ])
        print()
        print(table)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
