"""The Test page in headless Chromium (Debian's, driven by Playwright): a click on a sample draws boxes."""

from __future__ import annotations

import shutil

import pytest
from helpers_server import ARTIFACTS, demo_model, run_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]


@pytest.mark.browser
def test_clicking_a_sample_draws_boxes() -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with run_server(["--model", str(demo_model("e2e")), "--allow-anonymous"]) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/")
            page.locator(".samples button").first.click()
            page.wait_for_function("Number(document.getElementById('canvas').dataset.boxes) > 0", timeout=20000)
            assert "detection" in page.locator("#status").inner_text()
            assert '"results"' in page.locator("#json").inner_text()
            assert "curl -X POST" in page.locator("#curl").inner_text()
            page.screenshot(path=str(ARTIFACTS / "test-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "test-page.png").stat().st_size > 10_000
