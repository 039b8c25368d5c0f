"""The Test page: the static page at ``/``, what it needs to know (``/info``) and its sample images."""

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from inference_service import __version__
from inference_service.auth import KeyStore
from inference_service.providers import ModelProvider

log = logging.getLogger("inference_service")
STATIC_DIR = Path(__file__).parent.parent / "static"  # mounted at /static by the app
SAMPLE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def add_page_routes(router: APIRouter, provider: ModelProvider, keys: KeyStore, samples_dir: Path) -> None:
    """The page's routes; ``samples_dir`` holds the images it offers (a missing one is said once, at start)."""
    if not samples_dir.is_dir():
        log.warning("the Test page offers no sample images: %s is not a directory (--samples-dir, SAMPLES_DIR)",
                    samples_dir)
    @router.get("/", include_in_schema=False)
    def test_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/info", summary="What the Test page needs: the mode, the model (dedicated), samples")
    def page_info() -> dict[str, Any]:
        return {"authRequired": not keys.anonymous, "samples": _samples(samples_dir), "version": __version__,
                **provider.page_info()}

    @router.get("/samples/{name}", include_in_schema=False)
    def sample(name: str) -> FileResponse:
        if name not in _samples(samples_dir):
            raise HTTPException(404, f"no sample named {name!r}")
        return FileResponse(samples_dir / name)


def _samples(samples_dir: Path) -> list[str]:
    if not samples_dir.is_dir():
        return []
    return sorted(p.name for p in samples_dir.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES and p.is_file())
