"""The suite's plan cache (tests/conftest.py) hands out plans that behave like fresh evaluations."""

from __future__ import annotations

from fleet.program import CLOUD_RUN, evaluate


def test_an_edited_plan_does_not_leak_into_the_next_evaluation():
    first = evaluate("dev")
    count, location = len(first.resources), first.custom(CLOUD_RUN)[0].inputs["location"]
    first.custom(CLOUD_RUN)[0].inputs["location"] = "edited"
    first.resources.clear()
    again = evaluate("dev")
    assert (len(again.resources), again.custom(CLOUD_RUN)[0].inputs["location"]) == (count, location)


def test_a_catalog_rewritten_at_the_same_path_is_planned_anew(write_catalog):
    def enabled(flag: bool):
        return lambda data: [r.update(enabled=flag) for r in data["regions"] if r["id"] == "asia-northeast1"]

    path = write_catalog(enabled(True))
    with_tokyo = {r.inputs["location"] for r in evaluate("dev", catalog=path).custom(CLOUD_RUN)}
    write_catalog(enabled(False))  # same file, new content
    without = {r.inputs["location"] for r in evaluate("dev", catalog=path).custom(CLOUD_RUN)}
    assert "asia-northeast1" in with_tokyo and "asia-northeast1" not in without
