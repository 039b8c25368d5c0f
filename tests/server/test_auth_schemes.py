"""A valid key is accepted only as `Authorization: Bearer <key>`: the same key under another scheme (Basic, Token)
or with no scheme is 401, in dedicated and in shared mode. A server that took any scheme would take a key a
client meant for another service's Basic auth, or echoed from a proxy's header."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inference_service.app import Settings, create_app
from inference_service.auth import hash_key
from inference_service.shared import create_shared_app
from tests.helpers_server import demo_model, sample_images, write_key_file

TENANT_KEY = "acme-valid-key"


def other_schemes(key: str) -> list[str]:
    return [f"Basic {key}", f"Token {key}", key, f"Bearer{key}", f"Bearer-{key}", f"Basic Bearer {key}",
            f"{key} Bearer"]


def wait_healthy(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sample() -> bytes:
    return next(p for p in sample_images() if p.name.startswith("shapes-")).read_bytes()


@pytest.fixture(scope="module")
def dedicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    key, path = write_key_file(tmp_path_factory.mktemp("keys"))
    with TestClient(create_app(Settings(model_path=demo_model("e2e"), api_key_file=path))) as client:
        wait_healthy(client)
        yield client, key


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("shared")
    (base / "models/acme/shapes").mkdir(parents=True)
    shutil.copy(demo_model("e2e"), base / "models/acme/shapes/demo.onnx")
    tenants = base / "tenants.yaml"
    tenants.write_text(f"tenants:\n  acme:\n    data_region: us-central1\n    key_sha256: [{hash_key(TENANT_KEY)}]\n")
    settings = Settings(mode="shared", model_path=base / "models", models_dir=base / "models", allow_anonymous=True,
                        tenants_file=tenants, region="us-central1", shared_regions=("us-central1",))  # as __main__ does
    with TestClient(create_shared_app(settings)) as client:
        yield client


def test_dedicated_takes_the_key_only_as_a_bearer_token(dedicated, sample):
    client, key = dedicated
    for header in (f"Bearer {key}", f"bearer {key}", f"BEARER {key}"):  # the scheme is case-insensitive (RFC 9110)
        assert client.post("/predict", files={"file": sample}, headers={"Authorization": header}).status_code == 200
    for header in other_schemes(key):
        r = client.post("/predict", files={"file": sample}, headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"], header


def test_shared_takes_the_tenant_key_only_as_a_bearer_token(shared, sample):
    route = "/api/models/acme/shapes/demo"
    for header in (f"Bearer {TENANT_KEY}", f"bearer {TENANT_KEY}"):
        assert shared.get(f"{route}/info", headers={"Authorization": header}).status_code == 200
    assert shared.post(f"{route}/predict", files={"file": sample},
                       headers={"Authorization": f"Bearer {TENANT_KEY}"}).status_code == 200
    for header in other_schemes(TENANT_KEY):
        assert shared.get(f"{route}/info", headers={"Authorization": header}).status_code == 401, header
        r = shared.post(f"{route}/predict", files={"file": sample}, headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"], header
