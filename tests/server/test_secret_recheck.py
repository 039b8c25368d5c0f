"""Mounted secret files are looked at on a clock, not per request: each look at a Cloud Run secret volume
is a billed Secret Manager access, and one per request would also eat the project's access quota."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_service.auth import AuthError, KeyStore, hash_key
from inference_service.recheck import Recheck
from inference_service.tenancy import TenantsFile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_look_is_due_once_per_interval():
    clock = Clock()
    recheck = Recheck(10, clock)
    assert not recheck.due(), "the file was read at start"
    clock.now += 9.999
    assert not recheck.due()
    clock.now += 0.001
    assert recheck.due()
    assert not recheck.due(), "one look per interval, however many requests arrive"
    clock.now += 10
    assert recheck.due()


def test_interval_zero_looks_every_time_and_a_negative_one_is_refused():
    recheck = Recheck(0, Clock())
    assert all(recheck.due() for _ in range(3))
    with pytest.raises(ValueError, match=">= 0"):
        Recheck(-1)


def rotate(path: Path, digest: str) -> None:
    """Write a new version with a later mtime (coarse file system clocks can repeat one)."""
    before = path.stat().st_mtime
    path.write_text(digest + "\n")
    os.utime(path, (before + 5, before + 5))


def test_a_rotated_key_file_is_not_read_again_before_the_interval(tmp_path):
    path = tmp_path / "sha256.txt"
    path.write_text(hash_key("old") + "\n")
    keys = KeyStore(path, recheck_seconds=3600)
    rotate(path, hash_key("new"))
    for _ in range(100):  # a burst of requests: none looks at the file
        keys.check("Bearer old")
    with pytest.raises(AuthError):
        keys.check("Bearer new")


def test_a_rotated_key_file_is_read_once_the_interval_has_passed(tmp_path):
    path = tmp_path / "sha256.txt"
    path.write_text(hash_key("old") + "\n")
    keys = KeyStore(path, recheck_seconds=0)
    rotate(path, hash_key("new"))
    keys.check("Bearer new")
    with pytest.raises(AuthError):
        keys.check("Bearer old")


def test_the_tenants_file_waits_for_the_interval_too(tmp_path):
    path = tmp_path / "tenants.yaml"
    digest = hash_key("acme-key")
    path.write_text(f"tenants: {{acme: {{data_region: us-central1, key_sha256: [{digest}]}}}}\n")
    tenants = TenantsFile(path, ["us-central1"], recheck_seconds=3600)
    path.write_text("tenants: {}\n")
    assert tenants.current().owner_of_key("acme-key") is not None
    assert TenantsFile(path, ["us-central1"], recheck_seconds=0).current().owner_of_key("acme-key") is None


def test_the_server_refuses_a_negative_interval():
    done = subprocess.run([sys.executable, "-m", "inference_service", "--model", "m.onnx", "--allow-anonymous",
                           "--secrets-recheck-seconds", "-1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--secrets-recheck-seconds (SECRETS_RECHECK_SECONDS): invalid value '-1'" in done.stderr
    assert "Traceback" not in done.stderr
