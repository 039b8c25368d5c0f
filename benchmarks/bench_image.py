"""The server image: build times, size over the base, its layers, and container start to the first /health 200.

Run: ``.venv/bin/python benchmarks/bench_image.py [--stack prod] [--from-nothing]``; rewrites the ``image``
section of benchmarks/RESULTS.md. Builds with `make image`'s code (fleet/build_image.py: docker buildx, or
podman/buildah with stand-in bases where the real ones cannot be pulled) under tags of its own, which it removes.
``--from-nothing`` also times a clean machine's first build (pull attempt, stand-in bases, every layer) in a
throw-away store. Needs no farm-bench.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers_server import start_container, write_key_file  # noqa: E402

from benchmarks.results import write_section  # noqa: E402
from fleet.build_image import (  # noqa: E402
    DOCKERFILE,
        BuildResult,
    Engine,
    build,
    dockerfile_bases,
    find_engine,
    podman_engine,
)

TAG = "localhost/yolo-fleet-bench/inference-server"
STARTS = 3
UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def size_bytes(text: str) -> float:
    """A size as docker/podman print it ("161 MB", "18.4kB", "0B", or plain bytes)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kKMG]?B)?\s*", text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return float(match.group(1)) * UNITS[match.group(2) or "B"]


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def image_size(engine: Engine, ref: str) -> float:
    return float(engine("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def layers(engine: Engine, ref: str) -> list[tuple[float, str]]:
    """(size, what made it), newest first."""
    out = engine("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", ref).stdout
    return [(size_bytes(size), created) for size, created in (line.split("\t", 1) for line in out.splitlines())]


def app_layers(history: list[tuple[float, str]]) -> tuple[float, list[tuple[str, float]]]:
    """The runtime (pip install) layer's size, and the layers above it by what they hold."""
    pip = next(i for i, (_, created) in enumerate(history) if "pip install" in created)
    named = []
    for size, created in history[:pip]:
        if size == 0:
            continue
        if "MODEL_FILES=" in created:
            what = "model files (MODEL_FILES)"
        elif "_letterbox" in created or ("COPY file:" in created and "/app/inference_service" in created):
            what = "letterbox kernel (build stage)"
        else:
            dest = re.search(r"(/app/[\w/.-]*)", created)
            what = f"COPY to {dest.group(1)}" if dest else created[:60]
        named.append((what, size))
    return history[pip][0], named[::-1]


def start_times(engine: Engine, tag: str, secrets_dir: Path) -> list[float]:
    times = []
    for _ in range(STARTS):
        cid, _, seconds = start_container(engine, tag, secrets_dir)
        engine("rm", "-f", cid, check=False)
        times.append(seconds)
    return times


def code_change_build(stack: str, engine: Engine) -> BuildResult:
    """A rebuild after a change to the server's code: the repository's tracked files copied, one line added to
    inference_service/app.py; every layer before the server's COPY comes from the cache."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        for name in filter(None, files.decode().split("\0")):
            if (ROOT / name).is_file():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, Path(tmp) / name)
        with (Path(tmp) / "inference_service" / "app.py").open("a") as f:
            f.write("# a code change\n")
        result = build(stack, f"{TAG}:code-change", engine=engine, project_dir=Path(tmp), quiet=True)
    engine("rmi", result.tag, check=False)
    return result


def from_nothing(stack: str) -> float:
    """Seconds for a first build in an empty store and cache: pull attempts, stand-in bases, every layer."""
    state = Path(tempfile.mkdtemp(prefix="bench-image-state-", dir="/var/tmp"))
    try:
        engine = podman_engine(state)
        started = time.monotonic()
        build(stack, f"{TAG}:from-nothing", engine=engine, state=state, quiet=True)
        return time.monotonic() - started
    finally:
        podman_engine(state)("rmi", "--all", "--force", check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(state))]
        for mount in sorted(mounts, key=len, reverse=True):  # the store's own overlay mounts, deepest first
            subprocess.run(["umount", mount], check=False)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", default="prod")
    p.add_argument("--from-nothing", action="store_true", help="also time a first build in an empty store")
    args = p.parse_args()
    engine = find_engine()
    load_before = os.getloadavg()[0]
    first = from_nothing(args.stack) if args.from_nothing and engine.name == "podman" else None
    cold = build(args.stack, f"{TAG}:cold", engine=engine, no_cache=True, quiet=True)
    cached = build(args.stack, f"{TAG}:cold", engine=engine, quiet=True)
    changed = code_change_build(args.stack, engine)
    try:
        base = dockerfile_bases(ROOT / DOCKERFILE)[-1]
        total, base_size = image_size(engine, cold.tag), image_size(engine, base)
        runtime, app = app_layers(layers(engine, cold.tag))
        with tempfile.TemporaryDirectory(prefix="bench-image-keys-") as keys:
            write_key_file(Path(keys))
            Path(keys).chmod(0o755)
            (Path(keys) / "sha256.txt").chmod(0o644)
            starts = start_times(engine, cold.tag, Path(keys))
    finally:
        engine("rmi", cold.tag, check=False)

    rows = []
    if first is not None:
        rows.append(("first build on an empty machine (pull attempts, stand-in bases, every layer)", f"{first:.0f} s"))
    rows += [
        ("build, no layer cache (bases present; pip downloads from PyPI)", f"{cold.seconds:.0f} s"),
        ("build again, nothing changed (every layer cached)", f"{cached.seconds:.1f} s"),
        ("build after a change to the server's code (layers up to the models cached)", f"{changed.seconds:.1f} s"),
        ("image size", mb(total)),
        (f"base ({base.rsplit('/', 1)[-1]}{', stand-in' if cold.stand_in_bases else ''})", mb(base_size)),
        ("size over the base", mb(total - base_size)),
        ("runtime layer (pip install of inference_service/requirements.txt)", mb(runtime)),
        *((f"app layer: {what}", mb(size)) for what, size in app),
        ("app layers in all", mb(sum(size for _, size in app))),
        (f"container start to first /health 200, median of {STARTS}",
         f"{statistics.median(starts):.2f} s ({', '.join(f'{s:.2f}' for s in starts)})"),
    ]
    table = "\n".join(f"| {what} | {value} |" for what, value in rows)
    note = ("**Base: stand-ins.** No registry answers on this machine, so both bases are mmdebstrap stand-ins "
            f"(Debian 12 with Debian's CPython 3.11: {mb(base_size)} here, against about 125 MB for the real "
            "python:3.11-slim-bookworm, whose CPython is built from source). The layers above the base are like for "
            "like; the base, the image size and the first build's time are not.") if cold.stand_in_bases else \
        "Bases: the real python images, pulled."
    body = f"""Stack `{args.stack}` ({', '.join(cold.model_files)}), built with {engine.name}
({'buildah bud --layers, runc' if engine.name == 'podman' else 'docker buildx'}); the container runs as the image
test runs it (`--read-only`, `--tmpfs /tmp`, host network, the demo model). One run on a machine shared with other
work (1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()}
CPUs): timings vary by tens of percent with it, sizes do not.

| measure | value |
|---|---|
{table}

{note}
"""
    print(body)
    write_section("image", "Server image (bench_image.py)",
                  ".venv/bin/python benchmarks/bench_image.py" + (" --from-nothing" if first is not None else ""),
                  body)


if __name__ == "__main__":
    main()
