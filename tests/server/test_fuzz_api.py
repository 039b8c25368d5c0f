"""Property-based fuzzing in-process: the predict form fields with hypothesis, then every operation of the app's
OpenAPI with schemathesis. Whatever is sent, the answer is a 200 or a JSON 4xx naming what is wrong, never a 5xx,
and a 200 only for values the documented rules accept."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from inference_service.app import Settings, create_app
from tests.helpers_server import MULTIPART, ROOT, demo_model, multipart

MAX_IMGSZ = 320  # keeps the valid imgsz cheap to infer
STRIDE = 32  # the demo model's; its input is dynamic, so any multiple from MIN_IMGSZ to MAX_IMGSZ is valid
MIN_IMGSZ = 128  # the smallest square whose grid (128^2 * 21/1024 = 336 anchors) holds the export's top 300
MAX_FIELDS = 9  # text fields a form may hold
IMAGE = sorted((ROOT / "models" / "samples").glob("shapes-*"))[0].read_bytes()

# The documented contract: which fields a request may carry and which values each accepts.
KNOWN = ("conf", "iou", "imgsz", "normalize", "decimals")
TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off", ""}


def ready_app() -> FastAPI:
    """An anonymous app (so the fields, not the key, are what is tested) for TestClient or schemathesis."""
    return create_app(Settings(model_path=demo_model("e2e"), allow_anonymous=True, max_imgsz=MAX_IMGSZ))


def wait_ready(app: FastAPI) -> None:
    deadline = time.monotonic() + 60
    while app.state.provider.status()[0] != "ready":
        assert time.monotonic() < deadline and app.state.provider.status()[0] != "failed", "model did not load"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = ready_app()
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(app)
        yield c


def as_server_reads(raw: bytes) -> str:
    """Form bytes as the server decodes them: UTF-8, else Latin-1 (every byte maps to one character)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def number(text: str, kind: type) -> float | int | None:
    try:
        return kind(text.strip())
    except ValueError:
        return None


def refused(fields: dict[str, str]) -> set[str]:
    """The fields a correct server must refuse, by the documented rules."""
    bad = {name for name in fields if name not in KNOWN}
    for name in ("conf", "iou"):
        value = number(fields.get(name, "0"), float)
        if value is None or not (math.isfinite(value) and 0 <= value <= 1):
            bad.add(name)
    size = number(fields.get("imgsz", str(MIN_IMGSZ)), int)
    if size is None or not MIN_IMGSZ <= size <= MAX_IMGSZ or size % STRIDE:
        bad.add("imgsz")
    decimals = number(fields.get("decimals", "0"), int)
    if decimals is None or not 0 <= decimals <= 10:
        bad.add("decimals")
    if fields.get("normalize", "").strip().lower() not in TRUE_WORDS | FALSE_WORDS:
        bad.add("normalize")
    return bad


SPACE = st.sampled_from(["", " ", "\t", "\n", " \r\n "])
NASTY = st.one_of(
    st.text(max_size=12).map(str.encode),
    st.binary(max_size=12),  # mostly not UTF-8
    st.floats().map(lambda f: repr(f).encode()),  # nan, inf, -0.0, 1e+308, 5e-324
    st.integers(-(10**40), 10**40).map(lambda i: str(i).encode()),
    st.sampled_from([b"", b"9" * 5000, b"1e999", b"-inf", b"NaN", b"0x20", b"1_0", b"\xd9\xa1", b"null", b"[0.5]"]),
)


def padded(values: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.tuples(SPACE, values, SPACE).map(lambda t: "".join(t).encode())


PLAUSIBLE = {  # what a client would send: valid but for imgsz 32..96, under the end-to-end model's minimum
    "conf": padded(st.floats(0, 1).map(str)),
    "iou": padded(st.floats(0, 1).map(str)),
    "imgsz": padded(st.integers(1, MAX_IMGSZ // STRIDE).map(lambda k: str(k * STRIDE))),
    "normalize": padded(st.sampled_from(sorted(TRUE_WORDS | FALSE_WORDS)).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w.title()]))),
    "decimals": padded(st.integers(0, 10).map(str)),
}
NAMES = st.binary(min_size=1, max_size=12).filter(
    lambda n: not set(n) & set(b'"\\\r\n') and as_server_reads(n) not in (*KNOWN, "file"))
ANY_FORM = st.tuples(st.fixed_dictionaries({name: st.one_of(st.none(), ok, NASTY) for name, ok in PLAUSIBLE.items()}),
                     st.dictionaries(NAMES, NASTY, max_size=6))
PLAUSIBLE_FORM = st.tuples(st.fixed_dictionaries({name: st.one_of(st.none(), ok) for name, ok in PLAUSIBLE.items()}),
                           st.just({}))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(form=st.one_of(PLAUSIBLE_FORM, ANY_FORM))  # half plausible, so the 200 path is fuzzed too
def test_form_fields_get_a_200_only_when_valid_and_else_a_json_4xx_naming_one(
        client: TestClient, form: tuple[dict[str, bytes | None], dict[bytes, bytes]]) -> None:
    values, extras = form
    sent = {name.encode(): value for name, value in values.items() if value is not None} | extras
    r = client.post("/predict", content=multipart([(b"file", b"s.jpg", IMAGE)]
                                                  + [(name, None, value) for name, value in sent.items()]),
                    headers=MULTIPART)
    event(f"status {r.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    assert r.headers["content-type"] == "application/json", r.text
    body = r.json()
    fields = {as_server_reads(name): as_server_reads(value) for name, value in sent.items()}
    if len(fields) > MAX_FIELDS:
        assert r.status_code == 400 and "Too many fields" in body["error"], body
        return
    if bad := refused(fields):
        assert r.status_code == 422 and body["field"] in bad and body["error"], (fields, body)
        return
    assert r.status_code == 200, (fields, body)
    decimals = int(fields.get("decimals", "5"))
    normalize = fields.get("normalize", "").strip().lower() in TRUE_WORDS
    conf = float(fields.get("conf", "0.25"))
    for det in body["images"][0]["results"]:
        numbers = [det["confidence"], *det["box"].values()]
        assert all(v == round(v, decimals) for v in numbers)
        assert det["confidence"] >= conf - 10**-decimals
        assert not normalize or all(0 <= v <= 1 for v in det["box"].values())


schema = schemathesis.openapi.from_dict(ready_app().openapi())  # cheap: no model loads before a lifespan starts


@pytest.fixture
def openapi_app() -> FastAPI:
    """A fresh app per operation: schemathesis ends an app's lifespan after each test item, and ours starts once."""
    app = ready_app()
    schema["/health"]["GET"].Case().call(app=app)  # schemathesis starts the lifespan: the model loads
    wait_ready(app)
    return app


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


# One test per operation with the operation in its id (schemathesis' own `schema.parametrize()` gives all of them
# one id, which pytest-xdist's file scheduling would run once).
@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_openapi_operations_never_answer_5xx(operation: schemathesis.APIOperation, openapi_app: FastAPI) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, derandomize=True, database=None)
    def never_5xx(case: schemathesis.Case) -> None:
        response = case.call_and_validate(app=openapi_app, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:  # documented or not (405, 404...), every error is JSON saying what is wrong
            assert response.json()["error"], response.text

    never_5xx()
