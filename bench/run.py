#!/usr/bin/env python3
"""promptgate side by side with nginx and LiteLLM, in one run, on loopback only.

Run with `make bench` (which runs bench/setup.sh first). Everything listens on 127.0.0.1;
every load run is bounded in time. Stdlib only (LiteLLM runs from bench/.venv).

Knobs (environment): BENCH_DURATION (seconds per wrk run, default 3), BENCH_REPS (best-of-N,
default 3), BENCH_CONNS (wrk connections, default 32), BENCH_THREADS (promptgate `threads` =
nginx `worker_processes`, default 1), BENCH_PIN (1: proxies under test on CPU 0, load
generator and upstream on CPU 1; default 1 when there are 2+ CPUs), BENCH_LITELLM (0 to skip),
BENCH_RATE (fixed-rate target rps, default 1000), BENCH_ONLY (comma list of scenario ids:
1-6, fixed), PROMPTGATE_BIN (another promptgate binary, e.g. to compare a change).
"""

import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RUN = BENCH / ".run"
PROMPTGATE = Path(os.environ.get("PROMPTGATE_BIN", ROOT / "target" / "release" / "promptgate"))
LITELLM = BENCH / ".venv" / "bin" / "litellm"

DURATION = int(os.environ.get("BENCH_DURATION", "3"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
NCPU = os.cpu_count() or 1
PIN = os.environ.get("BENCH_PIN", "1" if NCPU >= 2 else "0") == "1"
WITH_LITELLM = os.environ.get("BENCH_LITELLM", "1") == "1"
RATE = int(os.environ.get("BENCH_RATE", "1000"))
ONLY = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}

HOST = "127.0.0.1"
P_UP = 28101  # nginx upstream: JSON (return 200) and SSE (static file)
P_UP_STATUS = 28109  # upstream's stub_status (counts requests: proves hits did not go upstream)
P_NGX_PASS = 28102  # nginx proxy_pass + upstream keepalive
P_NGX_CACHE = 28103  # nginx proxy_cache keyed on $request_uri|$request_body
P_PG = 28110  # promptgate, memory cache
P_PG_REDIS = 28111  # promptgate, Redis, no L1
P_PG_REDIS_L1 = 28112  # promptgate, Redis with L1
P_PG_LOG = 28113  # promptgate, memory cache, access log on (RUST_LOG=info, to a file)
P_REDIS = 28379
P_LITELLM = 28120

CHAT = "/v1/chat/completions"
# One credential for every target: promptgate uses scope: shared anyway; LiteLLM (1.108+) refuses
# to start without a master key, so this is it.
KEY = "sk-bench-4f1c2a9e7b3d5f608a1e2c4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b2d4f"
CPU_SUT = "0"  # proxies under test
CPU_LOAD = "1" if NCPU >= 2 else "0"  # wrk/h2load, the upstream, Redis

procs = []  # (name, Popen) we started; stopped at exit, by pid


def log(msg):
    print(msg, flush=True)


def pinned(cmd, cpu):
    return (["taskset", "-c", cpu] + cmd) if PIN else cmd


def start(name, cmd, cpu, env=None, out=None):
    out = out or open(RUN / f"{name}.log", "wb")
    p = subprocess.Popen(pinned(cmd, cpu), stdout=out, stderr=subprocess.STDOUT,
                         env={**os.environ, **(env or {})}, start_new_session=True)
    procs.append((name, p))
    return p


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 5
    for name, p in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port, timeout=60, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout}s")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a previous run is fine
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# Fixtures: a ~2 KB chat completion, a ~50-event SSE stream, a ~1 KB request, a 1 MiB request.

def fixtures():
    content = ("Caching LLM responses saves money and time: identical prompts are answered "
               "from memory instead of the provider. ") * 12
    response = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1732500000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.strip(),
                                              "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 212, "completion_tokens": 318, "total_tokens": 530,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "service_tier": "default",
        "system_fingerprint": "fp_bench0000",
    }
    response_json = json.dumps(response, separators=(",", ":"))
    events = []
    words = content.split()
    for i in range(48):
        delta = {"content": " " + words[i % len(words)]} if i else {"role": "assistant",
                                                                    "content": ""}
        chunk = {"id": "chatcmpl-bench-stream", "object": "chat.completion.chunk",
                 "created": 1732500000, "model": "gpt-4o-mini-2024-07-18",
                 "system_fingerprint": "fp_bench0000",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": None}]}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    events.append('data: {"id":"chatcmpl-bench-stream","object":"chat.completion.chunk",'
                  '"created":1732500000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,'
                  '"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n')
    events.append("data: [DONE]\n\n")
    sse = "".join(events)

    system = ("You are a helpful assistant for an online store. Answer briefly and politely, "
              "cite the order number when the customer gives one, and never invent policies. ")
    user = ("Hi! I ordered a pair of running shoes last week (order 48213) and they arrived in "
            "the wrong size. Can I exchange them for a size 43, and do I need to pay for the "
            "return shipping? Also, how long does an exchange usually take? ")
    req = {"model": "gpt-4o-mini",
           "messages": [{"role": "system", "content": system * 2},
                        {"role": "user", "content": user * 2}],
           "temperature": 0.2, "max_tokens": 512, "user": "bench"}
    req_1k = json.dumps(req)
    big = dict(req)
    filler = (user * ((1 << 20) // len(user) + 1))
    base = len(json.dumps({**req, "messages": [req["messages"][0],
                                               {"role": "user", "content": ""}]}))
    big["messages"] = [req["messages"][0], {"role": "user", "content": filler[:(1 << 20) - base]}]
    req_1m = json.dumps(big)
    stream_req = json.dumps({**req, "stream": True})
    return response_json, sse, req_1k, req_1m, stream_req


# ---------------------------------------------------------------------------------------------
# Configs

def nginx_conf(prefix, body):
    return f"""user root;
worker_processes {THREADS};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp_body;
  proxy_temp_path {prefix}/tmp_proxy;
  fastcgi_temp_path {prefix}/tmp_fcgi; uwsgi_temp_path {prefix}/tmp_uwsgi;
  scgi_temp_path {prefix}/tmp_scgi;
  keepalive_requests 1000000;
{body}
}}
"""


def write_configs(response_json, sse):
    for d in ["nginx-up", "nginx-proxy", "pg", "redis"]:
        (RUN / d).mkdir(parents=True, exist_ok=True)
    (RUN / "nginx-up" / "sse" / "v1" / "chat").mkdir(parents=True, exist_ok=True)
    (RUN / "nginx-up" / "sse" / "v1" / "chat" / "completions").write_text(sse)
    assert "$" not in response_json and "'" not in response_json and len(response_json) < 4000
    up = RUN / "nginx-up"
    (up / "nginx.conf").write_text(nginx_conf(up, f"""
  server {{
    listen {HOST}:{P_UP} reuseport backlog=4096;
    client_max_body_size 8m;
    # JSON: the fixed ~2 KB chat completion
    location = {CHAT} {{ default_type application/json; return 200 '{response_json}'; }}
    # SSE: a static ~50-event stream, POST allowed via the 405 trick
    location /sse/ {{ root {up}; default_type text/event-stream; error_page 405 =200 $uri; }}
  }}
  server {{ listen {HOST}:{P_UP_STATUS}; location / {{ stub_status; }} }}
"""))
    def cache_server(port, zone):
        return f"""  server {{
    listen {HOST}:{port} reuseport backlog=4096;
    client_max_body_size 8m;
    client_body_buffer_size 2m;   # the whole body in memory, so $request_body is set
    location / {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache {zone};
      proxy_cache_methods POST;
      proxy_cache_key "$request_uri|$request_body";
      proxy_cache_valid 200 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache $upstream_cache_status;
    }}
  }}"""
    px = RUN / "nginx-proxy"
    cache_dir = Path("/dev/shm/promptgate-bench-nginx-cache") if Path("/dev/shm").is_dir() \
        else px / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    (px / "nginx.conf").write_text(nginx_conf(px, f"""
  upstream up {{ server {HOST}:{P_UP}; keepalive 64; keepalive_requests 1000000; }}
  proxy_cache_path {cache_dir}/small levels=1:2 keys_zone=llm:16m max_size=256m inactive=1h
                   use_temp_path=off;
  server {{
    listen {HOST}:{P_NGX_PASS} reuseport backlog=4096;
    client_max_body_size 8m;
    client_body_buffer_size 2m;
    location / {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
{cache_server(P_NGX_CACHE, "llm")}
"""))

    def pg(listen, admin, cache):
        return f"""listen: "{HOST}:{listen}"
admin: "{HOST}:{admin}"
threads: {THREADS}
shutdown_grace: 1s
reload: {{ watch: false }}
upstreams:
  up: {{ url: "http://{HOST}:{P_UP}" }}
routes:
  - name: pass
    match: {{ path_prefix: /pass }}
    strip_prefix: true
    targets: [up]
    cache: {{ enabled: false }}
  - name: openai
    match: {{ path_prefix: /openai }}
    strip_prefix: true
    targets: [up]
  - name: sse
    match: {{ path_prefix: /sse }}
    strip_prefix: false
    targets: [up]
cache:
  enabled: true
  scope: shared
{cache}"""
    (RUN / "pg" / "memory.yaml").write_text(pg(P_PG, 28190, "  backend: memory\n"))
    (RUN / "pg" / "log.yaml").write_text(pg(P_PG_LOG, 28193, "  backend: memory\n"))
    redis = (f"  backend: redis\n  redis:\n    url: redis://{HOST}:{P_REDIS}\n"
             f"    timeout: 500ms\n    l1: {{l1}}\n")
    (RUN / "pg" / "redis.yaml").write_text(pg(P_PG_REDIS, 28191, redis.replace("{l1}", "false")))
    (RUN / "pg" / "redis-l1.yaml").write_text(pg(P_PG_REDIS_L1, 28192,
                                                 redis.replace("{l1}", "true")))
    (RUN / "litellm.yaml").write_text(f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://{HOST}:{P_UP}/v1
      api_key: sk-bench
litellm_settings:
  cache: true
  cache_params:
    type: local
  telemetry: false
  drop_params: true
general_settings:
  master_key: {KEY}
""")


# ---------------------------------------------------------------------------------------------
# Measuring

def upstream_requests():
    with urllib.request.urlopen(f"http://{HOST}:{P_UP_STATUS}/", timeout=5) as r:
        text = r.read().decode()
    # "server accepts handled requests\n A H R" — minus this request itself
    return int(text.splitlines()[2].split()[2])


def post(port, path, body, headers=None, timeout=30):
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body.encode(),
                                 method="POST",
                                 headers={"content-type": "application/json",
                                          "authorization": f"Bearer {KEY}",
                                          **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def wrk(port, path, body_file, conns=CONNS, duration=DURATION, header=""):
    cmd = pinned(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
                  "-s", str(BENCH / "post.lua"), f"http://{HOST}:{port}{path}"], CPU_LOAD)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                         env={**os.environ, "BENCH_BODY": str(body_file), "BENCH_KEY": KEY,
                              "BENCH_HEADER": header}).stdout
    m = re.search(r"BENCH_JSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk gave no result:\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in ["connect_errors", "read_errors", "write_errors",
                                     "status_errors", "timeouts"])
    return r


def cpu_ticks(pids):
    """utime + stime of each process (all its threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total


def tree(pid):
    """pid and its children (nginx workers, uvicorn workers)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(k) for k in kids.split()]


TICK = os.sysconf("SC_CLK_TCK")
SERVER_PIDS = {}  # port -> pid of the server under test (its children are added)


class Target:
    def __init__(self, sid, label, port, path, body, header="", expect_upstream=None,
                 conns=None):
        self.sid, self.label, self.port, self.path, self.body = sid, label, port, path, body
        self.header, self.expect_upstream, self.conns = header, expect_upstream, conns
        self.runs = []


def measure_group(group):
    """Alternates A/B/C runs REPS times; keeps every run, reports the best (highest rps)."""
    for t in group:
        wrk(t.port, t.path, t.body, conns=t.conns or CONNS, duration=1, header=t.header)  # warm
    for rep in range(REPS):
        for t in group:
            before = upstream_requests()
            pids = tree(SERVER_PIDS[t.port])
            ticks = cpu_ticks(pids)
            r = wrk(t.port, t.path, t.body, conns=t.conns or CONNS, header=t.header)
            used = (cpu_ticks(pids) - ticks) / TICK
            r["upstream_calls"] = upstream_requests() - before - 1
            # CPU seconds the server under test spent per request: robust to other load on
            # the machine, unlike rps (which is what the other builds here take away).
            r["cpu_us_per_req"] = used * 1e6 / r["requests"] if r["requests"] else 0
            r["load1"] = os.getloadavg()[0]
            t.runs.append(r)
            log(f"  {t.sid:<22} {t.label:<34} rep {rep + 1}: {r['rps']:>9.0f} rps  "
                f"p50 {r['p50'] / 1000:6.3f} ms  p99 {r['p99'] / 1000:7.3f} ms  "
                f"cpu {r['cpu_us_per_req']:5.0f} us/req  err {r['errors']}  "
                f"upstream calls {r['upstream_calls']}  "
                f"load {r['load1']:.2f}")


def best(t):
    return max(t.runs, key=lambda r: r["rps"]) if t.runs else None


def rss_kb(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def nginx_rss_kb(master_pid):
    pids = [master_pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()]
    return sum(rss_kb(p)["VmRSS"] for p in pids)


def read_http_response(sock, buf=b""):
    """Reads one HTTP/1.1 response; returns (time first byte arrived, head, body, rest)."""
    first = None
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("connection closed")
        if first is None:
            first = time.perf_counter()
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    if first is None:
        first = time.perf_counter()
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            buf += sock.recv(65536)
        return first, headers, buf[:n], buf[n:]
    body = b""
    while True:  # chunked
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        size_line, buf = buf.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            buf += sock.recv(65536)
        body += buf[:size]
        buf = buf[size + 2:]
        if size == 0:
            return first, headers, body, buf


def ttfb(port, path, body_fn, n):
    """Sequential requests on one keep-alive connection: time to the response's first byte and
    to its last byte, in ms (client-side, Python; the same client for every target)."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    firsts, lasts, rest, statuses = [], [], b"", {}
    for i in range(n):
        body = body_fn(i).encode()
        req = (f"POST {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\n"
               f"content-type: application/json\r\nauthorization: Bearer {KEY}\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
        t0 = time.perf_counter()
        sock.sendall(req)
        first, headers, resp, rest = read_http_response(sock, rest)
        t1 = time.perf_counter()
        firsts.append((first - t0) * 1000)
        lasts.append((t1 - t0) * 1000)
        c = headers.get("x-promptgate-cache", "-")
        statuses[c] = statuses.get(c, 0) + 1
        assert resp.rstrip().endswith(b"data: [DONE]"), resp[-100:]
    sock.close()
    return firsts, lasts, statuses


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def h2load_fixed_rate(port, path, body_file, rate, duration=10):
    clients = 50
    per_client = max(1, rate // clients)
    logf = RUN / f"h2load-{port}.tsv"
    logf.unlink(missing_ok=True)
    cmd = pinned(["h2load", "--h1", "-t1", f"-c{clients}", f"--rps={per_client}",
                  f"-D{duration}", "--warm-up-time=1", "-d", str(body_file),
                  "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}",
                  f"--log-file={logf}", f"http://{HOST}:{port}{path}"], CPU_LOAD)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rows = [line.split("\t") for line in logf.read_text().splitlines() if line.strip()]
    lat = [int(r[2]) / 1000 for r in rows]
    ok = sum(1 for r in rows if r[1] == "200")
    span = (max(int(r[0]) for r in rows) - min(int(r[0]) for r in rows)) / 1e6 if rows else 1
    m = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    return {"requests": len(rows), "ok": ok, "achieved_rps": len(rows) / span if span else 0,
            "p50": pct(lat, 50), "p99": pct(lat, 99), "p999": pct(lat, 99.9), "max": max(lat),
            "h2load_rps": float(m.group(1)) if m else None, "load1": os.getloadavg()[0]}


# ---------------------------------------------------------------------------------------------

def tool_versions():
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            return f"unavailable ({e})"
    v = {
        "promptgate": first_line([str(PROMPTGATE), "--version"]),
        "rustc": first_line(["rustc", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "--version"]),
        "h2load": first_line(["h2load", "--version"]),
        "redis": first_line(["redis-server", "--version"]),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "git": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip(),
    }
    if WITH_LITELLM and LITELLM.exists():
        v["litellm"] = first_line([str(BENCH / ".venv" / "bin" / "python"), "-c",
                                   "import importlib.metadata as m;"
                                   "print('litellm', m.version('litellm'))"])
    return v


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"nproc": NCPU, "cpu": cpu, "mem_gb": round(int(mem) / 1024 / 1024, 1),
            "os": Path("/etc/debian_version").read_text().strip()
            if Path("/etc/debian_version").exists() else "?"}


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def main():
    if not PROMPTGATE.exists():
        sys.exit("no release build: run bench/setup.sh (or cargo build --release) first")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    ports = [P_UP, P_UP_STATUS, P_NGX_PASS, P_NGX_CACHE, P_PG, P_PG_REDIS, P_PG_REDIS_L1,
             P_PG_LOG, P_REDIS, P_LITELLM, 28190, 28191, 28192, 28193]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"ports already in use on {HOST}: {busy} (another bench running?)")
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    started_at = datetime.now(timezone.utc)
    log(f"promptgate bench: {NCPU} CPUs, load {os.getloadavg()}, threads/workers={THREADS}, "
        f"pin={'on' if PIN else 'off'}, {REPS}x{DURATION}s runs, {CONNS} connections")
    response_json, sse, req_1k, req_1m, stream_req = fixtures()
    b1k, b1m, bstream = RUN / "req-1k.json", RUN / "req-1m.json", RUN / "req-stream.json"
    b1k.write_text(req_1k)
    b1m.write_text(req_1m)
    bstream.write_text(stream_req)
    log(f"fixtures: response {len(response_json)} B, SSE {sse.count('data:')} events "
        f"{len(sse)} B, request {len(req_1k)} B and {len(req_1m)} B")
    write_configs(response_json, sse)

    # --- processes
    ng_up = start("nginx-up", ["nginx", "-p", str(RUN / "nginx-up"), "-c",
                               str(RUN / "nginx-up" / "nginx.conf"), "-g", "daemon off;"],
                  CPU_LOAD)
    ng_px = start("nginx-proxy", ["nginx", "-p", str(RUN / "nginx-proxy"), "-c",
                                  str(RUN / "nginx-proxy" / "nginx.conf"), "-g", "daemon off;"],
                  CPU_SUT)
    redis = start("redis", ["redis-server", "--bind", HOST, "--port", str(P_REDIS),
                            "--save", "", "--appendonly", "no", "--dir", str(RUN / "redis")],
                  CPU_LOAD)
    quiet = {"RUST_LOG": "warn"}
    pg = start("pg-memory", [str(PROMPTGATE), "run", "--config", str(RUN / "pg" / "memory.yaml")],
               CPU_SUT, env=quiet)
    for p, proc in [(P_UP, ng_up), (P_NGX_PASS, ng_px), (P_NGX_CACHE, ng_px), (P_REDIS, redis),
                    (P_PG, pg)]:
        wait_port(p, proc=proc)
    pg_redis = start("pg-redis", [str(PROMPTGATE), "run", "--config",
                                  str(RUN / "pg" / "redis.yaml")], CPU_SUT, env=quiet)
    pg_redis_l1 = start("pg-redis-l1", [str(PROMPTGATE), "run", "--config",
                                        str(RUN / "pg" / "redis-l1.yaml")], CPU_SUT, env=quiet)
    pg_log = start("pg-log", [str(PROMPTGATE), "run", "--config", str(RUN / "pg" / "log.yaml")],
                   CPU_SUT, env={"RUST_LOG": "info"})
    litellm = None
    litellm_note = ""
    if WITH_LITELLM and LITELLM.exists():
        t0 = time.time()
        litellm = start("litellm", [str(LITELLM), "--config", str(RUN / "litellm.yaml"),
                                    "--host", HOST, "--port", str(P_LITELLM),
                                    "--num_workers", "1"], CPU_SUT,
                        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                             "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_TELEMETRY": "False"})
    elif WITH_LITELLM:
        litellm_note = "LiteLLM not installed (bench/.venv missing): skipped"
    for p, proc in [(P_PG_REDIS, pg_redis), (P_PG_REDIS_L1, pg_redis_l1), (P_PG_LOG, pg_log)]:
        wait_port(p, proc=proc)
    SERVER_PIDS.update({P_UP: ng_up.pid, P_NGX_PASS: ng_px.pid, P_NGX_CACHE: ng_px.pid,
                        P_PG: pg.pid, P_PG_REDIS: pg_redis.pid, P_PG_REDIS_L1: pg_redis_l1.pid,
                        P_PG_LOG: pg_log.pid})
    if litellm is not None:
        SERVER_PIDS[P_LITELLM] = litellm.pid
    time.sleep(1.0)
    idle_rss = rss_kb(pg.pid)["VmRSS"]
    idle_nginx_rss = nginx_rss_kb(ng_px.pid)
    log(f"idle RSS: promptgate {idle_rss / 1024:.1f} MiB, nginx proxy (master+workers) "
        f"{idle_nginx_rss / 1024:.1f} MiB")
    if litellm is not None:
        try:
            wait_port(P_LITELLM, timeout=180, proc=litellm)
            litellm_start = time.time() - t0
            log(f"LiteLLM proxy up after {litellm_start:.1f}s")
            litellm_note = f"LiteLLM proxy started in {litellm_start:.0f}s"
        except RuntimeError as e:
            litellm_note = f"LiteLLM proxy did not start: {e} (see bench/.run/litellm.log)"
            log(litellm_note)
            litellm = None

    # --- sanity + warm-up: hits must be hits
    for port, path in [(P_UP, CHAT), (P_NGX_PASS, CHAT), (P_PG, "/pass" + CHAT)]:
        st, _, body = post(port, path, req_1k)
        assert st == 200 and json.loads(body)["object"] == "chat.completion", (port, body[:200])
    for body in [req_1k, req_1m]:
        for port in [P_PG, P_PG_REDIS, P_PG_REDIS_L1, P_PG_LOG]:
            post(port, "/openai" + CHAT, body)
    post(P_NGX_CACHE, CHAT, req_1k)
    post(P_PG, "/sse" + CHAT, stream_req)
    post(P_NGX_CACHE, "/sse" + CHAT, stream_req)
    time.sleep(1.0)  # Redis writes happen in the background
    for port in [P_PG, P_PG_REDIS, P_PG_REDIS_L1, P_PG_LOG]:
        for body in [req_1k, req_1m]:
            _, h, _ = post(port, "/openai" + CHAT, body)
            assert h.get("x-promptgate-cache") == "HIT", (port, h)
    _, h, _ = post(P_PG, "/sse" + CHAT, stream_req)
    assert h.get("x-promptgate-cache") == "HIT", h
    for body, path in [(req_1k, CHAT), (stream_req, "/sse" + CHAT)]:
        _, h, _ = post(P_NGX_CACHE, path, body)
        assert h.get("x-cache") == "HIT", h
    if litellm is not None:
        try:
            for body in [req_1k, req_1m]:
                post(P_LITELLM, CHAT, body, timeout=120)
            time.sleep(0.5)
            before = upstream_requests()
            post(P_LITELLM, CHAT, req_1k)
            if upstream_requests() - before - 1 != 0:
                litellm_note += "; WARNING: LiteLLM repeat went upstream (cache not hit)"
        except Exception as e:  # noqa: BLE001
            litellm_note += f"; LiteLLM request failed: {e}"
            litellm = None
    log("warm-up done: every hit target answered HIT")

    # --- throughput scenarios
    S = {}

    def group(sid, *targets):
        if ONLY and sid.split("-")[0] not in ONLY:
            return
        log(f"[{sid}]")
        measure_group(list(targets))
        S[sid] = list(targets)

    for size, bf in [("1k", b1k), ("1m", b1m)]:
        group(f"1-direct-{size}", Target("1", "direct to upstream (nginx return 200)", P_UP,
                                         CHAT, bf))
        group(f"2-pass-{size}",
              Target("2", "promptgate pass-through", P_PG, "/pass" + CHAT, bf),
              Target("2", "nginx proxy_pass keepalive", P_NGX_PASS, CHAT, bf))
        hit = [Target("3", "promptgate hit (memory)", P_PG, "/openai" + CHAT, bf)]
        if size == "1k":
            # nginx cannot serve a hit keyed on a 1 MiB body: its cache file header stores the
            # key's and body's offsets as 16-bit numbers (ngx_http_file_cache_header_t), so an
            # entry whose key is over 64 KiB is written but never read back ("cache file is too
            # small" in error.log), whatever proxy_buffer_size is.
            hit.append(Target("3", "nginx proxy_cache hit", P_NGX_CACHE, CHAT, bf))
        if litellm is not None:
            hit.append(Target("3", "LiteLLM proxy hit (local cache)", P_LITELLM, CHAT, bf,
                              conns=min(CONNS, 8)))
        group(f"3-hit-{size}", *hit)
        group(f"4-redis-{size}",
              Target("4", "promptgate hit (Redis, no L1)", P_PG_REDIS, "/openai" + CHAT, bf),
              Target("4", "promptgate hit (Redis + L1)", P_PG_REDIS_L1, "/openai" + CHAT, bf),
              Target("4", "promptgate hit (memory, access log on)", P_PG_LOG, "/openai" + CHAT,
                     bf))
    group("5-replay",
          Target("5", "direct SSE (static, 50 events)", P_UP, "/sse" + CHAT, bstream),
          Target("5", "promptgate SSE replay (hit)", P_PG, "/sse" + CHAT, bstream),
          Target("5", "nginx proxy_cache SSE hit", P_NGX_CACHE, "/sse" + CHAT, bstream))

    # --- streaming TTFB on a miss (unique body per request: key + record + store, as a miss)
    ttfb_rows = []
    if not ONLY or "5" in ONLY:
        log("[5-ttfb] time to first byte, sequential, 300 requests each, alternating x3")
        n = 100
        base = json.loads(stream_req)

        def unique(tag):
            def f(i):
                b = dict(base)
                b["messages"] = base["messages"] + [{"role": "user",
                                                     "content": f"{tag} {time.time_ns()} {i}"}]
                return json.dumps(b)
            return f
        acc = {"direct": ([], []), "promptgate miss": ([], []), "promptgate hit": ([], []),
               "nginx proxy_pass": ([], [])}
        for rep in range(3):
            for name, port, path, fn in [
                    ("direct", P_UP, "/sse" + CHAT, unique("d")),
                    ("promptgate miss", P_PG, "/sse" + CHAT, unique(f"m{rep}")),
                    ("promptgate hit", P_PG, "/sse" + CHAT, lambda i: stream_req),
                    ("nginx proxy_pass", P_NGX_PASS, "/sse" + CHAT, unique("n"))]:
                f, last, st = ttfb(port, path, fn, n)
                acc[name][0].extend(f)
                acc[name][1].extend(last)
                if name.startswith("promptgate"):
                    want = "MISS" if "miss" in name else "HIT"
                    assert st == {want: n}, (name, st)
        for name, (f, last) in acc.items():
            ttfb_rows.append({"name": name, "ttfb_p50": pct(f, 50), "ttfb_p99": pct(f, 99),
                              "last_p50": pct(last, 50), "last_p99": pct(last, 99)})
            log(f"  {name:<18} TTFB p50 {pct(f, 50):.3f} ms p99 {pct(f, 99):.3f} ms; "
                f"full stream p50 {pct(last, 50):.3f} ms")

    # --- latency at a fixed rate (h2load --rps: 50 connections x rate/50 each)
    fixed = []
    if not ONLY or "fixed" in ONLY:
        log(f"[fixed-rate] {RATE} rps for 10 s, 1 KB body, hit path")
        for name, port, path in [("direct to upstream (baseline)", P_UP, CHAT),
                                 ("promptgate hit (memory)", P_PG, "/openai" + CHAT),
                                 ("nginx proxy_cache hit", P_NGX_CACHE, CHAT),
                                 ("promptgate hit (memory)", P_PG, "/openai" + CHAT),
                                 ("nginx proxy_cache hit", P_NGX_CACHE, CHAT)]:
            r = h2load_fixed_rate(port, path, b1k, RATE)
            r["name"] = name
            fixed.append(r)
            log(f"  {name:<26} {r['achieved_rps']:.0f} rps achieved, {r['ok']}/{r['requests']} "
                f"200, p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms p99.9 {r['p999']:.3f} ms "
                f"max {r['max']:.3f} ms  load {r['load1']:.2f}")

    # --- RSS under 1k concurrent connections (hit path)
    rss = {"promptgate_idle_kb": idle_rss, "nginx_idle_kb": idle_nginx_rss}
    if not ONLY or "6" in ONLY:
        log("[6-rss] 1000 connections for 6 s on the hit path")
        rss["promptgate_before_kb"] = rss_kb(pg.pid)["VmRSS"]
        for name, port, path, pid, fn in [
                ("promptgate", P_PG, "/openai" + CHAT, pg.pid, lambda: rss_kb(pg.pid)["VmRSS"]),
                ("nginx", P_NGX_CACHE, CHAT, ng_px.pid, lambda: nginx_rss_kb(ng_px.pid))]:
            samples = []
            cmd = pinned(["wrk", "-t1", "-c1000", "-d6s", "--timeout", "10s", "-s",
                          str(BENCH / "post.lua"), f"http://{HOST}:{port}{path}"], CPU_LOAD)
            w = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env={**os.environ, "BENCH_BODY": str(b1k), "BENCH_KEY": KEY})
            for _ in range(10):
                time.sleep(0.5)
                samples.append(fn())
            out = w.communicate(timeout=60)[0]
            m = re.search(r"BENCH_JSON (\{.*\})", out)
            r = json.loads(m.group(1)) if m else {}
            rss[f"{name}_1k_conns_kb"] = max(samples)
            rss[f"{name}_1k_conns_rps"] = r.get("requests", 0) / (r.get("duration_us", 1) / 1e6)
            rss[f"{name}_1k_conns_p99_ms"] = r.get("p99", 0) / 1000
            rss[f"{name}_1k_conns_errors"] = sum(
                r.get(k, 0) for k in ["connect_errors", "read_errors", "write_errors",
                                      "status_errors", "timeouts"])
            log(f"  {name:<12} RSS max {max(samples) / 1024:.1f} MiB under 1000 connections, "
                f"{rss[f'{name}_1k_conns_rps']:.0f} rps, p99 {rss[f'{name}_1k_conns_p99_ms']:.2f}"
                f" ms, errors {rss[f'{name}_1k_conns_errors']}")
        rss["promptgate_after_kb"] = rss_kb(pg.pid)["VmRSS"]

    finished_at = datetime.now(timezone.utc)
    report = render(S, ttfb_rows, fixed, rss, litellm_note, started_at, finished_at)
    print()
    print(report)
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "latest.md").write_text(report)
    (BENCH / "results" / "latest.json").write_text(json.dumps({
        "scenarios": {k: [{"label": t.label, "runs": t.runs} for t in v] for k, v in S.items()},
        "ttfb": ttfb_rows, "fixed_rate": fixed, "rss": rss, "note": litellm_note,
        "machine": machine(), "versions": tool_versions(),
        "started": started_at.isoformat(), "finished": finished_at.isoformat(),
    }, indent=1))
    log(f"written: bench/results/latest.md, bench/results/latest.json")


def render(S, ttfb_rows, fixed, rss, note, started_at, finished_at):
    m = machine()
    v = tool_versions()
    L = []
    L.append(f"Run {started_at:%Y-%m-%d %H:%M} UTC, {(finished_at - started_at).seconds}s; "
             f"{m['nproc']} x {m['cpu']}, {m['mem_gb']} GB, Debian {m['os']}; "
             f"load at end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
             f"{os.getloadavg()[2]:.2f}")
    L.append(f"Settings: promptgate threads={THREADS} = nginx worker_processes={THREADS}, "
             f"LiteLLM --num_workers 1; pinning {'on (proxies CPU 0; wrk, upstream, Redis CPU 1)' if PIN else 'off'}; "
             f"wrk -t1 -c{CONNS} (LiteLLM -c{min(CONNS, 8)}), {DURATION}s runs, best of {REPS}, "
             f"alternating; promptgate RUST_LOG=warn (nginx access_log off) unless noted. "
             f"rps, p50, p99: the best run (highest rps); CPU µs/req: the server's own CPU time "
             f"(/proc/PID/stat utime+stime, nginx workers included) per request, lowest run; "
             f"upstream calls: during the best run (0 = every request was a hit).")
    L.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    if note:
        L.append(f"Note: {note}")
    L.append("")
    L.append("| scenario | target | rps | p50 ms | p99 ms | CPU µs/req | upstream calls | "
             "rps vs nginx | rps vs LiteLLM | CPU/req vs nginx |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sid, targets in S.items():
        ng = next((best(t) for t in targets if t.label.startswith("nginx")), None)
        ll = next((best(t) for t in targets if t.label.startswith("LiteLLM")), None)
        for t in targets:
            b = best(t)
            is_pg = t.label.startswith("promptgate")
            cpu = min(r["cpu_us_per_req"] for r in t.runs)
            ng_cpu = next((min(r["cpu_us_per_req"] for r in x.runs) for x in
                           (S.get(sid.replace("4-redis", "3-hit"), []) if sid.startswith("4-")
                            else targets) if x.label.startswith("nginx")), None)
            L.append(f"| {sid} | {t.label} | {b['rps']:.0f} | {b['p50'] / 1000:.3f} | "
                     f"{b['p99'] / 1000:.3f} | {cpu:.0f} | {b['upstream_calls']} | "
                     # rps is compared within a group only: runs minutes apart see different
                     # load from the rest of the machine; CPU per request does not.
                     f"{ratio(b['rps'], ng['rps']) if is_pg and ng and not sid.startswith('4-') else ''} | "
                     f"{ratio(b['rps'], ll['rps']) if is_pg and ll else ''} | "
                     f"{ratio(cpu, ng_cpu) if is_pg and ng_cpu else ''} |")
    if ttfb_rows:
        L.append("")
        L.append("Streaming (SSE, 50 events), sequential requests on one keep-alive connection "
                 "(Python client), 300 each; a miss has a unique body (key, record, store):")
        L.append("")
        L.append("| target | TTFB p50 ms | TTFB p99 ms | whole stream p50 ms | whole stream p99 ms |")
        L.append("|---|---:|---:|---:|---:|")
        for r in ttfb_rows:
            L.append(f"| {r['name']} | {r['ttfb_p50']:.3f} | {r['ttfb_p99']:.3f} | "
                     f"{r['last_p50']:.3f} | {r['last_p99']:.3f} |")
    if fixed:
        L.append("")
        L.append(f"Latency at a fixed rate ({RATE} rps target: h2load --h1 -c50 --rps "
                 f"{RATE // 50}, 10 s, per-request log), 1 KB body, hit path, two runs each, after a "
                 f"baseline straight to the upstream:")
        L.append("")
        L.append("| target | achieved rps | 200s | p50 ms | p99 ms | p99.9 ms | max ms | load |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in fixed:
            L.append(f"| {r['name']} | {r['achieved_rps']:.0f} | {r['ok']}/{r['requests']} | "
                     f"{r['p50']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} | {r['max']:.3f} | "
                     f"{r['load1']:.2f} |")
    L.append("")
    L.append(f"RSS: promptgate idle {rss['promptgate_idle_kb'] / 1024:.1f} MiB "
             f"(nginx proxy master+worker idle {rss['nginx_idle_kb'] / 1024:.1f} MiB)")
    if "promptgate_1k_conns_kb" in rss:
        L.append(f"RSS under 1000 concurrent connections (hit path): promptgate "
                 f"{rss['promptgate_1k_conns_kb'] / 1024:.1f} MiB "
                 f"({rss['promptgate_1k_conns_rps']:.0f} rps, p99 "
                 f"{rss['promptgate_1k_conns_p99_ms']:.1f} ms, errors "
                 f"{rss['promptgate_1k_conns_errors']}), nginx "
                 f"{rss['nginx_1k_conns_kb'] / 1024:.1f} MiB "
                 f"({rss['nginx_1k_conns_rps']:.0f} rps, p99 {rss['nginx_1k_conns_p99_ms']:.1f} "
                 f"ms, errors {rss['nginx_1k_conns_errors']}); promptgate just before that test "
                 f"{rss['promptgate_before_kb'] / 1024:.1f} MiB, after it "
                 f"{rss['promptgate_after_kb'] / 1024:.1f} MiB")
    return "\n".join(L) + "\n"


def profile():
    """perf record (cpu-clock: this VM has no hardware counters) of promptgate under wrk: the
    memory-hit path with the 1 KB and the 1 MiB body, and pass-through with 1 KB; self and
    inclusive profiles in bench/results/profile-*.txt."""
    if not shutil.which("perf"):
        sys.exit("perf not found: apt-get install linux-perf")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    atexit.register(stop_all)
    response_json, sse, req_1k, req_1m, stream_req = fixtures()
    write_configs(response_json, sse)
    (RUN / "req-1k.json").write_text(req_1k)
    (RUN / "req-1m.json").write_text(req_1m)
    ng_up = start("nginx-up", ["nginx", "-p", str(RUN / "nginx-up"), "-c",
                               str(RUN / "nginx-up" / "nginx.conf"), "-g", "daemon off;"],
                  CPU_LOAD)
    pg = start("pg-memory", [str(PROMPTGATE), "run", "--config", str(RUN / "pg" / "memory.yaml")],
               CPU_SUT, env={"RUST_LOG": "warn"})
    wait_port(P_UP, proc=ng_up)
    wait_port(P_PG, proc=pg)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    for size, route, body in [("1k", "/openai", req_1k), ("1m", "/openai", req_1m),
                              ("pass-1k", "/pass", req_1k)]:
        post(P_PG, route + CHAT, body)
        _, h, _ = post(P_PG, route + CHAT, body)
        assert h.get("x-promptgate-cache") == ("HIT" if route == "/openai" else None), h
        data = RUN / f"perf-{size}.data"
        w = subprocess.Popen(pinned(["wrk", "-t1", f"-c{CONNS}", "-d8s", "-s",
                                     str(BENCH / "post.lua"),
                                     f"http://{HOST}:{P_PG}{route}{CHAT}"], CPU_LOAD),
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "BENCH_BODY": str(RUN / f"req-{size[-2:]}.json"),
                                  "BENCH_KEY": KEY})
        time.sleep(1)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g",
                        "--call-graph", "dwarf,32768", "-p", str(pg.pid), "-o", str(data),
                        "--", "sleep", "4"], capture_output=True, check=True)
        r = json.loads(re.search(r"BENCH_JSON (\{.*\})", w.communicate()[0]).group(1))
        flat = subprocess.run(["perf", "report", "-i", str(data), "--no-children",
                               "--sort", "symbol", "--stdio", "-g", "none",
                               "--percent-limit", "0.7"],
                              capture_output=True, text=True).stdout
        tree = subprocess.run(["perf", "report", "-i", str(data), "--children", "--sort",
                               "symbol", "--stdio", "-g", "none", "--percent-limit", "3"],
                              capture_output=True, text=True).stdout
        text = (f"# promptgate {'memory hit' if route == '/openai' else 'pass-through'}, "
                f"{size[-2:]} body, wrk -c{CONNS}: "
                f"{r['requests'] / (r['duration_us'] / 1e6):.0f} rps (under perf), "
                f"load {os.getloadavg()[0]:.2f}\n\n## self time\n{flat}\n"
                f"## inclusive (children)\n{tree}")
        (out_dir / f"profile-{size}.txt").write_text(text)
        log(f"written bench/results/profile-{size}.txt")


if __name__ == "__main__":
    if sys.argv[1:] == ["--profile"]:
        profile()
    else:
        main()
