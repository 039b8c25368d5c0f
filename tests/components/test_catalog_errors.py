"""Every catalog or stack-config mistake is one clear line (file, entry, field) and exit 2, never a traceback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from components.errors import FleetError
from fleet.cli import main
from fleet.program import PROJECT_DIR, evaluate
from tests.conftest import region_entry


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def set_in(region_id: str, **values: object):
    def mutate(data: dict) -> None:
        region_entry(data, region_id).update(values)
    return mutate


def override(region_id: str, **values: object):
    def mutate(data: dict) -> None:
        region_entry(data, region_id).setdefault("overrides", {}).update(values)
    return mutate


CASES = [
    pytest.param(set_in("us-east1", id="us-eastt1"), ["regions.yaml", "regions[us-eastt1].id",
                 "unknown Cloud Run region 'us-eastt1'", "did you mean 'us-east1'"], id="unknown-region-id"),
    pytest.param(lambda d: d["regions"].append(dict(region_entry(d, "us-east1"), city="Elsewhere")),
                 ["regions[us-east1]", "duplicate id (entries 2 and 44 of the list, counting from 1)"],
                 id="duplicate-id"),
    pytest.param(set_in("us-east1", geography="americs"), ["regions[us-east1].geography", "(got 'americs'); did "
                 "you mean 'americas'?"], id="misspelt-geography"),
    pytest.param(override("us-west1", min_instances=5, max_instances=3),
                 ["regions[us-west1].overrides", "min_instances (5) is greater than max_instances (3)"],
                 id="min-greater-than-max"),
    pytest.param(lambda d: d["defaults"].update(min_instances=12),
                 ["regions.yaml: defaults", "min_instances (12) is greater than max_instances (10)"],
                 id="defaults-min-greater-than-max"),
    pytest.param(override("us-west1", max_instances=-1), ["regions[us-west1].overrides.max_instances",
                 "greater than or equal to 1"], id="negative-max"),
    pytest.param(override("europe-west2", min_instances=-2), ["regions[europe-west2].overrides.min_instances",
                 "greater than or equal to 0"], id="negative-min"),
    pytest.param(override("us-west1", cpu=1, memory="8Gi"), ["regions[us-west1].overrides",
                 "memory 8Gi needs more vCPU: cpu 1 allows at most 4Gi"], id="cpu-memory-combination"),
    pytest.param(override("us-west1", cpu=3), ["regions[us-west1].overrides.cpu", "cpu must be one of 1, 2, 4, 6, 8"],
                 id="cpu-not-offered"),
    pytest.param(override("us-west1", memory="5Gi"), ["regions[us-west1].overrides.memory", "memory must be one of"],
                 id="memory-not-offered"),
    pytest.param(override("us-east1", gpu=True, cpu=4, memory="16Gi", cpu_idle=False),
                 ["regions[us-east1]", "us-east1 has no GPU"], id="gpu-where-none"),
    pytest.param(set_in("us-east1", gpu_available=True), ["regions[us-east1]", "Cloud Run offers no nvidia-l4"],
                 id="gpu-fact-wrong"),
    pytest.param(lambda d: d["gpu_defaults"].update(memory="8Gi"), ["regions.yaml: gpu_defaults",
                 "gpu needs cpu >= 4 and memory >= 16Gi"], id="gpu-too-small"),  # `gpu: true` alone gets gpu_defaults
    pytest.param(override("us-west1", min_instance=1), ["regions[us-west1].overrides",
                 "unknown key 'min_instance'", "did you mean 'min_instances'"], id="typo-in-overrides"),
    pytest.param(set_in("us-west1", geograpy="americas"), ["regions[us-west1]", "unknown key 'geograpy'",
                 "did you mean 'geography'"], id="typo-in-region"),
    pytest.param(lambda d: d["defaults"].update(concurrency="four"), ["defaults.concurrency", "'four'"],
                 id="wrong-type"),
    pytest.param(lambda d: d["defaults"].update(concurrency=5000), ["defaults.concurrency",
                 "less than or equal to 1000"], id="concurrency-over-limit"),
    pytest.param(lambda d: d["shared"].update(regions=["us-central1", "mars-north1"]),
                 ["shared.regions", "'mars-north1' is not in the catalog"], id="shared-region-unknown"),
    pytest.param(override("us-west1", max_instances=None), ["regions[us-west1].overrides",
                 "max_instances: empty value"], id="empty-value"),
    pytest.param(lambda d: region_entry(d, "us-west1").pop("city"), ["regions[us-west1].city",
                 "required field is missing"], id="missing-field"),
]


@pytest.mark.parametrize(("mutate", "expected"), CASES)
def test_catalog_mistake_is_one_clear_message(capsys, write_catalog, mutate, expected):
    code, out, err = run_plan(capsys, "--catalog", str(write_catalog(mutate)))
    assert code == 2
    assert out == "", "nothing may be printed as if it were a plan"
    for fragment in expected:
        assert fragment in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("text", "expected"), [
    ("defaults: {cpu: 2\nregions: []\n", ["regions.yaml: line", "invalid YAML"]),
    ("defaults:\n  cpu: 2\n  cpu: 4\n", ["line 3", "duplicate key 'cpu'"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    ("", ["expected a mapping"]),
])
def test_bad_yaml_names_the_line(capsys, write_catalog, text, expected):
    code, _, err = run_plan(capsys, "--catalog", str(write_catalog(text=text)))
    assert code == 2
    for fragment in expected:
        assert fragment in err


def test_missing_catalog_file(capsys, tmp_path):
    code, _, err = run_plan(capsys, "--catalog", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: cannot read it" in err


def test_unknown_stack(capsys):
    code, _, err = run_plan(capsys, "--stack", "staging")
    assert code == 2 and "Pulumi.staging.yaml: no such stack file" in err and "dev, prod" in err


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("yolo-fleet:models", [{"name": "demo", "regions": ["us-central1", "atlantis-1"]}],
     "models[demo].regions: atlantis-1 not in the catalog"),
    ("yolo-fleet:models", [{"name": "Demo_Model"}], "models[Demo_Model].name"),
    ("yolo-fleet:models", [{"name": "demo", "regions": "antarctica"}], "models[demo].regions"),
    ("yolo-fleet:models", [{"name": "demo", "regions": ["us-centrl1"]}],
     "models[demo].regions: us-centrl1 (did you mean us-central1?) not in the catalog (regions.yaml)"),
    ("yolo-fleet:models", [{"name": "demo", "regions": ["us-centrl1", "atlantis-1"]}],
     "us-centrl1 (did you mean us-central1?), atlantis-1 not in the catalog (regions.yaml); `fleet regions` lists"),
    ("yolo-fleet:models", [{"name": "demo", "regions": "europ"}],
     "models[demo].regions: 'europ' is neither 'all' nor a geography (americas, europe, asia-pacific, middle-east, "
     "africa); a list names region ids; did you mean 'europe'?"),
    ("yolo-fleet:models", [{"name": "demo", "regions": "europe-west1"}],
     "models[demo].regions: 'europe-west1' is neither 'all' nor a geography; one region is a list: [europe-west1]"),
    ("yolo-fleet:models", [{"name": "demo"}, {"name": "demo"}], "demo given twice"),
    ("yolo-fleet:models", [{"name": "demo", "file": "models/missing.onnx"}],
     "models[demo].file: 'models/missing.onnx' not found in the repository"),
    ("yolo-fleet:models", [{"name": "demo", "regions": ["us-east1"],
                            "settings": {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}}],
     "models[demo] in regions[us-east1]: gpu: us-east1 has no GPU"),
    ("yolo-fleet:models", [{"name": "demo", "settings": {"max_instances": 0}}], "models[demo].settings.max_instances"),
    ("yolo-fleet:settings", {"min_instances": 20}, "min_instances (20) is greater than max_instances"),
    ("yolo-fleet:forced_settings", {"memory": "16Gi"},
     "memory 16Gi needs more vCPU: cpu 2 allows at most 8Gi (cpu from regions.yaml: defaults; memory from "
     "Pulumi.prod.yaml: yolo-fleet:forced_settings)"),
    ("yolo-fleet:api_key_sha256", ["my-secret-key"], "is not a sha256 hex digest"),
    ("yolo-fleet:api_key_sha256", [], "api_key_sha256"),
    ("yolo-fleet:image", "gcr.io/x/server:latest", "image: 'gcr.io/x/server:latest' is not an image by digest: "
     "REPOSITORY@sha256:<64 hex digits>"),
    ("gcp:project", "MY-PROJECT-ID", "project: 'MY-PROJECT-ID' is not a Google Cloud project id (6-30 lowercase"),
    ("yolo-fleet:modles", [], "unknown key 'modles'"),
    ("gcp:project", "My Project", "project"),
])
def test_stack_config_mistake(key, value, expected):
    with pytest.raises(FleetError) as info:
        evaluate("prod", config_overrides={key: json.dumps(value) if not isinstance(value, str) else value})
    assert "Pulumi.prod.yaml" in str(info.value)
    assert expected in str(info.value)
    assert len(str(info.value).splitlines()) == 1, "one mistake, one line"


def test_installed_command_exits_2_without_traceback(write_catalog):
    """The real console script, as a user runs it."""
    path = write_catalog(override("us-west1", min_instances=5, max_instances=3))
    result = subprocess.run([sys.executable, "-m", "fleet.cli", "plan", "--catalog", str(path)],
                            capture_output=True, text=True, cwd=PROJECT_DIR, timeout=120)
    assert result.returncode == 2
    assert "min_instances (5) is greater than max_instances (3)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_digest_pasted_as_sha256sum_prints_it_is_taken_as_the_digest():
    """`printf %s "$KEY" | sha256sum` prints `<hex>  -`, in lowercase; pasted whole, or in uppercase, it is the
    digest the server compares; a key instead of a digest is refused with the command that makes one."""
    digest = hashlib.sha256(b"k").hexdigest()
    plan = evaluate("dev", config_overrides={"yolo-fleet:api_key_sha256": json.dumps([f"{digest}  -",
                                                                                       digest.upper()])})
    version = next(r for r in plan.custom("gcp:secretmanager/secretVersion:SecretVersion") if "api-keys" in r.name)
    assert version.inputs["secretData"]["value"].split() == [digest, digest]
    with pytest.raises(FleetError, match=r"printf %s \"\$KEY\" \| sha256sum \| cut -d' ' -f1") as refused:
        evaluate("dev", config_overrides={"yolo-fleet:api_key_sha256": json.dumps(["my-secret-key"])})
    assert "my-secret-key" not in str(refused.value), "a key pasted by mistake is not printed into CI logs"
