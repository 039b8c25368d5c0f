"""``make test`` on a machine without Chromium (which tests/server/test_browser.py drives): installed with apt-get as
root, else make stops before anything else runs with the one command to run; never a skipped browser test."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers_server import ROOT

BUILT = ["-o", ".venv/.plan-deps", "-o", ".venv/.test-deps", "-o", "inference_service/_letterbox.so"]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def fake_apt_get(tmp_path: Path, installs: bool) -> tuple[Path, Path]:
    """An apt-get that logs its arguments and, if ``installs``, puts an executable at tmp/chromium."""
    log, chromium, apt = tmp_path / "apt.log", tmp_path / "chromium", tmp_path / "apt-get"
    install = f'[ "$1" = install ] && printf "#!/bin/sh\\n" > {chromium} && chmod +x {chromium}' if installs else ":"
    apt.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{install}\nexit 0\n')
    apt.chmod(0o755)
    return apt, chromium


def test_without_chromium_and_root_make_test_stops_first_naming_the_command(tmp_path: Path) -> None:
    # BIN points nowhere: had make gone on to lint or pytest, it would fail on those instead
    r = make(*BUILT, "test", f"CHROMIUM={tmp_path / 'chromium'}", "APT_GET=", "BIN=/nonexistent/bin")
    assert r.returncode == 2
    assert "Chromium is missing" in r.stderr
    assert "\n  sudo apt-get install -y chromium\n" in r.stderr
    assert "/nonexistent/bin" not in r.stdout + r.stderr


def test_as_root_make_installs_chromium_with_apt_get(tmp_path: Path) -> None:
    apt, chromium = fake_apt_get(tmp_path, installs=True)
    r = make("chromium", f"CHROMIUM={chromium}", f"APT_GET={apt}")
    assert r.returncode == 0, r.stderr
    assert "installing it with apt-get" in r.stdout
    assert (tmp_path / "apt.log").read_text().splitlines() == ["update -qq", "install -y -qq chromium"]
    assert make("chromium", f"CHROMIUM={chromium}", f"APT_GET={apt}").stdout == ""  # present: nothing to do


def test_an_apt_get_that_does_not_bring_chromium_stops_make(tmp_path: Path) -> None:
    apt, chromium = fake_apt_get(tmp_path, installs=False)
    r = make("chromium", f"CHROMIUM={chromium}", f"APT_GET={apt}")
    assert r.returncode == 2
    assert f"Chromium is still missing ({chromium}) after apt-get" in r.stderr
