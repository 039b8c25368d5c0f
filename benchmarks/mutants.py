"""Mutation testing (`make mutants`): mutmut plants small bugs, one at a time, in the modules that decide what
users see, and runs the tests that reach each one. A mutant no test notices is a bug the suite would let through.

mutmut copies what it mutates into `mutants/` beside the code; a scratch copy of the repository per module under
/var/tmp (YOLO_FLEET_MUTANTS_DIR) keeps the working tree clean and lets `also_copy` name every file except the
mutated one (mutmut copies those after mutating, which would undo the mutation). Tests run in-process, so each
module is paired with the fast tests that import it (tests that only run a subprocess, or start a server process,
teach mutmut nothing and cost seconds per mutant). One module at a time: a run stopped half way keeps the
scores of the modules it finished in the report.

    python benchmarks/mutants.py [--jobs 1] [--only fleet/pricing.py ...]   # score, survivors, JSON report
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("YOLO_FLEET_MUTANTS_DIR", "/var/tmp/yolo-fleet-mutants"))
# The console script, not `python -m mutmut`: the mutated code imports mutmut.__main__, which must be the
# module already running, not a second copy (under -m, set_start_method runs twice and fails).
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
REPORT = ROOT / "benchmarks" / "results" / "mutants.json"
# The modules that decide behaviour, each with the in-process tests that exercise it, fastest modules first.
TARGETS: dict[str, list[str]] = {
    "components/precedence.py": ["tests/components/test_precedence.py", "tests/components/test_layers.py"],
    "components/layout.py": ["tests/components/test_precedence.py", "tests/components/test_layers.py"],
    "components/settings.py": ["tests/components/test_settings_rules.py", "tests/components/test_precedence.py",
                               "tests/components/test_catalog_schema.py"],
    "components/catalog.py": ["tests/components/test_catalog_files.py", "tests/components/test_layers.py",
                              "tests/components/test_precedence.py",
                              "tests/components/test_catalog_schema.py", "tests/components/test_catalog_errors.py"],
    "inference_service/admission.py": ["tests/server/test_admission.py", "tests/server/test_admission_bounds.py"],
    "fleet/logs.py": ["tests/cli/test_logs_cli.py", "tests/cli/test_cli_help.py"],
    "inference_service/auth.py": ["tests/server/test_auth_units.py", "tests/server/test_secret_recheck.py"],
    "inference_service/tenancy.py": ["tests/server/test_auth_units.py", "tests/server/test_secret_recheck.py"],
    "fleet/pricing.py": ["tests/cli/test_cost.py"],
    "fleet/monitor.py": ["tests/cli/test_monitor_cli.py", "tests/cli/test_monitor_figures.py",
                         "tests/cli/test_cli_help.py"],
    "inference_service/wire.py": ["tests/server/test_wire.py"],
    "inference_service/postprocess.py": ["tests/server/test_postprocess.py", "tests/server/test_inference_core.py"],
    "inference_service/resize.py": ["tests/server/test_inference_core.py", "tests/server/test_letterbox.py"],
    "inference_service/decode.py": ["tests/server/test_decode.py", "tests/server/test_inference_core.py"],
    "inference_service/letterbox.py": ["tests/server/test_letterbox.py"],
    "inference_service/form.py": ["tests/server/test_form.py"],
    "components/monitoring.py": ["tests/components/test_monitoring.py", "tests/components/test_monitoring_filters.py"],
    "policy/policies.py": ["tests/policy/test_policy.py", "tests/policy/test_readiness.py"],
}
KILLED = {"killed", "timeout", "caught by type check"}
# mutmut forks each mutant from the process that ran the tests once: torch's OpenMP thread pool does not survive a
# fork, so a forked test calling torch (torchvision NMS, ultralytics' NMS, a convolution) would hang until mutmut's
# CPU limit and count as a kill ("timeout") whatever the mutant did. One thread, no pool.
FORK_SAFE = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def prepare(work: Path, module: str, tests: list[str]) -> None:
    """A fresh copy of the repository with mutmut's config naming every file but the mutated one."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = tracked_files() + [str(p.relative_to(ROOT)) for p in (ROOT / "inference_service").glob("_*.so")]
    for name in files:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    config = {"source_paths": [module], "pytest_add_cli_args_test_selection": tests,
              "pytest_add_cli_args": ["-p", "no:cacheprovider"], "also_copy": _also_copy(files, module)}
    with (work / "pyproject.toml").open("a") as f:
        f.write("\n[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items()))


def _also_copy(files: list[str], module: str) -> list[str]:
    """Whole folders where nothing is mutated, single files beside the mutated one (tests/ mutmut copies itself)."""
    target_dirs = {str(parent) for parent in Path(module).parents}
    picked: set[str] = set()
    for name in files:
        if name == module or name.startswith("tests/"):
            continue
        keep = name
        for parent in reversed(Path(name).parents):  # the outermost folder holding no target
            if str(parent) != "." and str(parent) not in target_dirs:
                keep = str(parent)
                break
        picked.add(keep)
    return sorted(picked)


def run_module(module: str, jobs: int) -> dict[str, object]:
    """mutmut over one module: status counts, surviving mutant names, seconds."""
    work = WORK / module.replace("/", "_").removesuffix(".py")
    prepare(work, module, TARGETS[module])
    start = time.monotonic()
    subprocess.run([MUTMUT, "run", "--max-children", str(jobs)], cwd=work, stdout=subprocess.DEVNULL,
                   env={**os.environ, **FORK_SAFE})
    seconds = time.monotonic() - start
    meta = work / "mutants" / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
    statuses = {name: status_by_exit_code[code] for name, code in codes.items()}
    counts = Counter(statuses.values())
    tested = sum(counts.values()) - counts["not checked"] - counts["skipped"]
    killed = sum(counts[s] for s in KILLED)
    return {"seconds": round(seconds), "mutants": len(codes), "killed": killed, "tested": tested,
            "score": round(killed / tested, 4) if tested else None, "counts": dict(counts),
            "survivors": sorted(n for n, s in statuses.items() if s not in KILLED | {"not checked", "skipped"})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1: the machine is shared)")
    ap.add_argument("--only", nargs="+", metavar="MODULE", choices=sorted(TARGETS), help="a subset of the modules")
    args = ap.parse_args()
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {"modules": {}}
    for module in args.only or TARGETS:
        result = run_module(module, args.jobs)
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        report["modules"][module] = result
        print(f"{module}: {result['killed']} of {result['tested']} killed ({result['score']:.1%}) in "
              f"{result['seconds']} s; {len(result['survivors'])} survivors", flush=True)
        _save(report)
    return 0


def _save(report: dict[str, object]) -> None:
    """The report with its totals over the modules it holds (earlier runs of other modules kept)."""
    modules: dict[str, dict[str, object]] = report["modules"]  # type: ignore[assignment]
    killed = sum(int(m["killed"]) for m in modules.values())
    tested = sum(int(m["tested"]) for m in modules.values())
    report.update(killed=killed, tested=tested, score=round(killed / tested, 4) if tested else None,
                  seconds=sum(int(m["seconds"]) for m in modules.values()))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
