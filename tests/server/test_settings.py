"""The server's settings in the real ``python -m inference_service`` process: a flag wins over the environment,
the environment over the default, and a bad value from either is one line naming flag and variable, exit 2."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from inference_service.settings import ServerSettings, env_name, flag
from tests.helpers_server import PYTHON, ROOT, demo_model, free_port, run_server


def gauge(url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{url}/metrics", timeout=5).text, re.M)
    assert match, name
    return float(match.group(1))


def test_flags_override_the_environment_which_overrides_the_defaults() -> None:
    port = free_port()
    env = {"PORT": str(free_port()), "MAX_CONCURRENCY": "3", "MAX_QUEUE": "7", "REQUEST_TIMEOUT": "8"}
    with run_server(["--model", str(demo_model()), "--allow-anonymous", "--threads", "1", "--port", str(port),
                     "--max-concurrency", "5"], env=env) as (url, _):
        assert url.endswith(f":{port}")  # --port, not PORT
        assert gauge(url, "predict_concurrency_limit") == 5  # --max-concurrency over MAX_CONCURRENCY
        assert gauge(url, "predict_queue_limit") == 7  # MAX_QUEUE over its default (16 x concurrency)
        assert gauge(url, "predict_max_wait_seconds") == 2  # the default: a quarter of REQUEST_TIMEOUT
    with run_server(["--model", str(demo_model()), "--allow-anonymous", "--threads", "1"]) as (url, _):
        assert gauge(url, "predict_concurrency_limit") == 4 and gauge(url, "predict_queue_limit") == 64
        assert gauge(url, "predict_max_wait_seconds") == 5


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.upper() not in {env_name(f) for f in ServerSettings.model_fields}}
    return subprocess.run([PYTHON, "-m", "inference_service", *args], env={**clean, **env}, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(("env", "line"), [
    ({"MAX_QUEUE": "lots"}, "--max-queue (MAX_QUEUE): invalid value 'lots': Input should be a valid integer"),
    ({"MODE": "dual"}, "--mode (MODE): invalid value 'dual': Input should be 'dedicated' or 'shared'"),
    ({"ALLOW_ANONYMOUS": "perhaps"}, "--allow-anonymous (ALLOW_ANONYMOUS): invalid value 'perhaps'"),
    ({"PORT": "70000"}, "--port (PORT): invalid value '70000': Input should be less than or equal to 65535"),
    ({"MODE": "shared", "MODELS_DIR": "/tmp", "TENANTS_FILE": "t.yaml", "REGION": "me-west1"},
     "--shared-regions (or SHARED_REGIONS) is required in shared mode"),
    ({"MODE": "shared", "MODELS_DIR": "/tmp", "TENANTS_FILE": "t.yaml", "REGION": "me-west1",
      "SHARED_REGIONS": "us-central1,europe-west1"},
     "--region (REGION) 'me-west1' is not a shared region; use one of us-central1, europe-west1 (SHARED_REGIONS)"),
    ({"MODE": "shared", "MODELS_DIR": "/tmp", "TENANTS_FILE": "t.yaml", "REGION": "me-west1",
      "SHARED_REGIONS": "me-west1", "PEERS": "us-central1:https://us.example.com"},
     "--peer (PEERS): invalid value 'us-central1:https://us.example.com': expected REGION_ID=URL"),
])
def test_a_bad_environment_value_is_one_line_and_exit_2(env: dict[str, str], line: str) -> None:
    r = start(env, *([] if env.get("MODE") == "shared" else ["--model", str(demo_model())]))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("python -m inference_service: error: "), r.stderr
    assert line in r.stderr
    assert "Traceback" not in r.stderr and not r.stdout


def test_a_flag_fixes_a_bad_environment_value() -> None:
    """The flag wins before anything is checked: a stale bad variable does not stop a corrected command line."""
    r = start({"MAX_QUEUE": "lots"}, "--model", str(demo_model()), "--allow-anonymous", "--max-queue", "lots2")
    assert "--max-queue (MAX_QUEUE): invalid value 'lots2'" in r.stderr  # the flag's value is the one checked
    with run_server(["--model", str(demo_model()), "--allow-anonymous", "--threads", "1", "--max-queue", "9"],
                    env={"MAX_QUEUE": "lots"}) as (url, _):
        assert gauge(url, "predict_queue_limit") == 9


def test_help_lists_every_setting_with_its_flag_and_variable() -> None:
    r = subprocess.run([PYTHON, "-m", "inference_service", "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in ServerSettings.model_fields:
        assert f"{flag(name)} " in text and f"[{env_name(name)}" in text, name
