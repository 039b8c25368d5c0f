"""The Test page in headless Chromium (Debian's, driven by Playwright), in both server modes: results, errors
that clear the previous result, the iou control of end-to-end models, snippets that run as shown, a phone's width.
One browser for the module; each test gets a fresh context (its own localStorage)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import httpx
import pytest

from inference_service.auth import hash_key
from tests.helpers_server import ARTIFACTS, MODELS, demo_model, free_port, run_server, write_key_file

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
SAMPLES = sorted(p.name for p in (MODELS / "samples").iterdir())
TENANT_KEY = "acme-page-key"
BOXES_DRAWN = "Number(document.getElementById('canvas').dataset.boxes) > 0"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A dedicated server on the end-to-end demo model that wants a key: (URL, key)."""
    key, key_file = write_key_file(tmp_path_factory.mktemp("keys"))
    with run_server(["--model", str(demo_model("e2e")), "--api-key-file", str(key_file)]) as (url, _):
        yield url, key


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()


def canvas(page, attr: str) -> str:
    return page.locator("#canvas").get_attribute(f"data-{attr}")


def set_value(page, selector: str, value: str) -> None:
    """Type into a field and commit it, as a user leaving the field does."""
    page.locator(selector).fill(value)
    page.locator(selector).dispatch_event("change")


def highlighted(page) -> list[str]:
    return page.locator(".samples button.active").evaluate_all("bs => bs.map(b => b.dataset.sample)")


def test_clicking_a_sample_draws_boxes_and_timings(page, keyed: tuple[str, str]) -> None:
    url, key = keyed
    page.goto(url + "/")
    set_value(page, "#api-key", key)
    page.locator(".samples button").first.click()
    page.wait_for_function(BOXES_DRAWN, timeout=20000)
    assert "detection" in page.locator("#status").inner_text()
    assert '"results"' in page.locator("#json").inner_text()
    assert page.locator("#timings").is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "test-page.png"), full_page=True)
    assert (ARTIFACTS / "test-page.png").stat().st_size > 10_000
    assert not page.errors


def test_an_error_clears_the_previous_result(page, keyed: tuple[str, str]) -> None:
    url, key = keyed
    page.goto(url + "/")
    set_value(page, "#api-key", key)
    page.locator(f"[data-sample='{SAMPLES[0]}']").click()
    page.wait_for_function(BOXES_DRAWN, timeout=20000)

    # 422: the same image, none of its boxes or timings
    set_value(page, "#imgsz", "99999")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('422')", timeout=20000)
    assert canvas(page, "boxes") == "0" and not page.locator("#timings").is_visible()
    assert canvas(page, "shown") == SAMPLES[0]
    set_value(page, "#imgsz", "")
    page.wait_for_function(BOXES_DRAWN, timeout=20000)

    # 401 on another sample: that sample is shown and highlighted, with no boxes from the previous one
    set_value(page, "#api-key", "wrong-key")
    page.locator(f"[data-sample='{SAMPLES[1]}']").click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('401')", timeout=20000)
    assert canvas(page, "shown") == SAMPLES[1] and canvas(page, "boxes") == "0"
    assert highlighted(page) == [SAMPLES[1]]
    assert not page.locator("#timings").is_visible()
    assert page.locator("#status").evaluate("s => s.classList.contains('error')")

    # not an image: nothing shown, nothing highlighted, the error says so
    page.locator("#upload").set_input_files({"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"plain text"})
    page.wait_for_function("document.getElementById('status').textContent.includes('not an image')", timeout=20000)
    assert canvas(page, "shown") == "" and canvas(page, "boxes") == "0" and highlighted(page) == []

    # no key yet: the clicked sample is still shown, and the page asks for the key
    set_value(page, "#api-key", "")
    page.locator(f"[data-sample='{SAMPLES[2]}']").click()
    page.wait_for_function(f"document.getElementById('canvas').dataset.shown === '{SAMPLES[2]}'", timeout=20000)
    assert "API key" in page.locator("#status").inner_text() and highlighted(page) == [SAMPLES[2]]
    assert not page.errors or all("401" in e or "422" in e for e in page.errors)  # the failed fetches' own logs


def test_snippets_run_as_shown_with_the_downloaded_sample(page, keyed: tuple[str, str], tmp_path: Path) -> None:
    """The page's curl and Python snippets, pasted into a shell in a directory holding the image, with API_KEY
    exported as they say, get the detections; the download link serves exactly the sample."""
    url, key = keyed
    page.goto(url + "/")
    set_value(page, "#api-key", key)
    page.locator(f"[data-sample='{SAMPLES[0]}']").click()
    page.wait_for_function(BOXES_DRAWN, timeout=20000)
    curl, python = page.locator("#curl").inner_text(), page.locator("#python").inner_text()
    assert f"'file=@{SAMPLES[0]}'" in curl and f'open("{SAMPLES[0]}", "rb")' in python
    assert "export API_KEY=" in curl and "export API_KEY=" in python
    assert python.startswith("# needs requests: pip install requests\n")  # not in make serve's venv

    link = page.locator("#download")
    assert link.is_visible() and link.get_attribute("download") == SAMPLES[0]
    served = httpx.get(url + link.get_attribute("href"), timeout=10)
    assert served.status_code == 200 and served.content == (MODELS / "samples" / SAMPLES[0]).read_bytes()
    (tmp_path / SAMPLES[0]).write_bytes(served.content)
    env = {**os.environ, "API_KEY": key}
    out = subprocess.run(["sh", "-c", curl], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert '"results"' in out.stdout and '"name"' in out.stdout, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "'x1'" in out.stdout, out.stdout + out.stderr

    # an uploaded file whose name the shell and curl would split runs too
    odd = "my shape's; v2.jpg"
    page.locator("#upload").set_input_files(
        {"name": odd, "mimeType": "image/jpeg", "buffer": (MODELS / "samples" / SAMPLES[0]).read_bytes()})
    page.wait_for_function(f"{BOXES_DRAWN} && document.getElementById('canvas').dataset.shown === {json.dumps(odd)}",
                           timeout=20000)
    assert not link.is_visible()
    (tmp_path / odd).write_bytes(served.content)
    curl = page.locator("#curl").inner_text()
    out = subprocess.run(["sh", "-c", curl], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert '"results"' in out.stdout, out.stdout + out.stderr


def test_page_fits_a_390_px_phone(page, keyed: tuple[str, str]) -> None:
    url, key = keyed
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url + "/")
    set_value(page, "#api-key", key)
    page.locator(".samples button").first.click()
    page.wait_for_function(BOXES_DRAWN, timeout=20000)
    assert page.locator("#timings").is_visible()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "test-page-390.png"), full_page=True)


@pytest.mark.parametrize("kind", ["e2e", "raw"])
def test_iou_control_follows_the_model(browser, kind: str) -> None:
    """End-to-end models ignore iou (as ultralytics does): the control is disabled and the page says why; a raw
    model's is live. Labels of many overlapping boxes never cover one another."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    with run_server(["--model", str(demo_model(kind)), "--allow-anonymous", "--threads", "1"]) as (url, _):
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model-meta').textContent.includes('model,')")
        note = page.locator("#iou-note")
        if kind == "e2e":
            assert page.locator("#iou").is_disabled() and "ignores iou" in note.inner_text()
            assert page.locator("#imgsz").get_attribute("min") == "128", "its top 300 boxes need a 128 grid"
        else:
            assert page.locator("#iou").is_enabled() and not note.is_visible()
        page.locator("#conf").fill("0.01")
        page.locator("#conf").dispatch_event("change")
        page.locator(".samples button").first.click()
        page.wait_for_function("Number(document.getElementById('canvas').dataset.boxes) > 5", timeout=20000)
        labels = page.evaluate("JSON.parse(document.getElementById('canvas').dataset.labels)")
        assert len(labels) > 5
        for a, b in combinations(labels, 2):
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, (a, b)
    context.close()


def test_shared_mode_page_predicts_with_a_tenant_key(page, tmp_path: Path) -> None:
    """`/` on a shared service: tenant key and owner/project/model, the samples, a predict on the shared route,
    the iou control following the chosen model; no script error."""
    models = tmp_path / "models"
    (models / "acme" / "shapes").mkdir(parents=True)
    shutil.copy(demo_model("e2e"), models / "acme" / "shapes" / "demo.onnx")
    shutil.copy(demo_model("raw"), models / "acme" / "shapes" / "raw.onnx")
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  acme:\n    data_region: us-central1\n    key_sha256: [{hash_key(TENANT_KEY)}]\n")
    args = ["--mode", "shared", "--models-dir", str(models), "--tenants-file", str(tenants), "--region",
            "us-central1", "--shared-regions", "us-central1", "--samples-dir", str(MODELS / "samples"),
            "--threads", "1"]
    with run_server(args) as (url, _):
        info = httpx.get(url + "/info", timeout=5).json()
        assert info["mode"] == "shared" and info["region"] == "us-central1" and info["samples"] == SAMPLES
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('.samples button').length > 0")
        assert page.locator("#api-key").is_visible() and page.locator("#owner").is_visible()
        for field, value in (("#api-key", TENANT_KEY), ("#owner", "acme"), ("#project", "shapes"), ("#model", "demo")):
            set_value(page, field, value)
        page.locator(".samples button").first.click()
        page.wait_for_function(BOXES_DRAWN, timeout=20000)
        assert "/api/models/acme/shapes/demo/predict" in page.locator("#curl").inner_text()
        assert "us-central1" in page.locator("#model-meta").inner_text()
        assert page.locator("#iou").is_disabled() and "ignores iou" in page.locator("#iou-note").inner_text()
        set_value(page, "#model", "raw")  # a model with NMS: iou is live again, and the page reruns with it
        page.wait_for_function("!document.getElementById('iou').disabled", timeout=20000)
        page.wait_for_function(BOXES_DRAWN, timeout=20000)
        assert "/api/models/acme/shapes/raw/predict" in page.locator("#curl").inner_text()
        page.screenshot(path=str(ARTIFACTS / "test-page-shared.png"), full_page=True)
    assert not page.errors, page.errors


def test_shared_page_follows_a_tenant_to_its_data_region(page, tmp_path: Path) -> None:
    """The page opened on us-central1 for a tenant whose data lives in europe-west1: the service answers 307, the
    browser follows it without the key (another origin), and the page resends there with the key. The tenant's
    model runs in its own region, the page says where, and the snippets call that region directly."""
    models = tmp_path / "models"
    (models / "acme" / "shapes").mkdir(parents=True)
    shutil.copy(demo_model("e2e"), models / "acme" / "shapes" / "demo.onnx")
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  acme:\n    data_region: europe-west1\n    key_sha256: [{hash_key(TENANT_KEY)}]\n")
    us_port, eu_port = free_port(), free_port()
    us, eu = f"http://127.0.0.1:{us_port}", f"http://127.0.0.1:{eu_port}"
    common = ["--mode", "shared", "--models-dir", str(models), "--tenants-file", str(tenants), "--shared-regions",
              "us-central1,europe-west1", "--samples-dir", str(MODELS / "samples"), "--threads", "1"]
    with run_server([*common, "--region", "us-central1", "--port", str(us_port), "--peer", f"europe-west1={eu}"]), \
         run_server([*common, "--region", "europe-west1", "--port", str(eu_port), "--peer", f"us-central1={us}"]):
        predicted = []
        page.on("response", lambda r: predicted.append((r.url, r.status))
                if r.url.endswith("/predict") and r.request.method == "POST" else None)
        page.goto(us + "/")
        page.wait_for_function("document.querySelectorAll('.samples button').length > 0")
        for field, value in (("#api-key", TENANT_KEY), ("#owner", "acme"), ("#project", "shapes"), ("#model", "demo")):
            set_value(page, field, value)
        page.wait_for_function("document.getElementById('model-meta').textContent.includes('europe-west1')",
                               timeout=20000)
        page.locator(".samples button").first.click()
        page.wait_for_function(BOXES_DRAWN, timeout=20000)
        assert "served in europe-west1" in page.locator("#status").inner_text()
        assert f"{eu}/api/models/acme/shapes/demo/predict" in page.locator("#curl").inner_text()
        assert page.locator("#iou").is_disabled()  # the facts came from europe-west1's info route
        # every predict (the page reruns on changes) went straight to the data region: the facts' redirect taught
        # the page where the tenant lives
        assert predicted and set(predicted) == {(f"{eu}/api/models/acme/shapes/demo/predict", 200)}, predicted
        # a tenant model in no region: europe-west1's own 404, not a failed fetch
        set_value(page, "#model", "missing")
        page.locator(".samples button").first.click()
        page.wait_for_function("document.getElementById('status').textContent.startsWith('404')", timeout=20000)
        assert all("401" in e or "404" in e for e in page.errors), page.errors  # the failed fetches' own logs

        # the page on an origin europe-west1 does not know (localhost, its peer is 127.0.0.1): it cannot follow, and
        # says where to go instead of "failed to fetch"
        page.goto(us.replace("127.0.0.1", "localhost") + "/")
        page.wait_for_function("document.querySelectorAll('.samples button').length > 0")
        for field, value in (("#api-key", TENANT_KEY), ("#owner", "acme"), ("#project", "shapes"), ("#model", "demo")):
            set_value(page, field, value)
        page.locator(".samples button").first.click()
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Request failed')",
                               timeout=20000)
        status = page.locator("#status").inner_text()
        assert "not one of its peers" in status and "open the Test page on that region's host" in status, status
        assert canvas(page, "boxes") == "0"
