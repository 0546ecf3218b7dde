#!/usr/bin/env python3
"""What `prompt_caching: auto` saves on a conversation: a scripted 10-turn chat with Claude
(a long system prompt, tool definitions, earlier turns growing), replayed through promptgate
twice — once on a route with `prompt_caching: off`, once with `auto` — in front of the mock
upstream, which bills Anthropic's prompt cache the way Anthropic does (writes from
`cache_control` breakpoints, reads of a prefix seen before, tokens = bytes / 4).

Reports, per variant, the prompt tokens as billed (uncached input, cache writes, cache reads),
the output tokens, and US dollars by the shipped price table (claude-sonnet-4: $3 input,
$3.75 cache write, $0.30 cache read, $15 output per million tokens), cross-checked against
promptgate's own `promptgate_cost_usd_total`.

    cargo build --bins --examples && python3 bench/prompt_caching.py [--turns 10] [--markdown]

Loopback only, stdlib only, a few seconds. Uses target/debug/promptgate and
target/debug/examples/mock_upstream (PROMPTGATE_BIN, MOCK_BIN override them).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTGATE = Path(os.environ.get("PROMPTGATE_BIN", ROOT / "target/debug/promptgate"))
MOCK = Path(os.environ.get("MOCK_BIN", ROOT / "target/debug/examples/mock_upstream"))
MODEL = "claude-sonnet-4-5"
# claude-sonnet-4* in src/pricing.rs, USD per million tokens.
PRICE = {"input": 3.00, "cache_write": 3.75, "cache_read": 0.30, "output": 15.00}

SYSTEM = (
    "You are the support assistant of a small hardware shop. Answer in two or three sentences, "
    "cite the policy section you rely on, and never promise delivery dates. "
) + " ".join(
    f"Policy {i}: orders over {10 * i} EUR ship free within the EU; returns are accepted for "
    f"{14 + i} days when the item is unused and in its original packaging; refunds go to the "
    "original payment method within five working days of the return being inspected."
    for i in range(1, 41)
)
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order by its number and return its items, status and tracking link. "
        + "Use it whenever the customer names an order number. " * 8,
        "input_schema": {
            "type": "object",
            "properties": {"order": {"type": "string", "description": "the order number"}},
            "required": ["order"],
        },
    },
    {
        "name": "open_return",
        "description": "Open a return for one item of an order and email the label. " * 6,
        "input_schema": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "item": {"type": "string"}},
            "required": ["order", "item"],
        },
    },
]
QUESTIONS = [
    "Hi, I ordered a soldering station last week. When can I expect it?",
    "The order number is 10442. Can you check its status?",
    "It says delivered but I never got it. What now?",
    "OK. While we wait: can I return the multimeter from the same order?",
    "It is unused, still sealed. How long do I have?",
    "Please open the return for the multimeter.",
    "How will I get my money back, and how long does it take?",
    "Do you ship to Norway too, and is it free there?",
    "One more thing: is the 60-day return for business customers real?",
    "Thanks. Can you summarise everything we agreed on?",
]
ANSWER = (
    "Thanks for your patience. According to our policy, {topic} I have noted this on your "
    "case so a colleague can follow up, and you will get an email confirmation shortly. "
    "Is there anything else I can help you with today?"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def start_mock():
    mock = subprocess.Popen([str(MOCK), "--port", "0"], stdout=subprocess.PIPE, text=True)
    port = int(mock.stdout.readline())
    return mock, port


def start_promptgate(mock_port, caching, workdir):
    listen, admin = free_port(), free_port()
    config = workdir / f"promptgate-{caching}.yaml"
    config.write_text(
        f"""listen: "127.0.0.1:{listen}"
admin: "127.0.0.1:{admin}"
upstreams:
  claude: {{ url: "http://127.0.0.1:{mock_port}", provider: anthropic }}
routes:
  - name: chat
    match: {{ path_prefix: /anthropic }}
    strip_prefix: true
    targets: [claude]
    retry: {{ attempts: 1 }}
    prompt_caching: {caching}
cache:
  enabled: false
"""
    )
    log = open(workdir / f"promptgate-{caching}.log", "w")
    proc = subprocess.Popen(
        [str(PROMPTGATE), "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    wait_port(listen)
    wait_port(admin)
    return proc, listen, admin


def post(port, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/anthropic/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def metric_sum(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def replay(caching, turns, workdir):
    """Runs the conversation on a fresh mock; returns the summed usage and promptgate's cost."""
    mock, mock_port = start_mock()
    proc, listen, admin = start_promptgate(mock_port, caching, workdir)
    try:
        totals = {"input": 0, "cache_write": 0, "cache_read": 0, "output": 0}
        per_turn = []
        messages = []
        for turn, question in enumerate(QUESTIONS[:turns]):
            messages.append({"role": "user", "content": question})
            usage = post(
                listen,
                {
                    "model": MODEL,
                    "max_tokens": 300,
                    "system": SYSTEM,
                    "tools": TOOLS,
                    "messages": messages,
                },
            )["usage"]
            billed = {
                "input": usage["input_tokens"],
                "cache_write": usage.get("cache_creation_input_tokens", 0),
                "cache_read": usage.get("cache_read_input_tokens", 0),
                "output": usage["output_tokens"],
            }
            for k, v in billed.items():
                totals[k] += v
            per_turn.append(billed)
            # The scripted answer (a replayed chat log), not the mock's short text.
            topic = f"point {turn + 1} of our policy applies here."
            messages.append({"role": "assistant", "content": ANSWER.format(topic=topic)})
        # The logging phase runs just after each response.
        time.sleep(0.3)
        cost = metric_sum(admin, "promptgate_cost_usd_total")
        saved = metric_sum(admin, "promptgate_prompt_cache_saved_usd_total") - metric_sum(
            admin, "promptgate_prompt_cache_write_premium_usd_total"
        )
        breakpoints = metric_sum(admin, "promptgate_prompt_cache_breakpoints_total")
        return totals, per_turn, cost, saved, breakpoints
    finally:
        proc.terminate()
        mock.terminate()
        proc.wait(10)
        mock.wait(10)


def usd(counts):
    return sum(counts[k] * PRICE[k] for k in PRICE) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--markdown", action="store_true", help="a table for BENCHMARKS.md")
    args = parser.parse_args()
    for binary in (PROMPTGATE, MOCK):
        if not binary.exists():
            sys.exit(f"{binary} is missing: cargo build --bins --examples")
    with tempfile.TemporaryDirectory() as tmp:
        results = {c: replay(c, args.turns, Path(tmp)) for c in ("off", "auto")}
    rows = []
    for caching, (totals, per_turn, cost, saved, breakpoints) in results.items():
        prompt = totals["input"] + totals["cache_write"] + totals["cache_read"]
        computed = usd(totals)
        assert abs(computed - cost) < 1e-9, f"price table {computed} vs promptgate {cost}"
        rows.append((caching, prompt, totals, computed, saved, breakpoints, per_turn))
    base = rows[0][3]
    if args.markdown:
        print(f"| prompt_caching | prompt tokens | billed as input | cache writes | cache reads "
              f"| output | USD ({args.turns} turns) | vs off | breakpoints added |")
        print("|---|---|---|---|---|---|---|---|---|")
    for caching, prompt, t, computed, saved, breakpoints, per_turn in rows:
        if args.markdown:
            print(f"| `{caching}` | {prompt:,} | {t['input']:,} | {t['cache_write']:,} | "
                  f"{t['cache_read']:,} | {t['output']:,} | ${computed:.4f} | "
                  f"{computed / base - 1:+.0%} | {int(breakpoints)} |")
        else:
            print(f"prompt_caching: {caching}")
            print(f"  prompt tokens {prompt:,}: input {t['input']:,}, cache writes "
                  f"{t['cache_write']:,}, cache reads {t['cache_read']:,}; output {t['output']:,}")
            print(f"  USD {computed:.4f} (promptgate_cost_usd_total agrees), "
                  f"{computed / base - 1:+.1%} vs off; prompt cache saved (net) {saved:.4f}; "
                  f"breakpoints added {int(breakpoints)}")
            print("  per turn (input/write/read): " + ", ".join(
                f"{b['input']}/{b['cache_write']}/{b['cache_read']}" for b in per_turn))


if __name__ == "__main__":
    main()
