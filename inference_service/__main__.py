"""``python -m inference_service --model PATH [--port 8080] [--api-key-file F]``.

Flags win over the environment Cloud Run sets: ``PORT``, ``MODEL_PATH``, ``API_KEY_FILE``,
``MODEL_NAME``, ``MAX_CONCURRENCY`` and ``REQUEST_TIMEOUT`` (the service's Cloud Run concurrency and request
timeout) and ``DEVICE`` (auto, cpu, cuda: the plan sets cuda on GPU services, cpu on the others);
``ALLOW_ANONYMOUS=1``, ``ORT_THREADS``, ``MAX_WAIT_SECONDS`` and ``MAX_QUEUE`` exist for local runs and tuning.

Shared mode: ``--mode shared --models-dir DIR --tenants-file FILE --region ID [--peer REGION_ID=URL ...]``
[``MODE``, ``MODELS_DIR``, ``TENANTS_FILE``, ``REGION``, ``PEERS`` as comma-separated pairs].
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from inference_service.allocator import keep_freed_memory
from inference_service.auth import KeyFileError, read_digests
from inference_service.device import DEVICES, DeviceError, resolve
from inference_service.recheck import RECHECK_SECONDS
from inference_service.telemetry import configure_logging

MAX_WAIT_S = 5.0  # default wait limit: a burst is served with seconds of queueing, an overload refused in time
QUEUE_PER_TURN = 16  # default hard bound on waiting predicts, per concurrent turn

if TYPE_CHECKING:
    from fastapi import FastAPI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m inference_service", description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("dedicated", "shared"), default=env.get("MODE", "dedicated"),
                   help="one model, or every tenant's models under --models-dir [MODE]")
    p.add_argument("--models-dir", default=env.get("MODELS_DIR"), help="shared: DIR/{owner}/{project}/{model}.onnx")
    p.add_argument("--tenants-file", default=env.get("TENANTS_FILE"), help="shared: tenants YAML [TENANTS_FILE]")
    p.add_argument("--region", default=env.get("REGION"), help="shared: this service's region id [REGION]")
    p.add_argument("--peer", action="append", default=None, metavar="REGION_ID=URL",
                   help="shared: another region's URL, repeatable [PEERS, comma-separated]")
    p.add_argument("--cache-mb", type=float, default=float(env.get("MODEL_CACHE_MB", "2048")),
                   help="shared: memory for cached models, estimated as 3x file size [MODEL_CACHE_MB]")
    p.add_argument("--rate-limit-rps", type=float, default=float(env.get("RATE_LIMIT_RPS", "10")),
                   help="shared: requests/s per tenant [RATE_LIMIT_RPS]")
    p.add_argument("--rate-limit-burst", type=int, default=int(env.get("RATE_LIMIT_BURST", "20")),
                   help="shared: requests a tenant may send at once [RATE_LIMIT_BURST]")
    p.add_argument("--model", default=env.get("MODEL_PATH"), help="ONNX file exported by ultralytics [MODEL_PATH]")
    p.add_argument("--model-name", default=env.get("MODEL_NAME"), help="name in responses [MODEL_NAME; file stem]")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=int(env.get("PORT", "8080")), help="[PORT, default 8080]")
    p.add_argument("--api-key-file", default=env.get("API_KEY_FILE"),
                   help="file of sha256 hex digests of accepted keys, one per line [API_KEY_FILE]")
    p.add_argument("--allow-anonymous", action="store_true", default=env.get("ALLOW_ANONYMOUS") == "1",
                   help="serve without keys (local testing only)")
    p.add_argument("--threads", type=int, default=int(env["ORT_THREADS"]) if env.get("ORT_THREADS") else None,
                   help="onnxruntime intra-op threads in all [ORT_THREADS; default: CPUs available]")
    p.add_argument("--inference-workers", type=int,
                   default=int(env["INFERENCE_WORKERS"]) if env.get("INFERENCE_WORKERS") else None,
                   help="a fixed number of concurrent inferences splitting the threads [INFERENCE_WORKERS; default: "
                        "adaptive, every thread for a lone request, one thread each when requests overlap]")
    p.add_argument("--device", choices=DEVICES, default=env.get("DEVICE", "auto"),
                   help="auto: CUDA when onnxruntime has the CUDA provider and a GPU is visible, else the CPU; cuda: "
                   "the GPU or a start-up error (exit 2), never the CPU [DEVICE, default auto]")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="request body cap, 413 above it")
    # String defaults from the environment go through ``type`` too: a bad value is a usage error, not a traceback.
    p.add_argument("--max-concurrency", type=int, default=env.get("MAX_CONCURRENCY", "4"),
                   help="predicts decoding or inferring at once [MAX_CONCURRENCY, default 4]")
    p.add_argument("--max-wait-seconds", type=float,
                   default=env.get("MAX_WAIT_SECONDS") or None,
                   help="a predict waits for a turn while its expected wait (work queued ahead x recent predict "
                   "time / concurrency) is at most this, else 503 + Retry-After; below --request-timeout "
                   f"[MAX_WAIT_SECONDS; default {MAX_WAIT_S:g}, at most a quarter of the request timeout]")
    p.add_argument("--max-queue", type=int, default=env.get("MAX_QUEUE") or None,
                   help="predicts waiting for a turn at most, whatever their expected wait (each holds its body "
                   f"in memory) [MAX_QUEUE; default {QUEUE_PER_TURN}x concurrency]")
    p.add_argument("--request-timeout", type=float, default=env.get("REQUEST_TIMEOUT", "60"),
                   help="seconds a request may take: 408 if it has not arrived by then, 504 if its answer is not "
                   "ready [REQUEST_TIMEOUT, default 60]")
    p.add_argument("--secrets-recheck-seconds", type=float,
                   default=float(env.get("SECRETS_RECHECK_SECONDS", str(RECHECK_SECONDS))),
                   help="look for a new version of the key and tenants files at most this often (each look at a "
                   f"mounted secret is a Secret Manager access) [SECRETS_RECHECK_SECONDS, default {RECHECK_SECONDS:g}]")
    p.add_argument("--ready-message", default=env.get("READY_MESSAGE"), metavar="TEXT",
                   help="print TEXT on stdout once the server accepts requests, {url} replaced by the address it "
                   "listens on (make serve) [READY_MESSAGE]")
    p.add_argument("--samples-dir", type=Path, default=env.get("SAMPLES_DIR"),
                   help="Test page samples [SAMPLES_DIR; default: samples/ beside the model]")
    args = p.parse_args(argv)
    if args.mode not in ("dedicated", "shared"):  # argparse checks choices on flags, not on MODE
        p.error(f"MODE must be dedicated or shared, got {args.mode!r}")
    if args.device not in DEVICES:  # nor on DEVICE
        p.error(f"DEVICE must be one of {', '.join(DEVICES)}, got {args.device!r}")
    if args.max_queue is None:
        args.max_queue = QUEUE_PER_TURN * args.max_concurrency
    if args.max_wait_seconds is None:
        args.max_wait_seconds = min(MAX_WAIT_S, args.request_timeout / 4)
    if args.secrets_recheck_seconds < 0:
        p.error("--secrets-recheck-seconds must be >= 0")
    if args.max_concurrency < 1 or args.max_queue < 0 or args.request_timeout <= 0:
        p.error("--max-concurrency must be at least 1, --max-queue at least 0, --request-timeout positive")
    if not 0 <= args.max_wait_seconds < args.request_timeout:
        p.error(f"--max-wait-seconds (MAX_WAIT_SECONDS) {args.max_wait_seconds:g} must be at least 0 and below "
                f"--request-timeout (REQUEST_TIMEOUT) {args.request_timeout:g}: a predict admitted to wait longer "
                "would time out (504) instead of being refused at once (503)")
    if any(n is not None and n < 1 for n in (args.inference_workers, args.threads)):
        p.error("--inference-workers and --threads must be at least 1")
    if args.mode == "shared":
        return _check_shared(p, args)
    if not args.model:
        p.error("--model (or MODEL_PATH) is required")
    if not Path(args.model).is_file():
        p.error(f"model file not found: {args.model}")
    if not args.api_key_file and not args.allow_anonymous:
        p.error("--api-key-file (or API_KEY_FILE) is required; pass --allow-anonymous to serve without keys")
    if args.api_key_file and not Path(args.api_key_file).is_file():
        p.error(f"API key file not found: {args.api_key_file}")
    if args.api_key_file:
        try:
            read_digests(Path(args.api_key_file))
        except KeyFileError as e:
            fail(str(e))
    return args


def fail(message: str) -> NoReturn:
    """A start-up mistake that is not about the command line: one line on stderr, exit 2, no usage."""
    print(f"python -m inference_service: error: {message}", file=sys.stderr)
    sys.exit(2)


def _check_shared(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    from inference_service.tenancy import SHARED_REGIONS

    for flag in ("models_dir", "tenants_file", "region"):
        if not getattr(args, flag):
            p.error(f"--{flag.replace('_', '-')} (or {flag.upper()}) is required in shared mode")
    if not Path(args.models_dir).is_dir():
        p.error(f"models dir not found: {args.models_dir}")
    if args.region not in SHARED_REGIONS:
        p.error(f"--region {args.region!r} is not a shared region; use one of {', '.join(SHARED_REGIONS)}")
    pairs = args.peer if args.peer is not None else [x for x in os.environ.get("PEERS", "").split(",") if x.strip()]
    args.peers = {}
    for pair in pairs:
        region, sep, url = pair.strip().partition("=")
        if not sep or region not in SHARED_REGIONS or not url.startswith(("http://", "https://")):
            p.error(f"--peer {pair!r}: expected REGION_ID=URL with a shared region id and an http(s) URL")
        args.peers[region] = url
    if args.rate_limit_rps <= 0 or args.rate_limit_burst < 1 or args.cache_mb <= 0:
        p.error("--rate-limit-rps and --cache-mb must be positive, --rate-limit-burst at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        device = resolve(args.device)  # before the port opens: `cuda` without a GPU must not look like a start
    except DeviceError as e:
        fail(str(e))
    args.device = device.device
    configure_logging()
    logging.getLogger("inference_service").info("device: %s (%s)", device.provider, device.reason)
    keep_freed_memory()
    from inference_service.serve import BindError, bind, serve

    try:
        sock = bind(args.host, args.port)  # before the model loads, so a busy port answers at once
    except BindError as e:
        fail(str(e))
    from inference_service.app import Settings, create_app  # after argument errors, so mistakes answer fast

    if args.mode == "shared":
        return serve(_shared_app(args), sock, args.request_timeout, args.ready_message)
    settings = Settings(
        model_path=Path(args.model),
        model_name=args.model_name,
        api_key_file=Path(args.api_key_file) if args.api_key_file else None,
        allow_anonymous=args.allow_anonymous and not args.api_key_file,
        max_body_bytes=int(args.max_upload_mb * 1024 * 1024),
        intra_op_threads=args.threads,
        samples_dir=args.samples_dir,
        device=args.device,
        **_capacity(args),
    )
    return serve(create_app(settings), sock, args.request_timeout, args.ready_message)


def _capacity(args: argparse.Namespace) -> dict[str, float | None]:
    return {"max_concurrency": args.max_concurrency, "max_queue": args.max_queue,
            "max_wait_seconds": args.max_wait_seconds,
            "request_timeout": args.request_timeout, "inference_workers": args.inference_workers,
            "secrets_recheck_seconds": args.secrets_recheck_seconds}


def _shared_app(args: argparse.Namespace) -> FastAPI:
    """Tenants authenticate per model, so the dedicated paths run keyless and serve no model in this mode."""
    from inference_service.app import Settings
    from inference_service.shared import SharedSettings, create_shared_app
    from inference_service.tenancy import TenantsError

    settings = Settings(model_path=Path(args.models_dir), allow_anonymous=True, intra_op_threads=args.threads,
                        max_body_bytes=int(args.max_upload_mb * 1024 * 1024), samples_dir=args.samples_dir,
                        device=args.device, **_capacity(args))
    shared = SharedSettings(models_dir=Path(args.models_dir), tenants_file=Path(args.tenants_file),
                            region=args.region, peers=args.peers, cache_bytes=int(args.cache_mb * 1024 * 1024),
                            rate_limit_rps=args.rate_limit_rps, rate_limit_burst=args.rate_limit_burst)
    try:
        return create_shared_app(settings, shared)
    except TenantsError as e:
        fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
