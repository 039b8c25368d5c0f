"""Inference server vs raw onnxruntime and ultralytics in one run: yolo26n at 640 on bus.jpg over loopback HTTP.

Run: ``.venv/bin/python benchmarks/bench_server.py [--n 40] [--processes 3] [--no-install]``; rewrites the
``server`` section of benchmarks/RESULTS.md. Every contender runs in processes of its own, as the server does, and
each series takes its calls from ``--processes`` of them in turn (one process's luck is not a median): raw onnxruntime
(default session options), raw onnxruntime with the server's session options, the same preceded by the JPEG
decode (what any server must do at least), and ultralytics, each a worker started from this file with
``--worker`` that times its own call when told to. (Measured in this process
instead, next to torch and two other sessions, raw onnxruntime came out ~20% slower than in a clean process,
which flattered the server.) The latency series are interleaved (raw, tuned, decoding, ultralytics, server, ...),
in a fresh order every round, so that whatever else the machine does (another contender's threads still
spinning, say) lands on all of them alike and no series always follows the same one; throughput runs alternate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.results import write_section  # noqa: E402

CONCURRENCY = 4
# onnxruntime's intra-op threads spin for a while after each run: without a pause, the session measured
# last (in one process or another) takes CPU from the one measured next, and the baseline came out 2x slower
# than alone. 50 ms lets every process go idle first.
SETTLE_S = 0.05


class Upload(NamedTuple):
    """A predict's multipart body and its headers, built once for every request."""

    body: bytes
    headers: dict[str, str]


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


def worker_main(kind: str, onnx: str, image: str) -> None:
    """A contender in its own process. Reads commands on stdin, answers one line each on stdout:
    ``latency`` -> ms of one call, ``throughput N`` -> calls/s of N calls at CONCURRENCY threads. Whatever the
    libraries print (ultralytics does, on stdout) goes to stderr, so stdout carries only the answers."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if kind == "ultralytics":
        from ultralytics import YOLO

        yolo = YOLO(onnx, task="detect")

        def call() -> object:
            return yolo.predict(image, imgsz=640, verbose=False)
    else:
        import onnxruntime as ort

        from inference_service.decode import decode_image
        from inference_service.letterbox import preprocess
        from inference_service.model import cpu_count, session_options

        data = Path(image).read_bytes()
        tensor, _ = preprocess(decode_image(data, 50_000_000), (640, 640), 32, True)
        opts = None if kind == "raw" else session_options(cpu_count())
        session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: tensor}

        def call() -> object:
            if kind == "decoding":  # the least any server does per request: decode, then infer
                decode_image(data, 50_000_000)
            return session.run(None, feed)
    call()
    print("ready", file=answers, flush=True)
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "latency":
            print(f"{timed(call):.4f}", file=answers, flush=True)
        elif cmd == "throughput":
            print(f"{throughput(lambda: call, int(arg[0])):.4f}", file=answers, flush=True)


class Worker:
    """The parent's handle on a ``--worker`` process."""

    def __init__(self, kind: str, onnx: Path, image: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(onnx), str(image)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=onnx.parent)
        if self._line() != "ready":
            raise RuntimeError(f"{kind} worker did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return line

    def ask(self, command: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


@contextmanager
def workers(onnx: Path, image: Path, kinds: tuple[str, ...], processes: int) -> Iterator[dict[str, list[Worker]]]:
    """``processes`` worker processes of each kind."""
    started: dict[str, list[Worker]] = {kind: [] for kind in kinds}
    try:
        for kind in kinds:
            started[kind] += [Worker(kind, onnx, image) for _ in range(processes)]
        yield started
    finally:
        for pool in started.values():
            for w in pool:
                w.close()


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
    ap.add_argument("--rounds", type=int, default=3, help="alternating throughput runs per contender")
    ap.add_argument("--processes", type=int, default=3,
                    help="processes per contender and per server; each series takes its calls from them in turn")
    ap.add_argument("--no-install", action="store_true", help="skip the fresh-venv install size")
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "ONNX", "IMAGE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(*args.worker)
    from helpers_server import MULTIPART, multipart, run_server, ultralytics_assets
    from ultralytics import YOLO

    from inference_service.letterbox import describe_kernel
    from inference_service.model import Model, cpu_count

    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # ultralytics exports a yaml-built model into the working directory
    onnx = Path(YOLO("yolo26n.yaml").export(format="onnx", imgsz=640, dynamic=True)).resolve()
    export = "end-to-end" if Model(onnx).info.end2end else "raw: the server runs its own NMS, as ultralytics does"
    bus = ultralytics_assets() / "bus.jpg"
    data = bus.read_bytes()
    threads = cpu_count()

    upload = Upload(multipart([(b"file", b"bus.jpg", data)]), MULTIPART)
    start_ms = statistics.median(start_to_first_predict(onnx, upload) for _ in range(3))
    single = ["--inference-workers", "1"]  # the server before adaptive lanes: one inference at a time, all threads
    with ExitStack() as stack:
        def start(extra: list[str]) -> list[str]:
            return [stack.enter_context(run_server(["--model", str(onnx), "--allow-anonymous", *extra]))[0]
                    for _ in range(args.processes)]

        servers = {"server": start([]), "single": start(single)}
        for urls in servers.values():
            for url in urls:
                post(connect(url), upload)  # the first predict of each process, not timed
        contenders = stack.enter_context(workers(onnx, bus, ("raw", "tuned", "decoding", "ultralytics"),
                                                 args.processes))
        series, stages, rates = measure(args, contenders, servers, upload)
    p50 = {name: statistics.median(values) for name, values in series.items()}
    stage50 = {name: statistics.median(values) for name, values in stages.items()}
    rate = {name: statistics.median(values) for name, values in rates.items()}
    share = {name: statistics.median(x / r for x, r in zip(rates[name], rates["raw"], strict=True))
             for name in ("decoding", "server", "single")}
    report(args, p50, stage50, rate, share, start_ms, threads, describe_kernel(), export)


def start_to_first_predict(onnx: Path, upload: Upload) -> float:
    """ms from spawning ``python -m inference_service`` to its first 200 predict, polling every 10 ms with the
    stdlib client (creating an httpx client per poll cost ~30 ms of CPU each, time taken from the server)."""
    from helpers_server import free_port

    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "inference_service", "--model", str(onnx), "--allow-anonymous",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/predict", upload.body, upload.headers)
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return (time.perf_counter() - start) * 1000
            except OSError:  # not listening yet
                pass
            time.sleep(0.01)
        raise RuntimeError(f"server exited with {proc.returncode} before answering")
    finally:
        proc.terminate()
        proc.wait(10)


def connect(base: str) -> http.client.HTTPConnection:
    """The stdlib client: httpx spends ~2 ms of CPU per request on this machine, the client's cost, not the
    server's, and it shares the two cores with the server."""
    return http.client.HTTPConnection(urlsplit(base).hostname or "", urlsplit(base).port, timeout=60)


def post(conn: http.client.HTTPConnection, upload: Upload) -> dict:
    """One predict of ``upload``; its JSON answer."""
    conn.request("POST", "/predict", upload.body, upload.headers)
    r = conn.getresponse()
    payload = r.read()
    if r.status != 200:
        raise RuntimeError(f"predict answered {r.status}: {payload[:200]!r}")
    answer: dict = json.loads(payload)
    return answer


def measure(args: argparse.Namespace, contenders: dict[str, list[Worker]], servers: dict[str, list[str]],
            upload: Upload) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """The interleaved latency series (ms), the default server's own stage timings (ms) and the alternating
    throughput rounds (calls/s). ``servers``: the URLs of the default server's processes and of the
    ``--inference-workers 1`` one's. Call i of a series goes to process i % processes: two processes of one
    program differed by up to 1.4 ms at p50 here, for as long as they ran (where their threads landed, their
    heaps), so a series drawn from one process measured that process's luck as much as the program."""
    conns = {name: [connect(url) for url in urls] for name, urls in servers.items()}
    series: dict[str, list[float]] = {name: [] for name in (*contenders, "server", "single", "health")}
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}

    def server(i: int) -> float:
        t = time.perf_counter()
        speed = post(conns["server"][i % args.processes], upload)["images"][0]["speed"]
        elapsed = (time.perf_counter() - t) * 1000
        for stage in stages:
            stages[stage].append(speed[stage])
        return elapsed

    def health(i: int) -> None:
        conn = conns["server"][i % args.processes]
        conn.request("GET", "/health")
        conn.getresponse().read()

    calls: list[tuple[str, Callable[[int], float]]] = [
        *((name, lambda i, pool=pool: pool[i % args.processes].ask("latency")) for name, pool in contenders.items()),
        ("server", server), ("single", lambda i: timed(lambda: post(conns["single"][i % args.processes], upload))),
        ("health", lambda i: timed(lambda: health(i)))]
    # A fresh order every round. A rotation kept each series behind the same one: the server always came 50 ms
    # after ultralytics' predict and was 1.7-1.8 ms slower than the `--inference-workers 1` server that always came
    # after it (three runs, either server started first); shuffled, the two are within 0.1 ms.
    shuffle = random.Random(0)
    for i in range(args.n):
        for name, call in shuffle.sample(calls, len(calls)):
            time.sleep(SETTLE_S)
            series[name].append(call(i))

    def client(url: str) -> Callable[[], Callable[[], object]]:
        def make() -> Callable[[], object]:
            own = connect(url)  # a connection per client thread
            return lambda: post(own, upload)
        return make

    # each round: raw ORT (server's options, same threads), the same with a JPEG decode per call, then both
    # servers, each round on the next process of each; shares are medians of the rounds' ratios, which drift less
    # with the machine than ratios of medians
    rates: dict[str, list[float]] = {"raw": [], "decoding": [], "server": [], "single": []}
    for r in range(args.rounds):
        for name, worker in (("raw", "tuned"), ("decoding", "decoding")):
            time.sleep(SETTLE_S)
            rates[name].append(contenders[worker][r % args.processes].ask(f"throughput {args.total}"))
        for name in ("server", "single"):
            time.sleep(SETTLE_S)
            rates[name].append(throughput(client(servers[name][r % args.processes]), args.total))
    return series, stages, rates


def report(args: argparse.Namespace, p50: dict[str, float], stage50: dict[str, float], rate: dict[str, float],
           share: dict[str, float], start_ms: float, threads: int, kernel: str, export: str) -> None:
    size = None if args.no_install else install_size_mb()
    # the baseline is the faster of the two raw onnxruntime series, so a slow moment in one cannot flatter the server
    raw50, srv50 = min(p50["raw"], p50["tuned"]), p50["server"]
    bound = p50["decoding"] + p50["health"]  # no server can answer faster: it must decode and speak HTTP
    vs_bound, vs_ul = srv50 / bound, srv50 / p50["ultralytics"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    size_text = f"{size:.0f} MB" if size is not None else "not measured (--no-install)"
    rows = [
        ("raw onnxruntime session.run p50 (default session options)", f"{p50['raw']:.1f} ms",
         f"{p50['raw'] / raw50:.2f}x", ""),
        ("onnxruntime session.run p50, the server's session options", f"{p50['tuned']:.1f} ms",
         f"{p50['tuned'] / raw50:.2f}x", ""),
        ("ultralytics YOLO(onnx).predict p50", f"{p50['ultralytics']:.1f} ms", f"{p50['ultralytics'] / raw50:.2f}x",
         ""),
        ("server over loopback HTTP p50", f"{srv50:.1f} ms", f"{srv50 / raw50:.2f}x",
         f"{vs_bound:.2f}x the bound, <= 1.10x (aim 1.05x): {verdict(vs_bound <= 1.10)}; {vs_ul:.2f}x ultralytics, "
         f"<= 1.00x (aim 0.90x): {verdict(vs_ul <= 1.0)}"),
        ("server with `--inference-workers 1` over loopback HTTP p50", f"{p50['single']:.1f} ms",
         f"{p50['single'] / raw50:.2f}x", ""),
        ("server stages p50: decode + letterbox / inference / postprocess",
         f"{stage50['preprocess']:.1f} / {stage50['inference']:.1f} / {stage50['postprocess']:.2f} ms", "", ""),
        ("GET /health round trip p50 (this machine's HTTP floor)", f"{p50['health']:.2f} ms", "", ""),
        ("decode bus.jpg + session.run p50 (server's options; simplejpeg's decode, as the server's when not alone; "
         "~0.1 ms faster than a lone request's row by row decode)",
         f"{p50['decoding']:.1f} ms", f"{p50['decoding'] / raw50:.2f}x", ""),
        ("bound for any server: that + the HTTP floor (no letterbox, no multipart)", f"{bound:.1f} ms",
         f"{bound / raw50:.2f}x", ""),
        (f"throughput at concurrency {CONCURRENCY}: raw ORT (one session, server's options), median of "
         f"{args.rounds}", f"{rate['raw']:.1f} /s", "", ""),
        (f"throughput at concurrency {CONCURRENCY}: decode + session.run, median of {args.rounds}",
         f"{rate['decoding']:.1f} /s", f"{share['decoding']:.0%} of raw (median per round)", ""),
        (f"throughput at concurrency {CONCURRENCY}: server (default: adaptive lanes), median of {args.rounds}",
         f"{rate['server']:.1f} /s", f"{share['server']:.0%} of raw (median per round)",
         f">= 90%: {verdict(share['server'] >= 0.9)}"),
        (f"throughput at concurrency {CONCURRENCY}: server with `--inference-workers 1` (1 x {threads} threads), "
         f"median of {args.rounds}", f"{rate['single']:.1f} /s", f"{share['single']:.0%} of raw (median per round)",
         ""),
        ("process start to first predict, median of 3", f"{start_ms:.0f} ms", "",
         f"< 1500 ms: {verdict(start_ms < 1500)}"),
        ("runtime requirements in a fresh venv", size_text, "",
         "< 250 MB: " + ("not measured" if size is None else verdict(size < 250))),
    ]
    table = "\n".join(f"| {' | '.join(row)} |" for row in rows)
    letterbox = {"native+jpeg": "the C letterbox kernel, a lone request's JPEG decoded row by row into it while the "
                                "spare CPU letterboxes (jpeg_letterbox.c)",
                 "native": "the C letterbox kernel (built without libjpeg: decode, then letterbox)",
                 "numpy": "the numpy letterbox (kernel not built)"}[kernel]
    body = f"""yolo26n (random weights) exported at 640 (dynamic; {export}), bus.jpg (810x1080, tensor 1x3x640x480),
{args.n} interleaved requests per latency series, each series taking them in turn from {args.processes} processes
of its own (two processes of one program differ by up to 1.4 ms at p50 here), all on the same machine,
onnxruntime with {threads} intra-op threads (the CPUs this process may use) unless said otherwise; the server
used {letterbox}.

| measure | value | vs raw ORT (the faster series) | target |
|---|---|---|---|
{table}

The server runs adaptive lanes (inference_service/lanes.py): a lone request gets every onnxruntime thread,
overlapping requests one thread each; `--inference-workers 1` is one inference at a time with every thread.
The server's time over raw onnxruntime is the image work ultralytics also does (JPEG decode, the letterbox)
plus one HTTP round trip with multipart parsing; the "stages" row splits it, and the /health row is what any
request costs here before the app does anything. The "bound" row adds only the decode and the HTTP floor to raw
onnxruntime: no server on this machine answers faster, so the latency target is a ratio to it (and to ultralytics'
in-process predict, which decodes and letterboxes too but speaks no HTTP). Throughput is CPU-bound: decoding and
letterboxing cost CPU that raw onnxruntime, fed a ready tensor, never spends; the "decode + session.run" rows
show what the decode alone takes from it (and the server's clients run on the same two cores).
"""
    print(body)
    write_section("server", "Inference server (bench_server.py)",
                  f".venv/bin/python benchmarks/bench_server.py {' '.join(sys.argv[1:])}".rstrip(), body)


if __name__ == "__main__":
    main()
