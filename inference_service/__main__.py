"""``python -m inference_service --model PATH [--port 8080] [--api-key-file F]``.

Every setting is a flag and an environment variable (``inference_service/settings.py``, where each is defined
once, and ``--help``): a flag wins over the environment (what Cloud Run sets), the environment over the default.

Shared mode: ``--mode shared --models-dir DIR --tenants-file FILE --region ID --shared-regions ID,ID,...
[--peer REGION_ID=URL ...]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from inference_service.allocator import keep_freed_memory
from inference_service.auth import KeyFileError, read_digests
from inference_service.device import DeviceError, resolve
from inference_service.flag_hint import flag_hint
from inference_service.settings import ServerSettings, env_name, flag, one_line
from inference_service.telemetry import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI


@dataclass(frozen=True)
class Launch:
    """What to serve, and where to listen (the address is the command line's alone: Cloud Run needs no other)."""

    settings: ServerSettings
    host: str


class _OneLineParser(argparse.ArgumentParser):
    """A wrong flag is one line, as every other start-up mistake (``fail``), with a close match; not the usage of
    thirty flags."""

    def error(self, message: str) -> NoReturn:
        words = message.removeprefix("unrecognized arguments: ").split() if "unrecognized" in message else []
        if words:  # an empty argument ("$EMPTY") is unrecognized too, with no word to match
            message += flag_hint(self, words[0])
        fail(f"{message} (`python -m inference_service --help` lists the flags)")


def _parser() -> argparse.ArgumentParser:
    """One flag per server setting, with no default of its own: an absent flag leaves the environment's value."""
    p = _OneLineParser(prog="python -m inference_service", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    for name, field in ServerSettings.model_fields.items():
        shown = f", default {field.default}" if field.default not in (None, (), PydanticUndefined) else ""
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": f"{field.description} [{env_name(name)}{shown}]".replace("%", "%%")}
        if field.annotation is bool:
            kwargs.update(action="store_const", const=True)
        elif name == "peers":
            kwargs.update(action="append", metavar="REGION_ID=URL")
        p.add_argument(flag(name), **kwargs)
    return p


def parse_args(argv: list[str] | None = None) -> Launch:
    """Flags over the environment over the defaults; a bad value, from either, is one line and exit 2."""
    flags = vars(_parser().parse_args(argv))
    host = flags.pop("host")
    try:
        settings = ServerSettings(**flags)
    except ValidationError as e:
        fail(one_line(e))
    _check_files(settings)
    return Launch(settings, host)


def _check_files(s: ServerSettings) -> None:
    """What the settings name must exist (and the key file hold digests) before anything starts."""
    if s.mode == "shared":
        assert s.models_dir is not None  # the settings' own check
        if not s.models_dir.is_dir():
            fail(f"models dir not found: {s.models_dir}")
        return
    assert s.model_path is not None  # the settings' own check
    if not s.model_path.is_file():
        fail(f"model file not found: {s.model_path}")
    if not s.api_key_file and not s.allow_anonymous:
        fail("--api-key-file (or API_KEY_FILE) is required; pass --allow-anonymous to serve without keys")
    if s.api_key_file and not s.api_key_file.is_file():
        fail(f"API key file not found: {s.api_key_file}")
    if s.api_key_file:
        try:
            read_digests(s.api_key_file)
        except KeyFileError as e:
            fail(str(e))


def fail(message: str) -> NoReturn:
    """A start-up mistake: one line on stderr, exit 2, no usage."""
    print(f"python -m inference_service: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    launch = parse_args(argv)
    settings = launch.settings
    try:
        device = resolve(settings.device)  # before the port opens: `cuda` without a GPU must not look like a start
    except DeviceError as e:
        fail(str(e))
    settings = settings.model_copy(update={"device": device.device})
    configure_logging()
    logging.getLogger("inference_service").info("device: %s (%s)", device.provider, device.reason)
    keep_freed_memory()
    from inference_service.serve import BindError, bind, serve

    try:
        sock = bind(launch.host, settings.port)  # before the model loads, so a busy port answers at once
    except BindError as e:
        fail(str(e))
    from inference_service.app import create_app  # after argument errors, so mistakes answer fast

    if settings.mode == "shared":
        app = _shared_app(settings)
    else:
        if settings.api_key_file:
            settings = settings.model_copy(update={"allow_anonymous": False})  # a key file always applies
        app = create_app(settings)
    serve(app, sock, settings.request_timeout, settings.drain_seconds, settings.ready_message)


def _shared_app(settings: ServerSettings) -> FastAPI:
    """Tenants authenticate per model, so the dedicated paths run keyless and serve no model in this mode."""
    from inference_service.shared import create_shared_app
    from inference_service.tenancy import TenantsError

    try:
        return create_shared_app(settings.model_copy(update={"model_path": settings.models_dir,
                                                             "allow_anonymous": True}))
    except TenantsError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
