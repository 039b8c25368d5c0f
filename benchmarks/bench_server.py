"""Inference server vs raw onnxruntime and ultralytics, one run: yolo26n at 640 on bus.jpg over loopback HTTP.

Run: ``.venv/bin/python benchmarks/bench_server.py [--n 30]``. Prints a markdown table; paste it into RESULTS.md.
Not yet measured here: throughput at concurrency 4 and the runtime install size (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def p50(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    import onnxruntime as ort
    from helpers_server import run_server, ultralytics_assets
    from ultralytics import YOLO

    from inference_service import core

    tmp = Path(tempfile.mkdtemp())
    onnx = Path(YOLO("yolo26n.yaml").export(format="onnx", imgsz=640, dynamic=True, nms=False)).resolve()
    bus = ultralytics_assets() / "bus.jpg"
    tensor, _ = core.preprocess(core.decode_image(bus.read_bytes(), 50_000_000), (640, 640), 32, True)
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    raw = p50(lambda: sess.run(None, {"images": tensor}), args.n)
    yolo = YOLO(str(onnx), task="detect")
    ul = p50(lambda: yolo.predict(str(bus), imgsz=640, verbose=False), args.n)
    data = bus.read_bytes()
    t0 = time.perf_counter()
    with run_server(["--model", str(onnx), "--allow-anonymous"]) as (url, _), httpx.Client() as c:
        c.post(f"{url}/predict", files={"file": data}).raise_for_status()
        start = (time.perf_counter() - t0) * 1000
        srv = p50(lambda: c.post(f"{url}/predict", files={"file": data}).raise_for_status(), args.n)
    print(f"| raw onnxruntime session.run p50 | {raw:.1f} ms | 1.00x |")
    print(f"| ultralytics YOLO(onnx).predict p50 | {ul:.1f} ms | {ul / raw:.2f}x |")
    print(f"| server over loopback HTTP p50 | {srv:.1f} ms | {srv / raw:.2f}x (target <= 1.15x) |")
    print(f"| process start to first predict (incl. health polling) | {start:.0f} ms | target < 1500 ms |")
    del tmp


if __name__ == "__main__":
    main()
