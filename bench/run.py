#!/usr/bin/env python3
"""promptgate side by side with nginx, the Pingora floors and LiteLLM, in one run, loopback only.

Run with `make bench` (which runs bench/setup.sh first) or directly:

    python3 bench/run.py                          # everything, ~8 minutes
    python3 bench/run.py --quick --only hit,pass  # the headline and pinned rows, ~2-3 minutes
    PROMPTGATE_BIN_B=/tmp/pg-new python3 bench/run.py --quick --only hit,pass   # A/B
    python3 bench/run.py --quick --only hit,pass \
        --b-rate-limit "requests_per_minute: 60000000, usd_per_day: 1000000"  # A/B: a limit

Sections, in the order they run and are reported:
  hit, pass  as shipped (the headline): promptgate with a conf/promptgate.yaml-like config at
             `threads: 0`, RUST_LOG unset (access log on, info) to a file outside the config's
             directory, unpinned; nginx with `worker_processes auto` and its access log on,
             `proxy_cache` (hit) and `proxy_pass` (pass-through); the Pingora floors
             (bench/floors) with as many threads; direct to the upstream; LiteLLM (hit).
             Then the same on one pinned core (CPU view): promptgate `threads: 1` (access log
             on, off, and written into the config's directory), nginx `worker_processes 1`,
             floors on one thread; wrk and the upstream on the other core.
             Plus TTFB (sequential requests, one connection) for every hit/pass target.
  big        1 MiB request: pass-through and hit (as shipped)
  redis      hits from Redis, with and without the L1 (as shipped)
  sse        SSE replay hit vs nginx, and streaming TTFB on a miss (as shipped)
  fixed      latency at a fixed rate (h2load), hit path (as shipped)
  rss        RSS under 1,000 connections: closed loop (wrk) and rate-limited (h2load)

Options: --quick (2 s runs, TTFB 150 requests, no LiteLLM), --only LIST (sections above; also
BENCH_ONLY), --bin-b PATH (also PROMPTGATE_BIN_B): a second promptgate binary measured next to
the first in the same groups, alternated run by run, with B/A ratios; --b-rate-limit YAML (also
PROMPTGATE_B_RATE_LIMIT): B gets this `rate_limit` (flow-style fields) on its routes, and is
binary A unless --bin-b says otherwise (the cost of a configured limit); --profile (perf profile
of the hit path instead). Environment: PROMPTGATE_BIN (binary A, default target/release/
promptgate), FLOOR_BIN (default target/release/floor), BENCH_DURATION (s per wrk run, default
3), BENCH_REPS (best of N, default 3), BENCH_CONNS (wrk connections, default 32),
BENCH_LITELLM (0 to skip), BENCH_RATE (fixed-rate rps, default 1000), BENCH_PIN (0 to skip the
pinned rows). Everything listens on 127.0.0.1 and every load run is bounded in time. Stdlib
only (LiteLLM runs from bench/.venv).
"""

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RUN = BENCH / ".run"
LITELLM = BENCH / ".venv" / "bin" / "litellm"

HOST = "127.0.0.1"
CHAT = "/v1/chat/completions"
# One credential for every target: LiteLLM (1.108+) refuses to start without a master key.
KEY = "sk-bench-4f1c2a9e7b3d5f608a1e2c4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b2d4f"
NCPU = os.cpu_count() or 1
CPU_SUT = "0"  # pinned rows: the proxy under test
CPU_LOAD = "1" if NCPU >= 2 else "0"  # pinned rows: wrk/h2load and the upstream
ALL_CPUS = f"0-{NCPU - 1}"
SECTIONS = ["hit", "pass", "big", "redis", "sse", "fixed", "rss"]

P_UP, P_UP_STATUS = 28101, 28109  # nginx upstream (JSON + SSE); its stub_status (request count)
P_UP_H2 = 28108  # the same upstream's JSON over HTTP/2 by prior knowledge (h2c; floors' --h2)
P_REDIS, P_LITELLM = 28379, 28120


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 s runs, 150 TTFB requests per target, no LiteLLM")
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                    help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--bin-b", default=os.environ.get("PROMPTGATE_BIN_B", ""),
                    help="a second promptgate binary, measured next to the first (A/B)")
    ap.add_argument("--b-rate-limit", default=os.environ.get("PROMPTGATE_B_RATE_LIMIT", ""),
                    help="B's routes get `rate_limit: { THIS }` (B is binary A unless --bin-b)")
    ap.add_argument("--profile", action="store_true", help="perf profile of the hit path")
    a = ap.parse_args()
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    bad = only - set(SECTIONS)
    if bad:
        ap.error(f"unknown section(s) {sorted(bad)}; choose from {','.join(SECTIONS)}")
    return a, only


ARGS, ONLY = parse_args()
QUICK = ARGS.quick
# What we ship: `make release`'s build from a profile (bench/setup.sh makes it), unless
# BENCH_PGO=0 or there is none; then the plain release build.
_SHIPPED = ROOT / "target" / "pgo" / "promptgate"
_PLAIN = ROOT / "target" / "release" / "promptgate"
_USE_PGO = os.environ.get("BENCH_PGO", "1") == "1" and _SHIPPED.exists()
PROMPTGATE = Path(os.environ.get("PROMPTGATE_BIN", _SHIPPED if _USE_PGO else _PLAIN))
if PROMPTGATE == _SHIPPED and _PLAIN.exists() and \
        _SHIPPED.stat().st_mtime < _PLAIN.stat().st_mtime:
    print(f"bench: note: {_SHIPPED} is older than {_PLAIN}: `make release` builds it anew",
          file=sys.stderr)
B_RATE_LIMIT = ARGS.b_rate_limit.strip()
PROMPTGATE_B = Path(ARGS.bin_b) if ARGS.bin_b else (PROMPTGATE if B_RATE_LIMIT else None)
FLOOR = Path(os.environ.get("FLOOR_BIN", ROOT / "target" / "release" / "floor"))
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "3"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
WITH_LITELLM = os.environ.get("BENCH_LITELLM", "0" if QUICK else "1") == "1"
RATE = int(os.environ.get("BENCH_RATE", "1000"))
WITH_PINNED = os.environ.get("BENCH_PIN", "1") == "1" and NCPU >= 2
TTFB_N = 50 if QUICK else 100  # per target per round; 3 rounds


def want(section):
    return not ONLY or section in ONLY


procs = []  # (name, Popen) we started; stopped at exit, by pid
LOG_FILES = []  # access logs written during runs: emptied after each run (disk stays small)


def log(msg):
    print(msg, flush=True)


def on_cpus(cmd, cpus):
    return ["taskset", "-c", cpus] + cmd if cpus else cmd


def start(name, cmd, cpus=None, env=None, out=None, drop_env=()):
    out = out or RUN / "logs" / f"{name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    e = {k: v for k, v in os.environ.items() if k not in drop_env}
    e.update(env or {})
    # O_APPEND, so emptying the file between runs does not leave the writer past its end.
    p = subprocess.Popen(on_cpus(cmd, cpus), stdout=open(out, "ab"), stderr=subprocess.STDOUT,
                         env=e, start_new_session=True)
    procs.append((name, p))
    return p


def stop_all():
    for _, p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 5
    for _, p in reversed(procs):
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
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a previous run
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tree(pid):
    """pid and its children (nginx workers, uvicorn workers)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(k) for k in kids.split()]


def set_cpus(pid, cpus):
    """Moves a running server (every process and thread) to `cpus`."""
    for p in tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True)


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
# Servers under test. Each promptgate has its config alone in its own directory (the config
# watcher looks at that directory) and writes its log elsewhere unless the row says otherwise.

class Instance:
    def __init__(self, name, port, cpus, cmd, env=None, drop_env=(), log=None, admin=None):
        self.name, self.port, self.cpus, self.cmd = name, port, cpus, cmd
        self.env, self.drop_env, self.log, self.admin = env, drop_env, log, admin
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid


INSTANCES = {}  # name -> Instance
NGINX = {}  # name -> {"pass": port, "cache": port}


def promptgate_yaml(listen, admin, threads, backend="memory", rate_limit=""):
    """A config shaped like conf/promptgate.yaml (its defaults: per-credential scope, memory
    cache, reload watch on) with the bench's upstream and a route without cache for pass-through;
    `rate_limit` (flow-style fields) is set on every route when given."""
    limit = f"    rate_limit: {{ {rate_limit} }}\n" if rate_limit else ""
    cache = f"  backend: {backend}\n"
    if backend.startswith("redis"):
        l1 = "true" if backend == "redis-l1" else "false"
        cache = (f"  backend: redis\n  redis:\n    url: redis://{HOST}:{P_REDIS}\n"
                 f"    timeout: 500ms\n    l1: {l1}\n")
    return f"""listen: "{HOST}:{listen}"
admin: "{HOST}:{admin}"
threads: {threads}
shutdown_grace: 1s
upstreams:
  up:
    url: http://{HOST}:{P_UP}
routes:
  - name: pass
    match: {{ path_prefix: /pass }}
    strip_prefix: true
    targets: [up]
    cache: {{ enabled: false }}
{limit}  - name: openai
    match: {{ path_prefix: /openai }}
    strip_prefix: true
    targets: [up]
{limit}  - name: sse
    match: {{ path_prefix: /sse }}
    strip_prefix: false
    targets: [up]
{limit}cache:
  enabled: true
{cache}"""


def define_promptgate(name, binary, port, admin, threads, cpus, log_mode="file",
                      backend="memory", rate_limit=""):
    """log_mode: "file" (RUST_LOG unset, log outside the config's directory), "off"
    (RUST_LOG=warn: no access log), "confdir" (RUST_LOG unset, log inside the config's dir)."""
    d = RUN / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "promptgate.yaml"
    cfg.write_text(promptgate_yaml(port, admin, threads, backend, rate_limit))
    logf = d / "promptgate.log" if log_mode == "confdir" else RUN / "logs" / f"{name}.log"
    env = {"RUST_LOG": "warn"} if log_mode == "off" else {}
    inst = Instance(name, port, cpus, [str(binary), "run", "--config", str(cfg)], env=env,
                    drop_env=("RUST_LOG",), log=logf, admin=admin)
    if log_mode != "off":
        LOG_FILES.append(logf)
    INSTANCES[name] = inst
    return inst


def nginx_conf(prefix, workers, body, access_log=True):
    return f"""user root;
worker_processes {workers};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  {f"access_log {prefix}/access.log;" if access_log else "access_log off;"}
  client_body_temp_path {prefix}/tmp_body;
  proxy_temp_path {prefix}/tmp_proxy;
  fastcgi_temp_path {prefix}/tmp_fcgi; uwsgi_temp_path {prefix}/tmp_uwsgi;
  scgi_temp_path {prefix}/tmp_scgi;
  keepalive_requests 1000000;
{body}
}}
"""


def define_nginx_proxy(name, workers, p_pass, p_cache, cpus):
    px = RUN / name
    px.mkdir(parents=True, exist_ok=True)
    cache_dir = Path("/dev/shm") / f"promptgate-bench-{name}-cache" if Path("/dev/shm").is_dir() \
        else px / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    (px / "nginx.conf").write_text(nginx_conf(px, workers, f"""
  upstream up {{ server {HOST}:{P_UP}; keepalive 64; keepalive_requests 1000000; }}
  proxy_cache_path {cache_dir} levels=1:2 keys_zone=llm:16m max_size=256m inactive=1h
                   use_temp_path=off;
  server {{
    listen {HOST}:{p_pass} reuseport backlog=4096;
    client_max_body_size 8m;
    client_body_buffer_size 2m;
    location / {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
  server {{
    listen {HOST}:{p_cache} reuseport backlog=4096;
    client_max_body_size 8m;
    client_body_buffer_size 2m;   # the whole body in memory, so $request_body is set
    location / {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache llm;
      proxy_cache_methods POST;
      proxy_cache_key "$request_uri|$request_body";
      proxy_cache_valid 200 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
"""))
    LOG_FILES.append(px / "access.log")
    inst = Instance(name, p_pass, cpus, ["nginx", "-p", str(px), "-c", str(px / "nginx.conf"),
                                         "-g", "daemon off;"])
    INSTANCES[name] = inst
    NGINX[name] = {"pass": p_pass, "cache": p_cache}
    return inst


def define_floor(name, mode, port, threads, cpus):
    args = [str(FLOOR), mode, "--listen", f"{HOST}:{port}", "--threads", str(threads)]
    args += ["--body", str(RUN / "response.json")] if mode == "static" else \
        ["--upstream", f"{HOST}:{P_UP}"]
    inst = Instance(name, port, cpus, args)
    INSTANCES[name] = inst
    return inst


def write_upstream(response_json, sse):
    up = RUN / "nginx-up"
    (up / "sse" / "v1" / "chat").mkdir(parents=True, exist_ok=True)
    (up / "sse" / "v1" / "chat" / "completions").write_text(sse)
    assert "$" not in response_json and "'" not in response_json and len(response_json) < 4000
    (up / "nginx.conf").write_text(nginx_conf(up, 1, f"""
  server {{
    listen {HOST}:{P_UP} reuseport backlog=4096;
    client_max_body_size 8m;
    # JSON: the fixed ~2 KB chat completion
    location = {CHAT} {{ default_type application/json; return 200 '{response_json}'; }}
    # SSE: a static ~50-event stream, POST allowed via the 405 trick
    location /sse/ {{ root {up}; default_type text/event-stream; error_page 405 =200 $uri; }}
  }}
  server {{ listen {HOST}:{P_UP_STATUS}; location / {{ stub_status; }} }}
  # h2c (prior knowledge) for `bench/icount.py --floor MODE,--h2`: the same JSON answer
  server {{
    listen {HOST}:{P_UP_H2} http2;
    location = {CHAT} {{ default_type application/json; return 200 '{response_json}'; }}
  }}
""", access_log=False))
    INSTANCES["nginx-up"] = Instance("nginx-up", P_UP, None,
                                     ["nginx", "-p", str(up), "-c", str(up / "nginx.conf"),
                                      "-g", "daemon off;"])
    (RUN / "response.json").write_text(response_json)


def write_litellm():
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


def empty_logs():
    for f in LOG_FILES:
        try:
            os.truncate(f, 0)
        except OSError:
            pass


def wrk(port, path, body_file, conns, duration, cpus):
    cmd = on_cpus(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
                   "-s", str(BENCH / "post.lua"), f"http://{HOST}:{port}{path}"], cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                         env={**os.environ, "BENCH_BODY": str(body_file), "BENCH_KEY": KEY}
                         ).stdout
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


TICK = os.sysconf("SC_CLK_TCK")


class Target:
    """One row: a server (instance) answering one kind of request. `kind` names its role in
    the ratios: pg (promptgate A), pgb (promptgate B), nginx, floor, direct, litellm, other."""

    def __init__(self, label, kind, inst, port, path, body, conns=None, check=None,
                 server=None):
        self.label, self.kind, self.inst, self.port = label, kind, inst, port
        self.path, self.body, self.conns, self.check = path, body, conns, check
        self.server = server or label  # its line in the side-by-side table
        self.runs = []
        self.ttfb = None

    def best(self):
        return max(self.runs, key=lambda r: r["rps"]) if self.runs else None

    def cpu(self):
        return min(r["cpu_us_per_req"] for r in self.runs) if self.runs else None


def measure_group(sid, group, pinned):
    """Alternates the group's targets REPS times (after a 1 s warm-up each); keeps every run."""
    cpus = CPU_LOAD if pinned else None
    set_cpus(INSTANCES["nginx-up"].pid, CPU_LOAD if pinned else ALL_CPUS)
    log(f"[{sid}] {'pinned: servers CPU 0, wrk + upstream CPU 1' if pinned else 'unpinned'}, "
        f"load {os.getloadavg()[0]:.2f}")
    for t in group:
        wrk(t.port, t.path, t.body, t.conns or CONNS, 1, cpus)
    empty_logs()
    for rep in range(REPS):
        for t in group:
            before = upstream_requests()
            pids = tree(INSTANCES[t.inst].pid)
            ticks = cpu_ticks(pids)
            r = wrk(t.port, t.path, t.body, t.conns or CONNS, DURATION, cpus)
            used = (cpu_ticks(pids) - ticks) / TICK
            r["upstream_calls"] = upstream_requests() - before - 1
            # CPU seconds the server under test spent per request: robust to other load on
            # the machine, unlike rps (which is what other builds here take away).
            r["cpu_us_per_req"] = used * 1e6 / r["requests"] if r["requests"] else 0
            r["load1"] = os.getloadavg()[0]
            t.runs.append(r)
            empty_logs()
            log(f"  {t.label:<52} rep {rep + 1}: {r['rps']:>8.0f} rps  "
                f"p50 {r['p50'] / 1000:6.3f} ms  p99 {r['p99'] / 1000:7.3f} ms  "
                f"cpu {r['cpu_us_per_req']:5.1f} us/req  err {r['errors']}  "
                f"upstream {r['upstream_calls']}  load {r['load1']:.2f}")


def rss_kb(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def tree_rss_kb(pid):
    return sum(rss_kb(p)["VmRSS"] for p in tree(pid))


def read_http_response(sock, buf=b""):
    """Reads one HTTP/1.1 response; returns (time first byte arrived, headers, body, rest)."""
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
    headers[":status"] = lines[0].split()[1]
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


def ttfb(port, path, body_fn, n, check):
    """Sequential requests on one keep-alive connection: time to the response's first byte and
    to its last byte, in ms (client-side, Python; the same client for every target).
    `check(headers, body)` raises if an answer is not what the row claims."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    firsts, lasts, rest = [], [], b""
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
        check(headers, resp)
    sock.close()
    return firsts, lasts


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def h2load_fixed_rate(port, path, body_file, rate, duration=10, clients=50, name="fixed"):
    per_client = max(1, rate // clients)
    logf = RUN / f"h2load-{name}-{port}.tsv"
    logf.unlink(missing_ok=True)
    cmd = ["h2load", "--h1", "-t1", f"-c{clients}", f"--rps={per_client}",
           f"-D{duration}", "--warm-up-time=1", "-d", str(body_file),
           "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}",
           f"--log-file={logf}", f"http://{HOST}:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rows = [line.split("\t") for line in logf.read_text().splitlines() if line.strip()]
    lat = [int(r[2]) / 1000 for r in rows] or [0]
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
        "promptgate": f"{first_line([str(PROMPTGATE), '--version'])} ({PROMPTGATE})",
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
    if PROMPTGATE_B:
        v["promptgate B"] = f"{PROMPTGATE_B} ({first_line([str(PROMPTGATE_B), '--version'])})" + \
            (f", rate_limit: {{ {B_RATE_LIMIT} }}" if B_RATE_LIMIT else "")
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
    if not a or not b:
        return ""
    r = a / b
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.4f}×"


def check_hit(header):
    def check(headers, body):
        assert headers.get(header) == "HIT", (header, headers)
    return check


def check_answer(headers, body):
    assert headers[":status"] == "200" and json.loads(body)["object"] == "chat.completion", \
        (headers, body[:200])


def check_stream(headers, body):
    assert headers[":status"] == "200" and body.rstrip().endswith(b"data: [DONE]"), body[-100:]


def main():
    for b, what in [(PROMPTGATE, "PROMPTGATE_BIN"), (PROMPTGATE_B, "PROMPTGATE_BIN_B/--bin-b")]:
        if b is not None and not (b.is_file() and os.access(b, os.X_OK)):
            sys.exit(f"{what}: {b} is not an executable file "
                     f"(run bench/setup.sh, or cargo build --release)")
    with_floors = FLOOR.is_file()
    if not with_floors:
        log(f"no floor binary at {FLOOR} (bench/setup.sh builds it): floor rows skipped")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    shutil.rmtree(RUN, ignore_errors=True)
    (RUN / "logs").mkdir(parents=True)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    started_at = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    log(f"promptgate bench: {NCPU} CPUs, load {load_start}, sections "
        f"{','.join(s for s in SECTIONS if want(s))}, {REPS}x{DURATION}s runs, {CONNS} "
        f"connections{', quick' if QUICK else ''}{', A/B with ' + str(PROMPTGATE_B) if PROMPTGATE_B else ''}"
        f"{', B rate_limit: ' + B_RATE_LIMIT if B_RATE_LIMIT else ''}")
    response_json, sse, req_1k, req_1m, stream_req = fixtures()
    b1k, b1m, bstream = RUN / "req-1k.json", RUN / "req-1m.json", RUN / "req-stream.json"
    b1k.write_text(req_1k)
    b1m.write_text(req_1m)
    bstream.write_text(stream_req)
    log(f"fixtures: response {len(response_json)} B, SSE {sse.count('data:')} events "
        f"{len(sse)} B, request {len(req_1k)} B and {len(req_1m)} B")

    # --- what to start
    write_upstream(response_json, sse)
    headline = want("hit") or want("pass")
    define_promptgate("pg", PROMPTGATE, 28110, 28190, 0, None)
    define_nginx_proxy("nginx", "auto", 28102, 28103, None)
    if PROMPTGATE_B:
        define_promptgate("pgb", PROMPTGATE_B, 28114, 28194, 0, None, rate_limit=B_RATE_LIMIT)
    pinned = headline and WITH_PINNED
    if pinned:
        define_promptgate("pg1", PROMPTGATE, 28111, 28191, 1, CPU_SUT)
        define_promptgate("pg1-off", PROMPTGATE, 28112, 28192, 1, CPU_SUT, log_mode="off")
        define_promptgate("pg1-confdir", PROMPTGATE, 28113, 28193, 1, CPU_SUT,
                          log_mode="confdir")
        if PROMPTGATE_B:
            define_promptgate("pgb1", PROMPTGATE_B, 28115, 28195, 1, CPU_SUT,
                              rate_limit=B_RATE_LIMIT)
        define_nginx_proxy("nginx1", 1, 28104, 28105, CPU_SUT)
    if headline and with_floors:
        define_floor("floor-static", "static", 28130, 0, None)
        define_floor("floor-proxy", "proxy", 28131, 0, None)
        define_floor("floor-exchange", "exchange", 28132, 0, None)
        define_floor("floor-hyper", "hyper", 28136, 0, None)
        if pinned:
            define_floor("floor1-static", "static", 28133, 1, CPU_SUT)
            define_floor("floor1-proxy", "proxy", 28134, 1, CPU_SUT)
            define_floor("floor1-exchange", "exchange", 28135, 1, CPU_SUT)
            define_floor("floor1-hyper", "hyper", 28137, 1, CPU_SUT)
    if want("redis"):
        INSTANCES["redis"] = Instance("redis", P_REDIS, None,
                                      ["redis-server", "--bind", HOST, "--port", str(P_REDIS),
                                       "--save", "", "--appendonly", "no", "--dir", str(RUN)])
        define_promptgate("pg-redis", PROMPTGATE, 28116, 28196, 0, None, backend="redis")
        define_promptgate("pg-redis-l1", PROMPTGATE, 28117, 28197, 0, None,
                          backend="redis-l1")
    use_litellm = WITH_LITELLM and (want("hit") or want("big"))
    litellm_note = ""
    if use_litellm and not LITELLM.exists():
        litellm_note = "LiteLLM not installed (bench/.venv missing): skipped"
        use_litellm = False

    ports = [P_UP, P_UP_STATUS, P_UP_H2] + [i.port for i in INSTANCES.values()] + \
        [i.admin for i in INSTANCES.values() if i.admin] + \
        [p for n in NGINX.values() for p in n.values()] + ([P_LITELLM] if use_litellm else [])
    busy = [p for p in sorted(set(ports)) if not port_free(p)]
    if busy:
        sys.exit(f"ports already in use on {HOST}: {busy} (another bench running?)")

    if use_litellm:
        write_litellm()
        t0 = time.time()
        litellm = start("litellm", [str(LITELLM), "--config", str(RUN / "litellm.yaml"),
                                    "--host", HOST, "--port", str(P_LITELLM),
                                    "--num_workers", "1"],
                        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                             "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_TELEMETRY": "False"})
        INSTANCES["litellm"] = Instance("litellm", P_LITELLM, None, [])
        INSTANCES["litellm"].proc = litellm
    for inst in INSTANCES.values():
        if inst.proc is None:
            inst.proc = start(inst.name, inst.cmd, inst.cpus, env=inst.env,
                              drop_env=inst.drop_env, out=inst.log)
    for inst in INSTANCES.values():
        if inst.name != "litellm":
            wait_port(inst.port, proc=inst.proc)
    for n, ports_ in NGINX.items():
        wait_port(ports_["cache"], proc=INSTANCES[n].proc)
    time.sleep(1.0)
    idle = {"promptgate_idle_kb": rss_kb(INSTANCES["pg"].pid)["VmRSS"],
            "nginx_idle_kb": tree_rss_kb(INSTANCES["nginx"].pid)}
    log(f"idle RSS: promptgate {idle['promptgate_idle_kb'] / 1024:.1f} MiB, nginx "
        f"(master + workers) {idle['nginx_idle_kb'] / 1024:.1f} MiB")
    if use_litellm:
        try:
            wait_port(P_LITELLM, timeout=180, proc=INSTANCES["litellm"].proc)
            litellm_note = f"LiteLLM proxy started in {time.time() - t0:.0f}s"
            log(litellm_note)
        except RuntimeError as e:
            litellm_note = f"LiteLLM proxy did not start: {e} (see bench/.run/logs/litellm.log)"
            log(litellm_note)
            use_litellm = False

    # --- rows, and the check each must pass before it is measured (a hit row is a hit)
    pg_hit = check_hit("x-promptgate-cache")
    ng_hit = check_hit("x-cache")

    # The floors are Pingora HttpServerApps, as promptgate is (bench/floors); `proxy` alone is
    # stock ProxyHttp, the reference for what Pingora's own proxying costs.
    FLOOR_SERVER = "Pingora floor, HttpServerApp (hit: static answer; pass: own exchange)"

    def hit_group(one_core, body):
        s = "1" if one_core else ""
        rows = []
        if not one_core:
            rows.append(Target("direct to upstream (nginx return 200)", "direct", "nginx-up",
                               P_UP, CHAT, body, check=check_answer,
                               server="direct to upstream (nginx return 200)"))
        pgs = [(f"pg{s}", "pg", "promptgate hit (memory)", "promptgate"),
               (f"pgb{s}", "pgb", "promptgate B hit (memory)", "promptgate B")]
        if one_core:
            pgs += [("pg1-off", "other", "promptgate hit, access log off (RUST_LOG=warn)",
                     "promptgate, access log off (RUST_LOG=warn)"),
                    ("pg1-confdir", "other", "promptgate hit, log file in the config's directory",
                     "promptgate, log file in the config's directory")]
        rows += [Target(label, kind, name, INSTANCES[name].port, "/openai" + CHAT, body,
                        check=pg_hit, server=server)
                 for name, kind, label, server in pgs if name in INSTANCES]
        ngx = f"nginx{s}"
        rows.append(Target("nginx proxy_cache hit", "nginx", ngx, NGINX[ngx]["cache"], CHAT,
                           body, check=ng_hit, server="nginx (proxy_cache / proxy_pass)"))
        if f"floor{s}-static" in INSTANCES:
            rows.append(Target("Pingora floor: static 2 KB answer (HttpServerApp)",
                               "floor", f"floor{s}-static", INSTANCES[f"floor{s}-static"].port,
                               CHAT, body, check=check_answer, server=FLOOR_SERVER))
        if use_litellm and not one_core:
            rows.append(Target("LiteLLM proxy hit (local cache)", "litellm", "litellm",
                               P_LITELLM, CHAT, body, conns=min(CONNS, 8),
                               server="LiteLLM proxy (local cache)"))
        return rows

    def pass_group(one_core, body):
        s = "1" if one_core else ""
        pgs = [(f"pg{s}", "pg", "promptgate pass-through", "promptgate"),
               (f"pgb{s}", "pgb", "promptgate B pass-through", "promptgate B")]
        if one_core:
            pgs.append(("pg1-off", "other",
                        "promptgate pass-through, access log off (RUST_LOG=warn)",
                        "promptgate, access log off (RUST_LOG=warn)"))
        rows = [Target(label, kind, name, INSTANCES[name].port, "/pass" + CHAT, body,
                       check=check_answer, server=server)
                for name, kind, label, server in pgs if name in INSTANCES]
        ngx = f"nginx{s}"
        rows.append(Target("nginx proxy_pass keepalive", "nginx", ngx, NGINX[ngx]["pass"], CHAT,
                           body, check=check_answer, server="nginx (proxy_cache / proxy_pass)"))
        for mode, label, kind, server in [
                ("proxy", "Pingora floor: stock ProxyHttp pass-through", "floor-proxy",
                 "Pingora floor: stock ProxyHttp pass-through"),
                ("exchange", "Pingora floor: own exchange on Connector (HttpServerApp; "
                 "promptgate's design)",
                 "floor", FLOOR_SERVER),
                ("hyper", "Pingora floor: own exchange on hyper-util's client (HttpServerApp)",
                 "floor-hyper",
                 "Pingora floor: own exchange on hyper-util's client (HttpServerApp)")]:
            if f"floor{s}-{mode}" in INSTANCES:
                rows.append(Target(label, kind, f"floor{s}-{mode}",
                                   INSTANCES[f"floor{s}-{mode}"].port, CHAT, body,
                                   check=check_answer, server=server))
        return rows

    def warm(rows):
        """Two requests each (the first fills a cache); the second must pass the row's check."""
        for t in rows:
            if t.kind == "litellm":
                post(t.port, t.path, t.body.read_text(), timeout=120)
                time.sleep(0.3)
                before = upstream_requests()
                post(t.port, t.path, t.body.read_text())
                if upstream_requests() - before - 1 != 0:
                    global_notes.append("WARNING: LiteLLM repeat went upstream (no cache hit)")
                continue
            post(t.port, t.path, t.body.read_text())
            time.sleep(0.05)
            st, h, body = post(t.port, t.path, t.body.read_text())
            h[":status"] = str(st)
            t.check(h, body)

    global_notes = [litellm_note] if litellm_note else []
    S = {}  # group id -> rows
    loads = {}  # group id -> (min, max) load1 over its runs

    def run_group(sid, rows, one_core=False):
        warm(rows)
        measure_group(sid, rows, one_core)
        S[sid] = rows
        ls = [r["load1"] for t in rows for r in t.runs]
        loads[sid] = (min(ls), max(ls))

    if want("hit"):
        run_group("hit", hit_group(False, b1k))
    if want("pass"):
        run_group("pass", pass_group(False, b1k))
    ttfb_rows = []
    if headline:
        rows = (S.get("hit", []) + S.get("pass", []))
        rows = [t for t in rows if t.kind != "litellm"]
        log(f"[ttfb] sequential requests on one connection, {TTFB_N} x 3 per target")
        acc = {id(t): ([], []) for t in rows}
        for _ in range(3):
            for t in rows:
                body = t.body.read_text()
                f, last = ttfb(t.port, t.path, lambda i: body, TTFB_N, t.check)
                acc[id(t)][0].extend(f)
                acc[id(t)][1].extend(last)
        for t in rows:
            f, last = acc[id(t)]
            t.ttfb = {"p50": pct(f, 50), "p99": pct(f, 99), "last_p50": pct(last, 50)}
            ttfb_rows.append({"group": "hit" if t in S.get("hit", []) else "pass",
                              "label": t.label, **t.ttfb})
            log(f"  {t.label:<52} TTFB p50 {t.ttfb['p50']:.3f} ms p99 {t.ttfb['p99']:.3f} ms")
    if pinned:
        if want("hit"):
            run_group("hit, one core", hit_group(True, b1k), one_core=True)
        if want("pass"):
            run_group("pass, one core", pass_group(True, b1k), one_core=True)

    if want("big"):
        run_group("1 MiB pass", [
            Target("direct to upstream (nginx return 200)", "direct", "nginx-up", P_UP, CHAT,
                   b1m, check=check_answer),
            Target("promptgate pass-through", "pg", "pg", 28110, "/pass" + CHAT, b1m,
                   check=check_answer),
            Target("nginx proxy_pass keepalive", "nginx", "nginx", 28102, CHAT, b1m,
                   check=check_answer)])
        # nginx cannot serve a hit keyed on a 1 MiB body: its cache file header stores the key's
        # and body's offsets as 16-bit numbers (ngx_http_file_cache_header_t), so an entry whose
        # key is over 64 KiB is written but never read back ("cache file is too small").
        rows = [Target("promptgate hit (memory)", "pg", "pg", 28110, "/openai" + CHAT, b1m,
                       check=pg_hit)]
        if use_litellm:
            rows.append(Target("LiteLLM proxy hit (local cache)", "litellm", "litellm",
                               P_LITELLM, CHAT, b1m, conns=min(CONNS, 8), check=None))
        run_group("1 MiB hit", rows)
    if want("redis"):
        for size, bf in [("1 KB", b1k), ("1 MiB", b1m)]:
            rows = [Target("promptgate hit (Redis, no L1)", "other", "pg-redis", 28116,
                           "/openai" + CHAT, bf, check=pg_hit),
                    Target("promptgate hit (Redis + L1)", "other", "pg-redis-l1", 28117,
                           "/openai" + CHAT, bf, check=pg_hit),
                    Target("promptgate hit (memory)", "pg", "pg", 28110, "/openai" + CHAT, bf,
                           check=pg_hit)]
            # Redis writes happen in the background: fill, wait, then check.
            for t in rows:
                post(t.port, t.path, bf.read_text())
            time.sleep(1.0)
            run_group(f"Redis hit, {size}", rows)
    stream_ttfb = []
    if want("sse"):
        run_group("SSE replay hit", [
            Target("direct SSE (static, 50 events)", "direct", "nginx-up", P_UP, "/sse" + CHAT,
                   bstream, check=lambda h, b: check_stream(h, b)),
            Target("promptgate SSE replay (hit)", "pg", "pg", 28110, "/sse" + CHAT, bstream,
                   check=pg_hit),
            Target("nginx proxy_cache SSE hit", "nginx", "nginx", 28103, "/sse" + CHAT, bstream,
                   check=ng_hit)])
        log(f"[sse-ttfb] streaming TTFB, sequential, {TTFB_N} x 3 per target")
        base = json.loads(stream_req)

        def unique(tag):
            def f(i):
                b = dict(base)
                b["messages"] = base["messages"] + [{"role": "user",
                                                     "content": f"{tag} {time.time_ns()} {i}"}]
                return json.dumps(b)
            return f

        def want_cache(status):
            def check(h, b):
                check_stream(h, b)
                assert h.get("x-promptgate-cache") == status, (status, h)
            return check
        acc = {}
        for rep in range(3):
            for name, port, path, fn, check in [
                    ("direct", P_UP, "/sse" + CHAT, unique("d"), check_stream),
                    ("promptgate miss", 28110, "/sse" + CHAT, unique(f"m{rep}"),
                     want_cache("MISS")),
                    ("promptgate hit", 28110, "/sse" + CHAT, lambda i: stream_req,
                     want_cache("HIT")),
                    ("nginx proxy_pass", 28102, "/sse" + CHAT, unique("n"), check_stream)]:
                f, last = ttfb(port, path, fn, TTFB_N, check)
                a = acc.setdefault(name, ([], []))
                a[0].extend(f)
                a[1].extend(last)
        for name, (f, last) in acc.items():
            stream_ttfb.append({"name": name, "ttfb_p50": pct(f, 50), "ttfb_p99": pct(f, 99),
                                "last_p50": pct(last, 50), "last_p99": pct(last, 99)})
            log(f"  {name:<18} TTFB p50 {pct(f, 50):.3f} ms p99 {pct(f, 99):.3f} ms; "
                f"full stream p50 {pct(last, 50):.3f} ms")

    fixed = []
    if want("fixed"):
        set_cpus(INSTANCES["nginx-up"].pid, ALL_CPUS)
        log(f"[fixed-rate] {RATE} rps for 10 s, 1 KB body, hit path, as shipped")
        for name, port, path in [("direct to upstream (baseline)", P_UP, CHAT),
                                 ("promptgate hit (memory)", 28110, "/openai" + CHAT),
                                 ("nginx proxy_cache hit", 28103, CHAT),
                                 ("promptgate hit (memory)", 28110, "/openai" + CHAT),
                                 ("nginx proxy_cache hit", 28103, CHAT)]:
            r = h2load_fixed_rate(port, path, b1k, RATE)
            empty_logs()
            r["name"] = name
            fixed.append(r)
            log(f"  {name:<30} {r['achieved_rps']:.0f} rps, {r['ok']}/{r['requests']} 200, "
                f"p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms p99.9 {r['p999']:.3f} ms "
                f"max {r['max']:.3f} ms  load {r['load1']:.2f}")

    rss = dict(idle)
    rss_rows = []
    if want("rss"):
        set_cpus(INSTANCES["nginx-up"].pid, ALL_CPUS)
        log("[rss] 1,000 connections on the hit path (as shipped): rate-limited (h2load, 2 "
            "requests/s per connection, 8 s), then closed loop (wrk, 6 s)")
        for pg in ["pg"] + (["pgb"] if PROMPTGATE_B else []):
            post(INSTANCES[pg].port, "/openai" + CHAT, req_1k)
        targets = [(n, lbl, INSTANCES[n].port, "/openai" + CHAT, True)
                   for n, lbl in [("pg", "promptgate"), ("pgb", "promptgate B")]
                   if n in INSTANCES] + [("nginx", "nginx", 28103, CHAT, False)]
        # Rate-limited first: it shows what the connections themselves cost, before a closed
        # loop's queue has grown the heap (glibc does not give that back).
        for mode in ["rate-limited", "closed loop"]:
            for name, label, port, path, is_pg in targets:
                pid = INSTANCES[name].pid
                before = rss_kb(pid)["VmRSS"] if is_pg else tree_rss_kb(pid)
                if mode == "closed loop":
                    cmd = ["wrk", "-t1", "-c1000", "-d6s", "--timeout", "10s", "-s",
                           str(BENCH / "post.lua"), f"http://{HOST}:{port}{path}"]
                    secs = 6
                else:
                    logf = RUN / f"h2load-rss-{name}.tsv"
                    cmd = ["h2load", "--h1", "-t1", "-c1000", "--rps=2", "-D8",
                           "-d", str(b1k), "-H", "content-type: application/json",
                           "-H", f"authorization: Bearer {KEY}", f"--log-file={logf}",
                           f"http://{HOST}:{port}{path}"]
                    secs = 8
                w = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "BENCH_BODY": str(b1k),
                                                     "BENCH_KEY": KEY})
                samples = []
                for _ in range(secs * 2):
                    time.sleep(0.5)
                    samples.append(rss_kb(pid)["VmRSS"] if is_pg else tree_rss_kb(pid))
                out = w.communicate(timeout=120)[0]
                empty_logs()
                row = {"mode": mode, "label": label, "before_kb": before,
                       "max_kb": max(samples),
                       "after_kb": rss_kb(pid)["VmRSS"] if is_pg else tree_rss_kb(pid)}
                if mode == "closed loop":
                    m = re.search(r"BENCH_JSON (\{.*\})", out)
                    r = json.loads(m.group(1)) if m else {}
                    row["rps"] = r.get("requests", 0) / (r.get("duration_us", 1) / 1e6)
                    row["p99_ms"] = r.get("p99", 0) / 1000
                    row["errors"] = sum(r.get(k, 0) for k in [
                        "connect_errors", "read_errors", "write_errors", "status_errors",
                        "timeouts"])
                else:
                    lines = [x.split("\t") for x in logf.read_text().splitlines() if x.strip()]
                    lat = [int(x[2]) / 1000 for x in lines] or [0]
                    row["rps"] = len(lines) / secs
                    row["p99_ms"] = pct(lat, 99)
                    row["errors"] = sum(1 for x in lines if x[1] != "200")
                    m = re.search(r"(\d+) failed", out)
                    row["errors"] += int(m.group(1)) if m else 0
                rss_rows.append(row)
                log(f"  {mode:<12} {label:<12} RSS max {row['max_kb'] / 1024:.1f} MiB "
                    f"(before {before / 1024:.1f}, after {row['after_kb'] / 1024:.1f}), "
                    f"{row['rps']:.0f} rps, p99 {row['p99_ms']:.1f} ms, errors {row['errors']}")

    finished_at = datetime.now(timezone.utc)
    report = render(S, loads, ttfb_rows, stream_ttfb, fixed, rss, rss_rows, global_notes,
                    started_at, finished_at, load_start)
    print()
    print(report)
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "latest.md").write_text(report)
    (BENCH / "results" / "latest.json").write_text(json.dumps({
        "groups": {k: [{"label": t.label, "kind": t.kind, "runs": t.runs,
                        "ttfb": t.ttfb} for t in v] for k, v in S.items()},
        "ttfb": ttfb_rows, "stream_ttfb": stream_ttfb, "fixed_rate": fixed, "rss": rss,
        "rss_rows": rss_rows, "notes": global_notes, "machine": machine(),
        "versions": tool_versions(), "started": started_at.isoformat(),
        "finished": finished_at.isoformat(), "quick": QUICK,
    }, indent=1))
    log("written: bench/results/latest.md, bench/results/latest.json")


# ---------------------------------------------------------------------------------------------
# Report

def side_by_side(S, hit_id, pass_id):
    """One line per server: hit and pass-through next to each other; then the ratios."""
    hit, pas = S.get(hit_id, []), S.get(pass_id, [])
    rank = ["pg", "pgb", "other", "nginx", "floor", "floor-proxy", "floor-hyper", "direct",
            "litellm"]
    order = []
    for t in sorted(hit + pas, key=lambda t: rank.index(t.kind)):
        if t.server not in order:
            order.append(t.server)
    L = ["| | hit rps | hit CPU µs/req | hit TTFB p50 / p99 ms | pass rps | pass CPU µs/req | "
         "pass TTFB p50 / p99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]

    def cells(rows, key):
        t = next((x for x in rows if x.server == key), None)
        if t is None:
            return ["", "", ""]
        tt = t.ttfb
        return [f"{t.best()['rps']:,.0f}", f"{t.cpu():.1f}",
                f"{tt['p50']:.3f} / {tt['p99']:.3f}" if tt else ""]
    for key in order:
        L.append(f"| {key} | " + " | ".join(cells(hit, key) + cells(pas, key)) + " |")

    def find(rows, kind):
        return next((t for t in rows if t.kind == kind), None)
    R = ["| ratio (rps: higher is better; CPU/req: lower is better) | hit rps | hit CPU/req | "
         "pass rps | pass CPU/req |", "|---|---:|---:|---:|---:|"]

    def pair(rows, a, b):
        if not a or not b:
            return ["", ""]
        return [ratio(a.best()["rps"], b.best()["rps"]), ratio(a.cpu(), b.cpu())]
    for a_kind, b_kind, text in [
            ("pg", "nginx", "promptgate / nginx"),
            ("pg", "floor", "promptgate / Pingora floor (hit: static answer; pass: own exchange)"),
            ("pg", "floor-hyper", "promptgate / hyper-client floor"),
            ("pgb", "nginx", "promptgate B / nginx"),
            ("pgb", "floor", "promptgate B / Pingora floor"),
            ("pgb", "pg", "promptgate B / promptgate A"),
            ("pg", "litellm", "promptgate / LiteLLM"),
            ("floor", "nginx", "Pingora floor / nginx"),
            ("floor-proxy", "nginx", "stock ProxyHttp floor / nginx"),
            ("floor-hyper", "nginx", "hyper-client floor / nginx"),
            ("floor-hyper", "floor", "hyper-client floor / Connector floor")]:
        h = pair(hit, find(hit, a_kind), find(hit, b_kind))
        p = pair(pas, find(pas, a_kind), find(pas, b_kind))
        if any(h + p):
            R.append(f"| {text} | " + " | ".join(h + p) + " |")

    # What the access log and the config watcher cost: CPU per request against the same
    # promptgate with its log off (one-core groups only, where those rows run).
    def by_server(rows, server):
        return next((t for t in rows if t.server == server), None)
    costs = []
    for rows, what in [(hit, "hit"), (pas, "pass-through")]:
        on, off = find(rows, "pg"), by_server(rows, "promptgate, access log off (RUST_LOG=warn)")
        confdir = by_server(rows, "promptgate, log file in the config's directory")
        if on and off:
            costs.append(f"access log on costs {on.cpu() - off.cpu():+.1f} µs/req ({what})")
        if confdir and on:
            costs.append(f"a log file in the config's directory costs a further "
                         f"{confdir.cpu() - on.cpu():+.1f} µs/req ({what}: the config watcher)")
    if costs:
        R += ["", "CPU per request against the same promptgate: " + "; ".join(costs) + "."]
    return L, R


def render(S, loads, ttfb_rows, stream_ttfb, fixed, rss, rss_rows, notes, started_at,
           finished_at, load_start):
    m = machine()
    v = tool_versions()
    la = os.getloadavg()
    L = [f"Run {started_at:%Y-%m-%d %H:%M} UTC, {(finished_at - started_at).seconds}s"
         f"{' (--quick)' if QUICK else ''}; {m['nproc']} x {m['cpu']}, {m['mem_gb']} GB, "
         f"Debian {m['os']}; load at start {load_start[0]:.2f}, at end {la[0]:.2f} {la[1]:.2f} "
         f"{la[2]:.2f}",
         f"Settings: wrk -t1 -c{CONNS} (LiteLLM -c{min(CONNS, 8)}), {DURATION}s runs after a 1s "
         f"warm-up, best of {REPS}, alternating within each group. rps, p50, p99: the best run; "
         f"CPU µs/req: the server's own CPU time (/proc/PID/stat utime+stime, all threads, "
         f"nginx workers included) per request, lowest run; upstream calls during the best run "
         f"(0 = every request was a hit).",
         "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    L += [f"Note: {n}" for n in notes]

    def load_text(*ids):
        ls = [x for i in ids if i in loads for x in loads[i]]
        return f"load {min(ls):.1f}–{max(ls):.1f}" if ls else ""
    if "hit" in S or "pass" in S:
        L += ["", f"### As shipped (unpinned; {load_text('hit', 'pass')})", "",
              "promptgate: conf-like config, `threads: 0` (one per core), RUST_LOG unset (access "
              "log on, to a file outside the config's directory), reload watch on; nginx: "
              "`worker_processes auto`, access log on; floors: one thread per core.", ""]
        a, b = side_by_side(S, "hit", "pass")
        L += a + [""] + b
    if "hit, one core" in S or "pass, one core" in S:
        L += ["", f"### One pinned core (CPU view; "
              f"{load_text('hit, one core', 'pass, one core')})", "",
              "promptgate `threads: 1`, nginx `worker_processes 1`, floors on one thread, each "
              "pinned to CPU 0; wrk and the upstream on CPU 1.", ""]
        a, b = side_by_side(S, "hit, one core", "pass, one core")
        L += a + [""] + b
    L += ["", "### Every row", "",
          "| group | target | rps | p50 ms | p99 ms | CPU µs/req | upstream calls | errors | "
          "rps vs nginx | CPU/req vs nginx | load |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sid, rows in S.items():
        ng = next((t for t in rows if t.kind == "nginx"), None)
        for t in rows:
            b = t.best()
            vs = t.kind not in ("nginx", "direct") and ng is not None
            L.append(f"| {sid} | {t.label} | {b['rps']:,.0f} | {b['p50'] / 1000:.3f} | "
                     f"{b['p99'] / 1000:.3f} | {t.cpu():.1f} | {b['upstream_calls']} | "
                     f"{sum(r['errors'] for r in t.runs)} | "
                     f"{ratio(b['rps'], ng.best()['rps']) if vs else ''} | "
                     f"{ratio(t.cpu(), ng.cpu()) if vs else ''} | {b['load1']:.1f} |")
    for sid, rows in S.items():
        pg = next((t for t in rows if t.kind == "pg"), None)
        ll = next((t for t in rows if t.kind == "litellm"), None)
        if pg and ll:
            L.append(f"\n{sid}: promptgate / LiteLLM = {ratio(pg.best()['rps'], ll.best()['rps'])} "
                     f"rps; CPU per request {pg.cpu():,.1f} µs vs {ll.cpu():,.0f} µs.")
    if stream_ttfb:
        L += ["", f"Streaming (SSE, 50 events), sequential requests on one keep-alive connection "
              f"(Python client), {TTFB_N * 3} each; a miss has a unique body (key, record, store):",
              "", "| target | TTFB p50 ms | TTFB p99 ms | whole stream p50 ms | whole stream p99 ms |",
              "|---|---:|---:|---:|---:|"]
        for r in stream_ttfb:
            L.append(f"| {r['name']} | {r['ttfb_p50']:.3f} | {r['ttfb_p99']:.3f} | "
                     f"{r['last_p50']:.3f} | {r['last_p99']:.3f} |")
    if ttfb_rows:
        L += ["", f"TTFB above: sequential requests on one keep-alive connection (Python client), "
              f"{TTFB_N * 3} per target, time from sending the request to the first byte of the "
              f"answer."]
    if fixed:
        L += ["", f"Latency at a fixed rate ({RATE} rps: h2load --h1 -c50 --rps {RATE // 50}, "
              f"10 s, per-request log), 1 KB body, hit path, as shipped, two runs each after a "
              f"baseline straight to the upstream:", "",
              "| target | achieved rps | 200s | p50 ms | p99 ms | p99.9 ms | max ms | load |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in fixed:
            L.append(f"| {r['name']} | {r['achieved_rps']:.0f} | {r['ok']}/{r['requests']} | "
                     f"{r['p50']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} | {r['max']:.3f} | "
                     f"{r['load1']:.2f} |")
    L += ["", f"RSS idle: promptgate {rss['promptgate_idle_kb'] / 1024:.1f} MiB, nginx "
          f"(master + workers) {rss['nginx_idle_kb'] / 1024:.1f} MiB (as shipped)."]
    if rss_rows:
        L += ["", "RSS under 1,000 connections, hit path, as shipped (rate-limited: h2load -c1000 "
              "at 2 requests/s per connection, 8 s; then closed loop: wrk -c1000, 6 s); nginx: "
              "master + workers:", "",
              "| load pattern | server | RSS before MiB | RSS max MiB | RSS after MiB | rps | p99 ms | "
              "errors |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rss_rows:
            L.append(f"| {r['mode']} | {r['label']} | {r['before_kb'] / 1024:.1f} | "
                     f"{r['max_kb'] / 1024:.1f} | {r['after_kb'] / 1024:.1f} | {r['rps']:,.0f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} |")
        for mode in ["rate-limited", "closed loop"]:
            pg = next((r for r in rss_rows if r["mode"] == mode and r["label"] == "promptgate"),
                      None)
            ng = next((r for r in rss_rows if r["mode"] == mode and r["label"] == "nginx"), None)
            if pg and ng:
                L.append(f"\nRSS max under 1,000 connections ({mode}): promptgate / nginx = "
                         f"{ratio(pg['max_kb'], ng['max_kb'])}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------

def profile():
    """perf record (cpu-clock: this VM has no hardware counters) of promptgate (`threads: 1`,
    CPU 0, access log off) under wrk: the memory-hit path with the 1 KB and the 1 MiB body, and
    pass-through with 1 KB; self and inclusive profiles in bench/results/profile-*.txt."""
    if not shutil.which("perf"):
        sys.exit("perf not found: apt-get install linux-perf")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    shutil.rmtree(RUN, ignore_errors=True)
    (RUN / "logs").mkdir(parents=True)
    atexit.register(stop_all)
    response_json, sse, req_1k, req_1m, stream_req = fixtures()
    (RUN / "req-1k.json").write_text(req_1k)
    (RUN / "req-1m.json").write_text(req_1m)
    write_upstream(response_json, sse)
    define_promptgate("pg1-off", PROMPTGATE, 28112, 28192, 1, CPU_SUT, log_mode="off")
    for inst in INSTANCES.values():
        cpus = inst.cpus if inst.name != "nginx-up" else CPU_LOAD
        inst.proc = start(inst.name, inst.cmd, cpus, env=inst.env, drop_env=inst.drop_env,
                          out=inst.log)
        wait_port(inst.port, proc=inst.proc)
    pg = INSTANCES["pg1-off"]
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    for size, route, body in [("1k", "/openai", req_1k), ("1m", "/openai", req_1m),
                              ("pass-1k", "/pass", req_1k)]:
        post(pg.port, route + CHAT, body)
        _, h, _ = post(pg.port, route + CHAT, body)
        assert h.get("x-promptgate-cache") == ("HIT" if route == "/openai" else None), h
        data = RUN / f"perf-{size}.data"
        w = subprocess.Popen(on_cpus(["wrk", "-t1", f"-c{CONNS}", "-d8s", "-s",
                                      str(BENCH / "post.lua"),
                                      f"http://{HOST}:{pg.port}{route}{CHAT}"], CPU_LOAD),
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
        inclusive = subprocess.run(["perf", "report", "-i", str(data), "--children", "--sort",
                                    "symbol", "--stdio", "-g", "none", "--percent-limit", "3"],
                                   capture_output=True, text=True).stdout
        text = (f"# promptgate {'memory hit' if route == '/openai' else 'pass-through'}, "
                f"{size[-2:]} body, wrk -c{CONNS}: "
                f"{r['requests'] / (r['duration_us'] / 1e6):.0f} rps (under perf), "
                f"load {os.getloadavg()[0]:.2f}\n\n## self time\n{flat}\n"
                f"## inclusive (children)\n{inclusive}")
        (out_dir / f"profile-{size}.txt").write_text(text)
        log(f"written bench/results/profile-{size}.txt")


if __name__ == "__main__":
    if ARGS.profile:
        profile()
    else:
        main()
