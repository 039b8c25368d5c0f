"""Inference server vs raw onnxruntime and ultralytics in one run: yolo26n at 640 on bus.jpg over loopback HTTP.

Run: ``.venv/bin/python benchmarks/bench_server.py [--n 40] [--no-install]``; rewrites the ``server`` section
of benchmarks/RESULTS.md. The three latency series are interleaved (raw, ultralytics, server, raw, ...) so
that whatever else the machine does lands on all of them alike; throughput runs alternate the same way.
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
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.results import write_section  # noqa: E402

CONCURRENCY = 4
# onnxruntime's intra-op threads spin for a while after each run: without a pause, the session measured
# last (in this process or in the server's) takes CPU from the one measured next, and the baseline came out
# 2x slower than alone. 50 ms lets every process go idle first.
SETTLE_S = 0.05


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def throughput(make_call: Callable[[], Callable[[], object]], total: int, concurrency: int = CONCURRENCY) -> float:
    """Calls per second with ``concurrency`` threads sharing ``total`` calls; each thread gets its own callable
    from ``make_call`` (an HTTP client per thread, like separate users). A failed call fails the benchmark."""
    left = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(call: Callable[[], object]) -> None:
        try:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                call()
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(make_call(),)) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return total / (time.perf_counter() - start)


def install_size_mb() -> float:
    """Size of a fresh venv holding inference_service/requirements.txt, what the image's pip layer adds."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        subprocess.run([f"{tmp}/bin/python", "-m", "pip", "install", "-q", "-r",
                        str(ROOT / "inference_service/requirements.txt")], check=True)
        return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="requests per latency series")
    ap.add_argument("--total", type=int, default=48, help="requests per throughput run")
    ap.add_argument("--no-install", action="store_true", help="skip the fresh-venv install size")
    args = ap.parse_args()
    import onnxruntime as ort
    from helpers_server import MULTIPART, multipart, run_server, ultralytics_assets
    from ultralytics import YOLO

    from inference_service import core
    from inference_service.model import cpu_count, session_options

    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # ultralytics exports a yaml-built model into the working directory
    onnx = Path(YOLO("yolo26n.yaml").export(format="onnx", imgsz=640, dynamic=True)).resolve()
    bus = ultralytics_assets() / "bus.jpg"
    data = bus.read_bytes()
    tensor, _ = core.preprocess(core.decode_image(data, 50_000_000), (640, 640), 32, True)
    threads = cpu_count()
    raw = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    tuned = ort.InferenceSession(str(onnx), session_options(threads), providers=["CPUExecutionProvider"])
    yolo = YOLO(str(onnx), task="detect")

    t0 = time.perf_counter()
    body = multipart([(b"file", b"bus.jpg", data)])
    with run_server(["--model", str(onnx), "--allow-anonymous"]) as (url, _):
        # the stdlib client with a body built once: httpx spends ~2 ms of CPU per request on this machine,
        # the client's cost, not the server's, and it shares the two cores with the server
        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(urlsplit(url).hostname or "", urlsplit(url).port, timeout=60)

        conn = connect()

        def post(conn: http.client.HTTPConnection = conn) -> dict:
            conn.request("POST", "/predict", body, MULTIPART)
            r = conn.getresponse()
            payload = r.read()
            if r.status != 200:
                raise RuntimeError(f"predict answered {r.status}: {payload[:200]!r}")
            return json.loads(payload)

        post()
        start_ms = (time.perf_counter() - t0) * 1000
        series: dict[str, list[float]] = {"raw": [], "tuned": [], "ultralytics": [], "server": []}
        stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
        calls = {
            "raw": lambda: raw.run(None, {"images": tensor}),
            "tuned": lambda: tuned.run(None, {"images": tensor}),
            "ultralytics": lambda: yolo.predict(str(bus), imgsz=640, verbose=False),
        }
        for fn in calls.values():
            fn()
        for _ in range(args.n):
            for name, fn in calls.items():
                time.sleep(SETTLE_S)
                series[name].append(timed(fn))
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            speed = post()["images"][0]["speed"]
            series["server"].append((time.perf_counter() - t) * 1000)
            for stage in stages:
                stages[stage].append(speed[stage])
        p50 = {name: statistics.median(values) for name, values in series.items()}
        stage50 = {name: statistics.median(values) for name, values in stages.items()}

        def server_call() -> Callable[[], object]:
            own = connect()  # a connection per client thread
            return lambda: post(own)

        rates: dict[str, list[float]] = {"raw": [], "server": []}
        for _ in range(2):
            rates["raw"].append(throughput(lambda: calls["tuned"], args.total))
            rates["server"].append(throughput(server_call, args.total))
        rate = {name: statistics.median(values) for name, values in rates.items()}

    size = None if args.no_install else install_size_mb()
    raw50, srv50 = p50["raw"], p50["server"]
    ratio, vs_ul = srv50 / raw50, srv50 / p50["ultralytics"]
    share = rate["server"] / rate["raw"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    size_text = f"{size:.0f} MB" if size is not None else "not measured (--no-install)"
    rows = [
        ("raw onnxruntime session.run p50 (default session options)", f"{raw50:.1f} ms", "1.00x", ""),
        ("onnxruntime session.run p50, the server's session options", f"{p50['tuned']:.1f} ms",
         f"{p50['tuned'] / raw50:.2f}x", ""),
        ("ultralytics YOLO(onnx).predict p50", f"{p50['ultralytics']:.1f} ms", f"{p50['ultralytics'] / raw50:.2f}x",
         ""),
        ("server over loopback HTTP p50", f"{srv50:.1f} ms", f"{ratio:.2f}x",
         f"<= 1.15x: {verdict(ratio <= 1.15)}; {vs_ul:.2f}x ultralytics: {verdict(vs_ul <= 1.0)}"),
        ("server stages p50: decode + letterbox / inference / postprocess",
         f"{stage50['preprocess']:.1f} / {stage50['inference']:.1f} / {stage50['postprocess']:.2f} ms", "", ""),
        (f"throughput at concurrency {CONCURRENCY}: raw ORT (one session, server's options)",
         f"{rate['raw']:.1f} /s", "", ""),
        (f"throughput at concurrency {CONCURRENCY}: server", f"{rate['server']:.1f} /s", f"{share:.0%} of raw",
         f">= 90%: {verdict(share >= 0.9)}"),
        ("process start to first predict (incl. health polling)", f"{start_ms:.0f} ms", "",
         f"< 1500 ms: {verdict(start_ms < 1500)}"),
        ("runtime requirements in a fresh venv", size_text, "",
         f"< 250 MB: {verdict(size is not None and size < 250)}"),
    ]
    table = "\n".join(f"| {' | '.join(row)} |" for row in rows)
    body = f"""yolo26n (random weights) exported at 640 (dynamic, end-to-end), bus.jpg (810x1080, tensor 1x3x640x480),
{args.n} interleaved requests per latency series, everything on the same machine, onnxruntime with {threads}
intra-op threads (the CPUs this process may use) unless said otherwise.

| measure | value | vs raw ORT | target |
|---|---|---|---|
{table}

The server's time over raw onnxruntime is the image work ultralytics also does (JPEG decode with PIL, the
letterbox with a bit-exact numpy port of OpenCV's bilinear resize) plus HTTP and multipart parsing; the
"stages" row splits it. Throughput is CPU-bound on this machine: decoding and letterboxing cost CPU that raw
onnxruntime, fed a ready tensor, never spends.
"""
    print(body)
    write_section("server", "Inference server (bench_server.py)",
                  f".venv/bin/python benchmarks/bench_server.py --n {args.n}", body)


if __name__ == "__main__":
    main()
