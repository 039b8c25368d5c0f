"""A model's `file` is checked before anything is declared (components/model_files.py), and `fleet plan` shows what
each model is, read from its ONNX metadata and compared here with what onnx and onnxruntime themselves read.
"""

from __future__ import annotations

import ast
import functools
import json
import os
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from components.model_files import ModelFileError, check_model_files, onnx_metadata
from components.stack_config import ModelSpec
from fleet.cli import main
from fleet.program import PROJECT_DIR, evaluate
from inference_service.model import SUPPORTED_TASKS, Model

DEMO = {"e2e": PROJECT_DIR / "models" / "demo-e2e.onnx", "raw": PROJECT_DIR / "models" / "demo-raw.onnx"}


def plan_with_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   *files: str) -> tuple[int, str, str]:
    """`fleet plan --stack dev` with the dev stack's models replaced by one entry per file (m0, m1, ...)."""
    models = [{"name": f"m{i}", "file": f, "regions": ["us-central1"]} for i, f in enumerate(files)]
    monkeypatch.setattr("fleet.cli.evaluate", functools.partial(
        evaluate, config_overrides={"yolo-fleet:models": json.dumps(models)}))
    code = main(["plan", "--stack", "dev"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("file", "reason"), [
    ("README.md", "'README.md' is not an ONNX model: it does not parse as an ONNX protobuf"),
    ("models/demo.pt", "'models/demo.pt' is not an ONNX model: it does not parse as an ONNX protobuf (a zip archive"),
    ("models/metrics.json", "'models/metrics.json' is not an ONNX model"),
    ("models/demo-e2e.onxx", "'models/demo-e2e.onxx' not found in the repository"),
    ("models", "'models' is not a file"),
    (str(DEMO["e2e"]), f"'{DEMO['e2e']}' is an absolute path; give a path relative to the repository root"),
    ("/etc/passwd", "'/etc/passwd' is an absolute path"),
    ("../yolo-fleet/models/demo-e2e.onnx",
     "'../yolo-fleet/models/demo-e2e.onnx' contains '..'; model files must be inside the repository"),
    ("models/../models/demo-e2e.onnx", "'models/../models/demo-e2e.onnx' contains '..'"),
])
def test_a_file_that_cannot_be_served_stops_the_plan_with_exit_2(monkeypatch, capsys, file, reason):
    code, out, err = plan_with_file(monkeypatch, capsys, file)
    assert code == 2 and out == ""
    assert f"Pulumi.dev.yaml: models[m0].file: {reason}" in err
    assert "Traceback" not in err


def test_every_bad_file_gets_its_own_line_and_good_ones_none(monkeypatch, capsys):
    code, _, err = plan_with_file(monkeypatch, capsys, "models/demo-raw.onnx", "README.md", "models/nope.onnx")
    assert code == 2
    lines = err.splitlines()[1:]
    assert [line.split(": ")[1] for line in lines] == ["models[m1].file", "models[m2].file"]


def test_a_good_file_plans(monkeypatch, capsys):
    code, out, _ = plan_with_file(monkeypatch, capsys, "models/demo-raw.onnx")
    assert code == 0 and "m0-iowa" in out


def with_task(source: Path, target: Path, task: str | None) -> Path:
    """A copy of an ultralytics export whose metadata names `task` (None: no task entry at all)."""
    model = onnx.load(str(source))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != "task"]
    del model.metadata_props[:]
    for key, value in keep + ([("task", task)] if task else []):
        model.metadata_props.add(key=key, value=value)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("task", ["detect", "pose", "classify", "segment", "obb"])
def test_the_task_check_agrees_with_the_server(tmp_path, task):
    path = with_task(DEMO["raw"], tmp_path / "models" / f"{task}.onnx", task)
    server_refuses = Model(path, intra_op_threads=1).unsupported() is not None
    assert server_refuses == (task not in SUPPORTED_TASKS)
    spec = ModelSpec(name="m", file=f"models/{task}.onnx")
    if server_refuses:
        with pytest.raises(ModelFileError) as error:
            check_model_files([spec], tmp_path, "Pulumi.x.yaml")
        assert str(error.value) == (f"Pulumi.x.yaml: models[m].file: 'models/{task}.onnx' is a '{task}' model (its "
                                    f"ONNX metadata's task); the server serves detect, pose models only")
    else:
        [found] = check_model_files([spec], tmp_path, "Pulumi.x.yaml")
        assert found.task == task


def test_an_export_without_a_task_is_planned_as_the_server_reads_it(tmp_path):
    path = with_task(DEMO["e2e"], tmp_path / "models" / "untasked.onnx", None)
    [found] = check_model_files([ModelSpec(name="m", file="models/untasked.onnx")], tmp_path, "Pulumi.x.yaml")
    assert found.task == Model(path, intra_op_threads=1).info.task == "detect"


def test_a_symlink_out_of_the_repository_is_refused_and_one_inside_is_not(tmp_path):
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    outside = with_task(DEMO["e2e"], tmp_path / "elsewhere" / "m.onnx", "detect")
    os.symlink(outside, root / "models" / "out.onnx")
    os.symlink("out.onnx", root / "models" / "chain.onnx")  # a link to a link that leaves
    os.symlink(DEMO["e2e"], root / "models" / "abs.onnx")
    with_task(DEMO["e2e"], root / "models" / "real.onnx", "detect")
    os.symlink("real.onnx", root / "models" / "inside.onnx")
    for name in ("out", "chain", "abs"):
        with pytest.raises(ModelFileError, match=rf"models\[m\]\.file: 'models/{name}.onnx' is a symlink to .*, "
                                                 "outside the repository"):
            check_model_files([ModelSpec(name="m", file=f"models/{name}.onnx")], root, "Pulumi.x.yaml")
    [found] = check_model_files([ModelSpec(name="m", file="models/inside.onnx")], root, "Pulumi.x.yaml")
    assert found.file == "models/inside.onnx"


def test_truncated_empty_and_random_files_are_not_onnx(tmp_path):
    data = DEMO["e2e"].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[:4096])
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 8)
    specs = [ModelSpec(name=n, file=f"{n}.onnx") for n in ("cut", "empty", "noise")]
    with pytest.raises(ModelFileError) as error:
        check_model_files(specs, tmp_path, "Pulumi.x.yaml")
    lines = str(error.value).splitlines()
    assert len(lines) == 3 and all("is not an ONNX model" in line for line in lines)
    assert "it has no IR version, opset import, graph (every ONNX model has them)" in lines[1]


def test_the_metadata_reader_reads_what_onnx_reads():
    for path in DEMO.values():
        expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert onnx_metadata(path.read_bytes()) == expected and expected["task"] == "detect"


def test_fleet_plan_shows_each_models_task_export_imgsz_and_classes(capsys):
    assert main(["plan", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.split("Models (2, from their ONNX metadata)\n")[1]
            .split("\n\n")[0].splitlines()[1:]}
    for name, path in (("demo", DEMO["e2e"]), ("demo-raw", DEMO["raw"])):
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        h, w = ast.literal_eval(meta["imgsz"])
        export = "end-to-end" if meta["end2end"] == "True" else "raw"
        assert rows[name][1:4] == [str(path.relative_to(PROJECT_DIR)), meta["task"], export]
        assert rows[name][-2:] == [f"{h}x{w}", str(len(ast.literal_eval(meta["names"])))]
