"""`fleet rollout` against a fake deployer and the local fake Cloud Monitoring: the waves in order, a breach rolls
back exactly the regions it touched, an interrupted rollout resumes, a dry run changes nothing."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from components.errors import FleetError
from fleet.cli import main
from fleet.program import CLOUD_RUN, PROJECT_DIR, evaluate, stack_config
from fleet.rollout import Rollout, Runner, start
from fleet.stack_file import edited_values
from tests.fakes.metric_service import FakeMetricService, count_series, distribution_series, serve

OLD, NEW = "models/demo-e2e.onnx", "models/demo-raw.onnx"
CANARY, EUROPE, ASIA = "us-central1", "europe-west1", "asia-northeast1"
REQUESTS, LATENCY = "run.googleapis.com/request_count", "run.googleapis.com/request_latencies"
BAKE_S = 600.0


class FakeDeployer:
    """Records the demo model entry of the stack file at each apply; raises KeyboardInterrupt at apply `stop_at`."""

    def __init__(self, path: Path, stop_at: int | None = None) -> None:
        self.path, self.stop_at, self.applied = path, stop_at, []

    def apply(self, stack: str) -> None:
        if self.stop_at is not None and len(self.applied) + 1 == self.stop_at:
            raise KeyboardInterrupt
        entry = model_entry(self.path)
        self.applied.append((entry["file"], entry.get("rollout")))


def model_entry(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe").load(path.read_text())
    return next(m for m in data["config"]["yolo-fleet:models"] if m["name"] == "demo")


def revisions(rollout: dict[str, Any] | None) -> dict[str, str]:
    """Region -> the demo model's template revision in the dev stack with this rollout entry."""
    values = edited_values(stack_config("dev"), "demo", OLD, rollout, "test")
    return {r.inputs["location"]: r.inputs["template"]["revision"] for r in evaluate("dev", config=values).custom(
        CLOUD_RUN) if r.inputs["template"]["labels"].get("model") == "demo"}


def healthy(errors: int = 1, slow: bool = False) -> dict[str, list[Any]]:
    # ms buckets 0-100-200-400-800+ (healthy: p95 near 200 ms), or all beyond 8 s (above the 2 s alert threshold);
    # one minute ago: inside every bake window (the fake answers only for points in the query's interval)
    start = int(time.time()) - 60
    latency = distribution_series([[0, 0, 0, 0, 900]], mean=9000.0, scale=1000.0, start=start) if slow else \
        distribution_series([[0, 900, 100, 0, 0]], mean=150.0, scale=100.0, start=start)
    return {REQUESTS: [count_series("2xx", [1000 - errors], start), count_series("5xx", [errors], start)],
            LATENCY: [latency]}


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    shutil.copy(PROJECT_DIR / "Pulumi.dev.yaml", tmp_path / "Pulumi.dev.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def names() -> dict[str, dict[str, str]]:
    """The old (staged) and new revision of each region: what the fake Monitoring API knows them by."""
    return {"old": revisions({"to": NEW, "percent": 0, "regions": []}),
            "new": revisions({"to": NEW, "percent": 100, "regions": [CANARY, EUROPE, ASIA]})}


def monitoring(names: dict[str, dict[str, str]], bad: dict[str, dict[str, list[Any]]] | None = None
               ) -> FakeMetricService:
    """Every revision healthy, except the new revision of the regions in `bad`."""
    data = {}
    for which in ("old", "new"):
        for region, rev in names[which].items():
            series = (bad or {}).get(region) if which == "new" and region in (bad or {}) else healthy()
            data.update({(rev, metric): s for metric, s in series.items()})
    return FakeMetricService(data)


def run_rollout(stack_dir: Path, deployer: FakeDeployer, fake: FakeMetricService, monkeypatch: pytest.MonkeyPatch,
                resume: bool = False) -> tuple[int, list[str], list[float]]:
    lines: list[str] = []
    sleeps: list[float] = []
    rollout = Rollout("dev", "demo", NEW, BAKE_S, stack_dir=stack_dir)
    with serve(fake) as address:
        monkeypatch.setenv("FLEET_MONITORING_ENDPOINT", address)
        code = start(rollout, lambda r: Runner(r, deployer, sleep=sleeps.append, out=lines.append), resume, False)
    return code, lines, sleeps


def log(stack_dir: Path) -> list[dict[str, Any]]:
    path = stack_dir / ".fleet" / "rollout-dev-demo.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def wave(percent: int, *regions: str) -> tuple[str, dict[str, Any]]:
    return OLD, {"to": NEW, "percent": percent, "regions": list(regions), "bake_minutes": 10.0}


def test_a_healthy_rollout_reaches_every_region_in_order_and_ends_without_a_split(
        stack_dir: Path, names: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployer = FakeDeployer(stack_dir / "Pulumi.dev.yaml")
    fake = monitoring(names)
    code, lines, sleeps = run_rollout(stack_dir, deployer, fake, monkeypatch)
    assert code == 0
    assert deployer.applied == [wave(0), wave(10, CANARY), wave(100, CANARY), wave(100, CANARY, EUROPE),
                                wave(100, CANARY, EUROPE, ASIA), (NEW, None)]
    assert sleeps == [BAKE_S] * 4
    judged = [(v["region"], v["old"], v["new"]) for r in log(stack_dir) if r["event"] == "judged"
              for v in r["verdicts"]]
    assert judged == [(CANARY, names["old"][CANARY], names["new"][CANARY])] * 2 + [
        (region, names["old"][region], names["new"][region]) for region in (EUROPE, ASIA)]
    assert any(f'revision_name="{names["new"][CANARY]}"' in q.filter for q in fake.requests)
    text = (stack_dir / "Pulumi.dev.yaml").read_text()
    assert "# the raw (NMS in the server) export of the same model" in text  # comments kept
    assert model_entry(stack_dir / "Pulumi.dev.yaml") == {"name": "demo", "file": NEW,
                                                          "regions": [CANARY, EUROPE, ASIA]}
    assert log(stack_dir)[-1]["event"] == "done" and lines[-1].startswith("rollout of models/demo-raw.onnx done")


def test_a_canary_with_more_errors_rolls_back_only_the_canary(
        stack_dir: Path, names: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployer = FakeDeployer(stack_dir / "Pulumi.dev.yaml")
    code, _, _ = run_rollout(stack_dir, deployer, monitoring(names, {CANARY: healthy(errors=200)}), monkeypatch)
    assert code == 1
    assert deployer.applied == [wave(0), wave(10, CANARY), wave(0, CANARY)]
    back = log(stack_dir)[-1]
    assert back["event"] == "rolled-back" and back["regions"] == [CANARY]
    assert "error ratio 20.00% > old 0.10% and alert threshold 5.00%" in back["breaches"][CANARY][0]
    # On the plan: the rollback sends all of the canary's traffic to the old revision; no other region changes.
    values = edited_values(stack_config("dev", stack_dir), "demo", OLD, None, "test")
    after = {r.inputs["location"]: r.inputs["traffics"] for r in evaluate("dev", config=edited_values(
        values, "demo", OLD, model_entry(stack_dir / "Pulumi.dev.yaml")["rollout"], "t")).custom(CLOUD_RUN)
        if r.inputs["template"]["labels"].get("model") == "demo"}
    assert [(t["revision"], t["percent"]) for t in after[CANARY]] == [(names["old"][CANARY], 100.0),
                                                                      (names["new"][CANARY], 0.0)]
    assert all(after[r] == [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": names["old"][r],
                             "percent": 100.0}] for r in (EUROPE, ASIA))


def test_a_slow_wave_rolls_back_every_region_it_touched_and_no_other(
        stack_dir: Path, names: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployer = FakeDeployer(stack_dir / "Pulumi.dev.yaml")
    code, _, _ = run_rollout(stack_dir, deployer, monitoring(names, {EUROPE: healthy(slow=True)}), monkeypatch)
    assert code == 1
    assert deployer.applied[-1] == wave(0, CANARY, EUROPE)
    back = log(stack_dir)[-1]
    assert back["regions"] == [CANARY, EUROPE] and list(back["breaches"]) == [EUROPE]
    assert "p95 latency" in back["breaches"][EUROPE][0]


def test_an_interrupted_rollout_resumes_where_it_stopped(
        stack_dir: Path, names: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = monitoring(names)
    first = FakeDeployer(stack_dir / "Pulumi.dev.yaml", stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_rollout(stack_dir, first, fake, monkeypatch)
    assert first.applied == [wave(0), wave(10, CANARY)]
    with pytest.raises(FleetError, match=r"a rollout of models/demo-raw\.onnx is under way .*: --resume it"):
        run_rollout(stack_dir, FakeDeployer(stack_dir / "Pulumi.dev.yaml"), fake, monkeypatch)
    second = FakeDeployer(stack_dir / "Pulumi.dev.yaml")
    code, _, sleeps = run_rollout(stack_dir, second, fake, monkeypatch, resume=True)
    assert code == 0
    assert second.applied == [wave(100, CANARY), wave(100, CANARY, EUROPE), wave(100, CANARY, EUROPE, ASIA),
                              (NEW, None)]
    assert sleeps == [BAKE_S] * 3
    with pytest.raises(FleetError, match="--resume: no unfinished rollout"):
        run_rollout(stack_dir, second, fake, monkeypatch, resume=True)


def test_a_dry_run_changes_nothing(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (PROJECT_DIR / "Pulumi.dev.yaml").read_bytes()
    log_file = PROJECT_DIR / ".fleet" / "rollout-dev-demo.jsonl"
    assert main(["rollout", "--stack", "dev", "--model", "demo", "--to", NEW, "--dry-run", "--canary", EUROPE]) == 0
    out = capsys.readouterr().out
    assert (PROJECT_DIR / "Pulumi.dev.yaml").read_bytes() == before and not log_file.exists()
    assert "[2/6] canary europe-west1 at 10%: rollout: {to: models/demo-raw.onnx, percent: 10, regions: " \
           "[europe-west1]}; judged in europe-west1" in out
    assert "[6/6] finish: file: models/demo-raw.onnx, no rollout" in out
    deployer = FakeDeployer(stack_dir / "Pulumi.dev.yaml")
    rollout = Rollout("dev", "demo", NEW, BAKE_S, stack_dir=stack_dir)
    assert start(rollout, lambda r: Runner(r, deployer), resume=False, dry_run=True) == 0
    assert deployer.applied == [] and not (stack_dir / ".fleet").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--bake", "2m", "--stack", "prod"], "--bake: the prod stack requires a bake of at least 5 minutes"),
    (["--waves", "europe"], "--waves leave out asia-northeast1"),
    (["--waves", "europe", "europe", "asia-pacific"], "--waves europe: every region in it is in an earlier wave"),
    (["--waves", "europ"], "--waves europ: 'europ' is not a geography of the model or one of its regions; did you "
                           "mean europe?"),
    (["--waves", "africa"], "--waves africa: the model has no regions in africa"),
    (["--waves", "europe,asia-pacific"], "--waves europe,asia-pacific: a comma list takes region ids; give europe as a "
                                         "wave of its own"),
    (["--to", "./models/demo-e2e.onnx"], "--to ./models/demo-e2e.onnx: it is already model demo's file"),
    (["--canary", "europe-wst1"], "--canary europe-wst1: not one of the model's regions; did you mean europe-west1?"),
    (["--canary", "us-east1"], "--canary us-east1: not one of the model's regions"),
    (["--bake", "ten"], "--bake ten: give a duration like 30s, 10m or 1h"),
    (["--model", "nope"], "--model nope: no such model in Pulumi.dev.yaml"),
    (["--to", "models/demo-v2.onnx"], "--to models/demo-v2.onnx: 'models/demo-v2.onnx' not found in the repository"),
    (["--to", "README.md"], "--to README.md: 'README.md' is not an ONNX model"),
    (["--to", "models/demo-e2e.onnx"], "--to models/demo-e2e.onnx: it is already model demo's file in Pulumi.dev.yaml"),
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    base = ["rollout", "--stack", "dev", "--model", "demo", "--to", NEW, "--dry-run"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_the_automation_deployer_runs_up_with_the_policy_pack_and_reports_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from pulumi import automation

    from fleet.deployer import AutomationDeployer, DeployError

    calls: list[tuple[str, str, list[str]]] = []
    outcome = {"result": "succeeded"}

    def select_stack(stack_name: str, work_dir: str) -> Any:
        def up(on_output: Any, policy_packs: list[str]) -> Any:
            calls.append((stack_name, work_dir, policy_packs))
            return SimpleNamespace(summary=SimpleNamespace(result=outcome["result"]))
        return SimpleNamespace(up=up)

    monkeypatch.setattr(automation, "select_stack", select_stack)
    deployer = AutomationDeployer(PROJECT_DIR, PROJECT_DIR / "policy")
    deployer.apply("dev")
    assert calls == [("dev", str(PROJECT_DIR), [str(PROJECT_DIR / "policy")])]
    outcome["result"] = "failed"
    with pytest.raises(DeployError, match="pulumi up for stack dev ended failed"):
        deployer.apply("dev")


def test_the_default_waves_written_out_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """The help says: the model's geographies, the canary's first; written out, the canary's own is not 'repeated'."""
    assert main(["rollout", "--stack", "dev", "--model", "demo", "--to", NEW, "--dry-run",
                 "--waves", "americas", "europe", "asia-pacific"]) == 0
    default = capsys.readouterr().out
    assert main(["rollout", "--stack", "dev", "--model", "demo", "--to", NEW, "--dry-run"]) == 0
    assert capsys.readouterr().out == default
