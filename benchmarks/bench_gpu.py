"""The inference server on a GPU vs raw onnxruntime CUDA and ultralytics on CUDA: bench_server.py's contenders on an
NVIDIA GPU, for yolo26n and a larger model (yolo26l), both built from their .yaml and exported to ONNX at 640.

Run: ``.venv/bin/python benchmarks/bench_gpu.py [--n 200] [--large yolo26l]`` on a machine with an NVIDIA GPU and
the GPU runtime (``pip install -r inference_service/requirements-gpu.txt``, torch with CUDA for ultralytics);
rewrites the ``gpu`` section of benchmarks/RESULTS.md. Without a usable GPU it says why and exits 0, measuring and
writing nothing.

Per model and concurrency (1, 4, 16 clients at once): p50 latency per request and requests per second, for
- ``ort-cuda``: onnxruntime's CUDA provider, ``session.run`` on a tensor letterboxed once (the bound: no decode);
- ``ort-cuda-iobinding``: the same through IO binding, as the server runs CUDA (inference_service/model.py);
- ``ultralytics-onnx``: ``YOLO(onnx).predict(bus.jpg, device=0)`` (decode, letterbox, infer, NMS);
- ``ultralytics-torch``: the PyTorch model on CUDA, ``YOLO(yaml).predict(bus.jpg, device=0)``;
- ``server``: ``python -m inference_service --device cuda`` over loopback HTTP, with the share of each predict
  spent in decode + letterbox (``speed.preprocess``, on the CPU by design) beside inference and postprocess.
Every in-process contender runs in a process of its own (``--worker``), as in bench_server.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.bench_server import throughput, timed  # noqa: E402
from benchmarks.results import write_section  # noqa: E402

CONCURRENCY = (1, 4, 16)
KINDS = ("ort-cuda", "ort-cuda-iobinding", "ultralytics-onnx", "ultralytics-torch")
IMGSZ = 640


def gpu_missing() -> str | None:
    """Why this machine cannot run the benchmark (the server's own device check), or None."""
    import onnxruntime as ort

    from inference_service.device import choose, visible_gpus

    choice = choose("auto", ort.get_available_providers(), visible_gpus())
    return None if choice.device == "cuda" else choice.reason.removeprefix("auto: ")


def measure(call: Callable[[], object], concurrency: int, n: int) -> dict[str, float]:
    """p50 latency (ms) of `n` calls made by `concurrency` threads at once, and calls per second overall
    (bench_server.py's thread pool, each call timed)."""
    latencies: list[float] = []  # list.append is atomic: the threads need no lock for it

    def timed_call() -> None:
        latencies.append(timed(call))

    rps = throughput(lambda: timed_call, n, concurrency)
    return {"p50_ms": statistics.median(latencies), "rps": rps}


def contender(kind: str, onnx: str, yaml: str, image: str) -> Callable[[], object]:
    if kind.startswith("ultralytics"):
        from ultralytics import YOLO

        yolo = YOLO(onnx if kind == "ultralytics-onnx" else yaml, task="detect")
        return lambda: yolo.predict(image, imgsz=IMGSZ, device=0, verbose=False)
    import onnxruntime as ort

    from inference_service.decode import decode_image
    from inference_service.device import PROVIDERS
    from inference_service.letterbox import preprocess
    from inference_service.model import run_bound

    ort.preload_dlls()
    tensor, _ = preprocess(decode_image(Path(image).read_bytes(), 50_000_000), (IMGSZ, IMGSZ), 32, True)
    session = ort.InferenceSession(onnx, providers=list(PROVIDERS["cuda"]))
    name, outputs = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    if kind == "ort-cuda-iobinding":
        return lambda: run_bound(session, name, outputs, tensor)
    return lambda: session.run(outputs, {name: tensor})


def worker_main(kind: str, onnx: str, yaml: str, image: str, n: int) -> None:
    """One contender in its own process: warm up, then one JSON line {concurrency: measure(...)} on stdout."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # ultralytics prints on stdout: keep it off the answer channel
    call = contender(kind, onnx, yaml, image)
    for _ in range(10):
        call()
    print(json.dumps({c: measure(call, c, n) for c in CONCURRENCY}), file=answers, flush=True)


def run_worker(kind: str, onnx: Path, yaml: str, image: Path, n: int) -> dict[int, dict[str, float]] | str:
    """The worker's figures, or why it could not run (e.g. torch without CUDA for ultralytics-torch)."""
    r = subprocess.run([sys.executable, __file__, "--worker", kind, str(onnx), yaml, str(image), str(n)],
                       capture_output=True, text=True, cwd=onnx.parent)
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return {int(k): v for k, v in json.loads(r.stdout).items()}


def server_figures(onnx: Path, image: Path, n: int) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """The server with --device cuda over loopback: figures per concurrency, and median stage times (ms)."""
    from helpers_server import MULTIPART, multipart, run_server

    body = multipart([(b"file", image.name.encode(), image.read_bytes())])
    stages: list[dict[str, float]] = []
    local = threading.local()
    with run_server(["--model", str(onnx), "--allow-anonymous", "--device", "cuda",
                     "--max-concurrency", str(max(CONCURRENCY))]) as (url, _):
        def post() -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection(urlsplit(url).hostname or "", urlsplit(url).port, timeout=60)
            local.conn.request("POST", "/predict", body, MULTIPART)
            r = local.conn.getresponse()
            payload = r.read()
            if r.status != 200:
                raise RuntimeError(f"predict answered {r.status}: {payload[:200]!r}")
            stages.append(json.loads(payload)["images"][0]["speed"])

        for _ in range(10):
            post()
        stages.clear()
        figures = {c: measure(post, c, n) for c in CONCURRENCY}
    return figures, {k: statistics.median(s[k] for s in stages) for k in ("preprocess", "inference", "postprocess")}


def report(rows: dict[str, dict[str, dict[int, dict[str, float]] | str]], stages: dict[str, dict[str, float]],
           device: str, n: int) -> str:
    head = "| model | contender | " + " | ".join(f"p50 ms @{c} | req/s @{c}" for c in CONCURRENCY) + " |"
    lines = [f"GPU: {device}; bus.jpg, imgsz {IMGSZ}, {n} requests per concurrency.", "", head,
             "|" + " --- |" * (2 + 2 * len(CONCURRENCY))]
    for model, contenders in rows.items():
        for name, figures in contenders.items():
            cells = (["not run: " + figures] + [""] * (2 * len(CONCURRENCY) - 1) if isinstance(figures, str) else
                     [f"{figures[c][k]:.1f}" for c in CONCURRENCY for k in ("p50_ms", "rps")])
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "Server stages (median ms per predict at all concurrencies; decode + letterbox stay on the CPU):", "",
              "| model | decode + letterbox | inference | postprocess | decode + letterbox share |",
              "| --- | --- | --- | --- | --- |"]
    for model, s in stages.items():
        share = s["preprocess"] / sum(s.values())
        lines.append(f"| {model} | {s['preprocess']:.1f} | {s['inference']:.1f} | {s['postprocess']:.1f} | "
                     f"{share:.0%} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="requests per contender and concurrency")
    ap.add_argument("--large", default="yolo26l", help="the larger model, built from <name>.yaml")
    ap.add_argument("--worker", nargs=5, metavar=("KIND", "ONNX", "YAML", "IMAGE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, onnx, yaml, image, n = args.worker
        worker_main(kind, onnx, yaml, image, int(n))
        return 0
    if why := gpu_missing():
        print(f"bench_gpu: no usable GPU on this machine ({why}); nothing measured, RESULTS.md left as it is. "
              "Run it where onnxruntime-gpu sees an NVIDIA GPU.")
        return 0
    from helpers_server import ultralytics_assets
    from ultralytics import YOLO

    os.chdir(tempfile.mkdtemp())  # ultralytics exports into the working directory
    bus = ultralytics_assets() / "bus.jpg"
    rows: dict[str, dict[str, dict[int, dict[str, float]] | str]] = {}
    stages = {}
    for name in ("yolo26n", args.large):
        onnx = Path(YOLO(f"{name}.yaml").export(format="onnx", imgsz=IMGSZ, dynamic=True)).resolve()
        rows[name] = {kind: run_worker(kind, onnx, f"{name}.yaml", bus, args.n) for kind in KINDS}
        rows[name]["server"], stages[name] = server_figures(onnx, bus, args.n)
    device = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip() or "NVIDIA GPU"
    write_section("gpu", "Inference server on a GPU (bench_gpu.py)", "python benchmarks/bench_gpu.py",
                  report(rows, stages, device, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
