"""`fleet diff --against REF` in a throwaway git repository holding a copy of this project.

Run as users run it (`python -m fleet.cli diff` in the repository), so the plan at REF really comes
from REF's files and the working tree's from the working tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet.program import PROJECT_DIR
from tests.conftest import region_entry

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return done.stdout


def fleet(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def edit_catalog(repo: Path, change) -> None:
    path = repo / "regions.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def scale_oregon(data: dict) -> None:
    region_entry(data, "us-west1")["overrides"] = {"min_instances": 1, "max_instances": 40}
    region_entry(data, "me-central2")["enabled"] = False


def prod_in_the_changed_regions(repo: Path) -> None:
    """The prod stack's model only where the catalog change lands, and in Iowa (warm, as in every region's stack):
    each `fleet diff` plans both sides in cold processes, and 3 endpoints plan in a fraction of 43's time. The
    always-on totals stay the stock prod stack's: its warm instances (Iowa, the shared services), registries and
    balancer are all still there."""
    path = repo / "Pulumi.prod.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"]["yolo-fleet:models"][0]["regions"] = ["us-central1", "us-west1", "me-central2"]
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's tracked files (prod in 3 regions) at a first commit, then a catalog change committed on top."""
    root = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = PROJECT_DIR / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    prod_in_the_changed_regions(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "tag", "base")
    edit_catalog(root, scale_oregon)
    git(root, "commit", "-qam", "scale oregon, disable dammam")
    return root


def test_diff_shows_endpoints_policies_and_cost_between_two_catalogs(repo):
    done = fleet(repo, "diff", "--against", "base", "--stack", "prod")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"0 endpoint\(s\) added, 1 removed, 1 changed \(6 -> 5 Cloud Run services; (\d+) -> (\d+) "
                     r"resources in all\)", out)
    assert any(line.split()[:3] == ["removed", "monitoring", "AlertPolicy"] and "demo-dammam-error-ratio" in line
               for line in out.splitlines()), "the endpoint's alerts go with it, and the review says so"
    lines = out.splitlines()
    assert any(line.split()[:2] == ["removed", "demo-dammam"] for line in lines)
    assert any(line.split()[:3] == ["changed", "demo-oregon", "min"] and line.endswith("0 -> 1") for line in lines)
    assert any(line.split()[:3] == ["changed", "demo-oregon", "max"] and line.endswith("10 -> 40") for line in lines)
    # one more warm tier-1 instance of 2 vCPU / 4 GiB: +$39.42 a month always-on; both sides include the
    # balancer's forwarding rules ($18.25), Cloud Armor ($7), images ($0.12) and secret versions ($0.12), as
    # `fleet cost` does
    always_on = next(line.split() for line in lines if line.startswith("always-on"))
    assert always_on == ["always-on", "$301.43", "$340.85", "+$39.42"]
    new = next(line for line in lines if line.startswith("new"))
    assert "max-instances-cap" in new and "demo-oregon" in new and "max_instances 40" in new


def test_diff_markdown_is_a_pull_request_comment(repo):
    done = fleet(repo, "diff", "--against", "base", "--stack", "prod", "--markdown")
    assert done.returncode == 0, done.stderr
    md = done.stdout
    assert md.startswith("### `fleet diff`: stack `prod` against `base (")
    assert "| changed | `demo-oregon` | max | 10 → 40 |" in md
    assert "| removed | `demo-dammam` |" in md
    assert "| always-on | $301.43 | $340.85 | +$39.42 |" in md
    assert "| new | `max-instances-cap` | mandatory | `demo-oregon` |" in md


def test_a_ref_that_does_not_exist_exits_2_with_nothing_printed(repo):
    done = fleet(repo, "diff", "--against", "no-such-branch", "--markdown")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "--against no-such-branch: no such commit, branch or tag" in done.stderr


def test_a_catalog_that_does_not_validate_at_the_ref_exits_2(repo):
    good = (repo / "regions.yaml").read_text()
    edit_catalog(repo, lambda data: region_entry(data, "us-west1").update(id="us-wset1"))
    git(repo, "commit", "-qam", "typo")
    (repo / "regions.yaml").write_text(good)
    git(repo, "commit", "-qam", "fix the typo")
    done = fleet(repo, "diff", "--against", "HEAD~1", "--stack", "dev")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "the plan at HEAD~1" in done.stderr and "unknown Cloud Run region 'us-wset1'" in done.stderr


def test_a_price_file_missing_a_tier_exits_2(repo, tmp_path):
    prices = yaml.safe_load((repo / "fleet" / "prices.yaml").read_text())
    del prices["tiers"][2]
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(prices))
    done = fleet(repo, "diff", "--against", "base", "--stack", "prod", "--prices", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "no prices for pricing tier 2" in done.stderr


def test_an_unchanged_tree_brings_no_new_violations(repo):
    """The stock stack's placeholders (all-zero key digests, example tenants) are violations on both sides, so
    they are 'still' there, never 'new': the plan at the ref shows its secret inputs to the policies too."""
    done = fleet(repo, "diff", "--against", "HEAD", "--stack", "dev")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = next(line for line in lines if "endpoint(s) added" in line)
    assert summary.startswith("0 endpoint(s) added, 0 removed, 0 changed")
    count = summary.split("policy violations ")[1].split()
    assert count[0] == count[2] != "0", summary
    assert not [line for line in lines if line.split()[:1] in (["new"], ["resolved"])]
    assert f"{count[0]} violation(s) unchanged (`fleet policy --stack dev` lists them)." in lines


def test_a_ref_whose_fleet_predates_show_secrets_is_planned_masked_and_the_review_is_told(repo):
    cli = repo / "fleet" / "cli.py"
    current = cli.read_text()
    older = "\n".join(line for line in current.splitlines() if '"--show-secrets"' not in line)
    cli.write_text(older.replace("plan.to_json(args.show_secrets)", "plan.to_json()") + "\n")
    git(repo, "commit", "-qam", "a fleet without --show-secrets")
    cli.write_text(current)
    git(repo, "commit", "-qam", "and with it again")
    done = fleet(repo, "diff", "--against", "HEAD~1", "--stack", "dev")
    assert done.returncode == 0, done.stderr
    assert "note: the plan at HEAD~1" in done.stderr and "masks secret inputs" in done.stderr
    assert any(line.split()[:2] == ["new", "no-placeholders"] for line in done.stdout.splitlines())
