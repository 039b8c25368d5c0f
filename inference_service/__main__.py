"""``python -m inference_service --model PATH [--port 8080] [--api-key-file F]``.

Flags win over the environment Cloud Run sets: ``PORT``, ``MODEL_PATH``, ``API_KEY_FILE``,
``MODEL_NAME``; ``ALLOW_ANONYMOUS=1`` and ``ORT_THREADS`` exist for local runs and tuning.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inference_service.telemetry import configure_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m inference_service", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=env.get("MODEL_PATH"), help="ONNX file exported by ultralytics [MODEL_PATH]")
    p.add_argument("--model-name", default=env.get("MODEL_NAME"), help="name in responses [MODEL_NAME; file stem]")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=int(env.get("PORT", "8080")), help="[PORT, default 8080]")
    p.add_argument("--api-key-file", default=env.get("API_KEY_FILE"),
                   help="file of sha256 hex digests of accepted keys, one per line [API_KEY_FILE]")
    p.add_argument("--allow-anonymous", action="store_true", default=env.get("ALLOW_ANONYMOUS") == "1",
                   help="serve without keys (local testing only)")
    p.add_argument("--threads", type=int, default=int(env["ORT_THREADS"]) if env.get("ORT_THREADS") else None,
                   help="onnxruntime intra-op threads [ORT_THREADS; default: CPUs available]")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="request body cap, 413 above it")
    p.add_argument("--samples-dir", type=Path, default=None, help="Test page samples [default: samples/ beside model]")
    args = p.parse_args(argv)
    if not args.model:
        p.error("--model (or MODEL_PATH) is required")
    if not Path(args.model).is_file():
        p.error(f"model file not found: {args.model}")
    if not args.api_key_file and not args.allow_anonymous:
        p.error("--api-key-file (or API_KEY_FILE) is required; pass --allow-anonymous to serve without keys")
    if args.api_key_file and not Path(args.api_key_file).is_file():
        p.error(f"API key file not found: {args.api_key_file}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging()
    import uvicorn  # after argument errors, so `--help` and mistakes answer fast

    from inference_service.app import Settings, create_app

    settings = Settings(
        model_path=Path(args.model),
        model_name=args.model_name,
        api_key_file=Path(args.api_key_file) if args.api_key_file else None,
        allow_anonymous=args.allow_anonymous and not args.api_key_file,
        max_body_bytes=int(args.max_upload_mb * 1024 * 1024),
        intra_op_threads=args.threads,
        samples_dir=args.samples_dir,
    )
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False,
                timeout_keep_alive=620)  # longer than Cloud Run's front end keeps idle connections (600 s)


if __name__ == "__main__":
    sys.exit(main())
