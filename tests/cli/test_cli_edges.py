"""`fleet`'s rough edges as a user meets them: piping into head, credentials checked first, no library warnings,
suggestions for a mistyped --endpoint, and the "stopped before declaring anything" prefix only where it is true."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.cli import main, parser
from tests.cli.test_monitor_cli import fake_fleet, run_monitor
from tests.fakes.metric_service import FakeMetricService, serve

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, env: dict[str, str] | None = None, close_stdout: bool = False) -> tuple[int, str]:
    """`python -m fleet.cli ARGS` as a process; with `close_stdout` its reader is gone before it writes
    (`fleet ... | head` once head has its lines). Returns (exit status, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    if close_stdout:
        proc.stdout.close()
    else:
        proc.stdout.read()
    err = proc.stderr.read()
    return proc.wait(60), err


@pytest.mark.parametrize("command", [["regions"], ["plan", "--stack", "dev"]])
def test_a_reader_that_goes_away_ends_fleet_quietly(command: list[str]) -> None:
    code, err = fleet(*command, close_stdout=True)
    assert err == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert code == 141  # as a shell reports a process whose reader went away


def test_monitor_against_the_fake_prints_no_warnings_from_googles_libraries() -> None:
    with serve(fake_fleet()) as endpoint:
        code, err = fleet("monitor", "--stack", "dev", "--json", env={"FLEET_MONITORING_ENDPOINT": endpoint})
    assert code == 0
    assert err == ""  # google.api_core's FutureWarning about this Python's end of life was here, once per library


@pytest.mark.parametrize(("command", "client_variable"),
                         [("monitor", "FLEET_MONITORING_ENDPOINT"), ("logs", "FLEET_LOGGING_ENDPOINT")])
def test_a_credentials_file_that_does_not_exist_is_named_before_the_stack_is_read(
        monkeypatch, capsys, tmp_path: Path, command: str, client_variable: str) -> None:
    missing = tmp_path / "key.json"
    monkeypatch.delenv(client_variable, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))

    def stack_layout(*_: object, **__: object) -> None:
        raise AssertionError("the stack was read before the credentials were checked")

    monkeypatch.setattr("fleet.cloud.stack_layout", stack_layout)
    started = time.monotonic()
    assert main([command, "--stack", "dev"]) == 2
    assert time.monotonic() - started < 2
    assert capsys.readouterr().err == (
        f"fleet {command}: GOOGLE_APPLICATION_CREDENTIALS={missing}: no such file; point it at a service account "
        "key or credentials JSON file, or unset it and run `gcloud auth application-default login`\n")


def test_a_credentials_file_google_cannot_read_is_named_with_googles_reason(monkeypatch, capsys,
                                                                             tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text("{}")
    monkeypatch.delenv("FLEET_MONITORING_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(bad))
    assert main(["monitor", "--stack", "dev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fleet monitor: GOOGLE_APPLICATION_CREDENTIALS={bad}: ")
    assert "stopped before declaring anything" not in err and len(err.splitlines()) == 1


def test_a_mistyped_endpoint_gets_a_suggestion_and_no_plan_prefix(monkeypatch, capsys) -> None:
    code, out, err = run_monitor(monkeypatch, capsys, FakeMetricService({}), "--endpoint", "demo-iwoa")
    assert code == 2 and out == ""
    assert err == ("fleet monitor: --endpoint demo-iwoa: no such endpoint or Cloud Run service in stack dev; "
                   "did you mean demo-iowa?\n")


def test_a_plan_evaluation_error_keeps_the_prefix(capsys) -> None:
    assert main(["plan", "--stack", "dev", "--catalog", "does-not-exist.yaml"]) == 2
    assert capsys.readouterr().err.startswith("fleet plan: stopped before declaring anything:\n")


def test_range_help_names_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["monitor", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--range {1h,6h,24h,7d,30d} how far back (default 1h)" in help_text


@pytest.mark.parametrize(("argv", "line"), [
    (["plan", "--jsn"], "fleet plan: error: unrecognized arguments: --jsn; did you mean --json? "
                        "(`fleet plan --help` lists the options)"),
    (["monitor", "--range", "2h"], "fleet monitor: error: argument --range: invalid choice: '2h' (choose from '1h', "
                                   "'6h', '24h', '7d', '30d') (`fleet monitor --help` lists the options)"),
    (["cost", "--requests-per-second", "abc"], "fleet cost: error: argument --requests-per-second: invalid float "
                                               "value: 'abc' (`fleet cost --help` lists the options)"),
])
def test_a_wrong_option_is_one_line_naming_the_command_and_exit_2(capsys, argv: list[str], line: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line + "\n")


def test_each_commands_help_opens_with_what_it_does(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["cost", "--help"])
    assert "\nmonthly cost at list prices" in capsys.readouterr().out


def test_fleet_says_when_it_reads_another_checkout_than_the_one_you_stand_in(tmp_path: Path) -> None:
    from fleet.cli import other_checkout

    assert other_checkout(ROOT) is None and other_checkout(ROOT / "components") is None
    (tmp_path / "Pulumi.yaml").write_text("name: yolo-fleet\nruntime: python\n")
    (tmp_path / "sub").mkdir()
    assert other_checkout(tmp_path / "sub") == tmp_path
    assert other_checkout(Path("/")) is None
    (tmp_path / "Pulumi.yaml").write_text("name: my-other-infra\n")
    assert other_checkout(tmp_path / "sub") is None, "another Pulumi project is not another checkout of this one"


def test_the_note_about_another_checkout_is_printed_once_on_stderr(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["regions"]) == 0
    assert capsys.readouterr().err == (f"fleet: note: this fleet reads {ROOT}, not {tmp_path} where you are; run "
                                       "that checkout's own .venv/bin/fleet\n")
