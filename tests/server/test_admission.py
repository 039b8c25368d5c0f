"""The admission rule, deterministic: a fake clock stands in for time, held turns for running predicts. A predict
waits while its expected wait (work ahead x recent service time / turns) is within the limit, and is refused
beyond it with a Retry-After taken from that wait; the service-time estimate starts from a prior and follows what
predicts really take, and the wait queued predicts really had counts too. Also the start-up checks of the limit
against the request timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inference_service.__main__ import parse_args
from inference_service.admission import EWMA_WEIGHT, Admission, AtCapacity
from tests.helpers_server import demo_model


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Holders:
    """Predicts that take a turn (or wait for one) and keep it until released, one at a time, oldest first."""

    def __init__(self, admission: Admission, clock: Clock) -> None:
        self.admission, self.clock, self.tasks, self.releases = admission, clock, [], []

    async def arrive(self) -> None:
        """One more predict: raises ``AtCapacity`` at once if refused, else is running or waiting on return."""
        self.admission.refuse_if_full()  # as the app does before reading the body
        release = asyncio.Event()

        async def hold() -> None:
            async with self.admission.slot():
                await release.wait()

        self.tasks.append(asyncio.create_task(hold()))
        self.releases.append(release)
        await asyncio.sleep(0)  # let it take a turn or start waiting

    async def finish_oldest(self, lag: float = 0.0) -> None:
        """The oldest predict leaves its turn; the next waiter takes it ``lag`` seconds later."""
        self.releases.pop(0).set()
        await asyncio.sleep(0)  # the holder leaves its turn
        self.clock.now += lag
        await asyncio.sleep(0)  # and the next waiter takes it

    async def finish_all(self, step: float) -> None:
        """Each holder leaves ``step`` seconds after the one before."""
        while self.releases:
            self.clock.now += step
            await self.finish_oldest()
        await asyncio.gather(*self.tasks)


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_predicts_wait_while_the_expected_wait_is_within_the_limit_then_the_next_is_refused() -> None:
    """2 turns, prior 0.25 s: the k-th waiter expects k x 0.25 / 2 s, so with a 1 s limit 8 wait and the 9th (1.125 s)
    is refused with Retry-After 2, without waiting; the metrics say so."""
    async def scenario() -> None:
        registry, clock = CollectorRegistry(), Clock()
        admission = Admission(2, 100, 1.0, registry, prior_service_s=0.25, clock=clock)
        holders = Holders(admission, clock)
        for _ in range(2):
            assert admission.expected_wait() == 0  # a turn is free
            await holders.arrive()
        assert sample(registry, "predict_running") == 2
        for k in range(1, 9):
            assert admission.expected_wait() == pytest.approx(k * 0.125)
            await holders.arrive()
        assert sample(registry, "predict_waiting") == 8
        with pytest.raises(AtCapacity) as refused:
            await holders.arrive()
        assert refused.value.retry_after_s == 2
        assert str(refused.value) == ("server is at capacity: 2 predicts running and 8 waiting, about 1.1 s of work "
                                      "ahead of a new one (allowed: 1 s, 100 waiting); retry in 2 s")
        assert sample(registry, "predict_shed_total") == 1
        assert (sample(registry, "predict_running"), sample(registry, "predict_waiting")) == (2, 8)
        assert sample(registry, "predict_max_wait_seconds") == 1.0
        await holders.finish_all(0.25)  # predicts as fast as the prior: every waiter gets its turn
        assert (sample(registry, "predict_running"), sample(registry, "predict_waiting")) == (0, 0)
        assert sample(registry, "predict_wait_seconds_count") == 10  # the k-th waiter waited k x 0.25 s
        assert sample(registry, "predict_wait_seconds_sum") == pytest.approx(0.25 * sum(range(1, 9)))

    asyncio.run(scenario())


def test_the_service_time_starts_from_the_prior_and_follows_what_predicts_take() -> None:
    """Before any predict finishes the estimate is the prior; a slow predict makes a shorter queue the limit; fast
    ones bring the estimate down to what they take."""
    async def scenario() -> None:
        registry, clock = CollectorRegistry(), Clock()
        admission = Admission(2, 100, 1.0, registry, prior_service_s=0.25, clock=clock)
        holders = Holders(admission, clock)
        assert admission.service_s == 0.25 and sample(registry, "predict_service_seconds") == 0.25
        await holders.arrive()
        await holders.finish_all(1.5)  # one predict, alone, held its turn 1.5 s
        slower = 0.25 + EWMA_WEIGHT * (1.5 - 0.25)
        assert admission.service_s == pytest.approx(slower) == 0.5
        assert sample(registry, "predict_service_seconds") == pytest.approx(slower)
        for _ in range(2 + 4):  # now the k-th waiter expects k x 0.5 / 2 s: 4 fit in the 1 s limit, not 8
            await holders.arrive()
        assert sample(registry, "predict_expected_wait_seconds") == pytest.approx(1.25)
        with pytest.raises(AtCapacity) as refused:
            await holders.arrive()
        assert refused.value.retry_after_s == 2
        await holders.finish_all(0.25)
        for _ in range(30):  # then predicts take 20 ms each, one at a time
            await holders.arrive()
            await holders.finish_all(0.02)
        assert 0.02 < admission.service_s < 0.025

    asyncio.run(scenario())


def test_the_wait_queued_predicts_really_had_counts_when_turns_are_handed_over_late() -> None:
    """An event loop too busy to hand a freed turn over at once (a storm of clients): predicts hold their turn
    0.25 s, as the prior says, but the next starts 0.5 s later. The wait per request ahead (0.75 s measured, 0.25 s
    after one sample) then rules: a new predict 5 turns back expects 1.25 s and is refused where the service time
    alone would admit 8 ahead. Handed over at once again, the queue grows back."""
    async def scenario() -> None:
        clock = Clock()
        admission = Admission(2, 100, 1.0, CollectorRegistry(), prior_service_s=0.25, clock=clock)
        holders = Holders(admission, clock)
        for _ in range(2 + 2):
            await holders.arrive()
        clock.now += 0.25
        await holders.finish_oldest(lag=0.5)
        assert admission.service_s == 0.25  # what the predict took
        assert admission.wait_per_ahead_s == pytest.approx(0.125 + EWMA_WEIGHT * (0.75 - 0.125)) == 0.25
        for _ in range(3):  # 2, 3 and 4 turns back: 0.5, 0.75 and 1.0 s
            await holders.arrive()
        with pytest.raises(AtCapacity) as refused:
            await holders.arrive()
        assert refused.value.retry_after_s == 2 and "about 1.2 s of work ahead" in str(refused.value)
        await holders.finish_all(0.02)
        for _ in range(10):  # a few short queues handed over at once
            for _ in range(2 + 2):
                await holders.arrive()
            await holders.finish_all(0.02)
        assert admission.wait_per_ahead_s < 0.025 and admission.service_s < 0.05
        for _ in range(2 + 30):  # 30 waiting now expect less than 30 x 0.025 s: all within the limit
            await holders.arrive()
        await holders.finish_all(0.02)

    asyncio.run(scenario())


def test_a_stale_high_wait_relaxes_while_nothing_queues() -> None:
    """After a stall (a turn handed over 9 s late) every would-be waiter is refused, so none can measure the wait
    anew; predicts that never queue bring it back toward what their service time says, and waiting resumes."""
    async def scenario() -> None:
        clock = Clock()
        admission = Admission(2, 100, 1.0, CollectorRegistry(), prior_service_s=0.25, clock=clock)
        holders = Holders(admission, clock)
        for _ in range(3):
            await holders.arrive()
        clock.now += 0.25
        await holders.finish_oldest(lag=9.0)
        assert admission.wait_per_ahead_s > 1.0
        with pytest.raises(AtCapacity):  # 1 ahead, over 1 s
            await holders.arrive()
        await holders.finish_all(0.25)
        for _ in range(40):  # one at a time, 0.25 s each: none waits
            await holders.arrive()
            await holders.finish_all(0.25)
        assert admission.wait_per_ahead_s == pytest.approx(0.125, abs=0.01)
        for _ in range(2 + 7):  # 7 x 0.125 s: a queue as before the stall
            await holders.arrive()
        await holders.finish_all(0.25)

    asyncio.run(scenario())


def test_the_queue_bound_refuses_whatever_the_expected_wait() -> None:
    """Memory stays bounded: with room for 2 waiting, the 3rd is refused though its 0.75 s wait is far within the
    100 s limit; Retry-After is still at least 1 s."""
    async def scenario() -> None:
        registry, clock = CollectorRegistry(), Clock()
        holders = Holders(Admission(1, 2, 100.0, registry, prior_service_s=0.25, clock=clock), clock)
        for _ in range(3):
            await holders.arrive()
        with pytest.raises(AtCapacity) as refused:
            await holders.arrive()
        assert refused.value.retry_after_s == 1 and "0.8 s of work ahead" in str(refused.value)
        assert sample(registry, "predict_queue_limit") == 2 and sample(registry, "predict_shed_total") == 1
        await holders.finish_all(0.25)

    asyncio.run(scenario())


def test_a_zero_wait_limit_serves_only_free_turns() -> None:
    async def scenario() -> None:
        clock = Clock()
        holders = Holders(Admission(2, 100, 0.0, CollectorRegistry(), clock=clock), clock)
        await holders.arrive()
        await holders.arrive()
        with pytest.raises(AtCapacity):
            await holders.arrive()
        await holders.finish_all(0.1)

    asyncio.run(scenario())


def args(*extra: str) -> list[str]:
    return ["--model", str(demo_model("e2e")), "--allow-anonymous", *extra]


@pytest.mark.parametrize(("timeout", "expected"), [(None, 5.0), ("60", 5.0), ("8", 2.0), ("1", 0.25)])
def test_the_default_wait_limit_stays_well_under_the_request_timeout(
        monkeypatch: pytest.MonkeyPatch, timeout: str | None, expected: float) -> None:
    """Cloud Run passes REQUEST_TIMEOUT (any 1..3600 s the catalog allows): the server starts with a limit of 5 s or
    a quarter of the timeout, whichever is less, and a hard bound of 16 waiting per turn."""
    monkeypatch.delenv("MAX_WAIT_SECONDS", raising=False)
    monkeypatch.delenv("MAX_QUEUE", raising=False)
    if timeout is None:
        monkeypatch.delenv("REQUEST_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("REQUEST_TIMEOUT", timeout)
    monkeypatch.setenv("MAX_CONCURRENCY", "8")
    parsed = parse_args(args()).settings
    assert parsed.max_wait_seconds == expected and parsed.max_queue == 128


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_wait_limit_not_under_the_request_timeout_is_a_start_up_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str, tmp_path: Path) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT", "30")
    if how == "env":
        monkeypatch.setenv("MAX_WAIT_SECONDS", "30")
    with pytest.raises(SystemExit) as done:
        parse_args(args("--max-wait-seconds", "30") if how == "flag" else args())
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--max-wait-seconds (MAX_WAIT_SECONDS) 30 must be at least 0 and below --request-timeout " \
           "(REQUEST_TIMEOUT) 30" in err and "Traceback" not in err
    monkeypatch.delenv("MAX_WAIT_SECONDS", raising=False)
    assert parse_args(args("--max-wait-seconds", "29.5")).settings.max_wait_seconds == 29.5


@pytest.mark.parametrize(("name", "flag"), [("MAX_WAIT_SECONDS", "--max-wait-seconds"), ("MAX_QUEUE", "--max-queue"),
                                            ("REQUEST_TIMEOUT", "--request-timeout")])
def test_a_capacity_setting_that_is_not_a_number_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, flag: str) -> None:
    monkeypatch.setenv(name, "5s")
    with pytest.raises(SystemExit) as done:
        parse_args(args())
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"{flag} ({name}): invalid value '5s'" in err


@pytest.mark.parametrize(("limit", "queue"), [(1, 0), (1, 3), (3, 2), (4, 5)])
def test_exactly_limit_run_exactly_queue_wait_and_the_next_is_refused(limit: int, queue: int) -> None:
    """With a wait limit no estimate reaches, only the two bounds decide: `limit` predicts hold a turn at once (never
    one more), `queue` wait, the next is refused and changes nothing; a finished predict hands its turn to the
    oldest waiter, and the room it frees admits exactly one more."""
    async def scenario() -> None:
        registry, clock = CollectorRegistry(), Clock()
        admission = Admission(limit, queue, 1e9, registry, prior_service_s=0.25, clock=clock)
        inside: list[int] = []  # predicts holding a turn now, by arrival number
        started: list[int] = []
        releases: dict[int, asyncio.Event] = {}
        tasks = []

        async def arrive(n: int) -> None:
            admission.refuse_if_full()
            releases[n] = asyncio.Event()

            async def hold() -> None:
                async with admission.slot():
                    inside.append(n)
                    started.append(n)
                    await releases[n].wait()
                    inside.remove(n)

            tasks.append(asyncio.create_task(hold()))
            for _ in range(3):
                await asyncio.sleep(0)

        def state() -> tuple[float, float, int]:
            return sample(registry, "predict_running"), sample(registry, "predict_waiting"), len(inside)

        for n in range(limit + queue):
            await arrive(n)
        assert state() == (limit, queue, limit)
        assert started == list(range(limit)), "the first `limit` run at once, the others wait"
        with pytest.raises(AtCapacity):
            await arrive(limit + queue)
        assert state() == (limit, queue, limit) and sample(registry, "predict_shed_total") == 1
        releases[0].set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert started == list(range(limit + min(queue, 1))), "the oldest waiter took the freed turn"
        assert state() == (limit, max(queue - 1, 0), limit) if queue else state() == (limit - 1, 0, limit - 1)
        await arrive(limit + queue + 1)  # the freed room admits one
        assert state() == (limit, queue, limit)
        with pytest.raises(AtCapacity):
            await arrive(limit + queue + 2)
        assert sample(registry, "predict_shed_total") == 2
        for event in releases.values():
            event.set()
        await asyncio.gather(*tasks)
        assert state() == (0, 0, 0) and sorted(started) == sorted(releases)

    asyncio.run(scenario())


def test_the_turn_is_checked_again_after_the_body_arrived() -> None:
    """Two predicts pass the check before their bodies are read while one turn is taken and one waiting place is
    free; only the first to finish uploading may wait, the other is refused when it asks for the turn."""
    async def scenario() -> None:
        registry = CollectorRegistry()
        admission = Admission(1, 1, 1e9, registry, prior_service_s=0.25, clock=Clock())
        running = asyncio.Event()

        async def hold(event: asyncio.Event) -> None:
            async with admission.slot():
                await event.wait()

        first = asyncio.create_task(hold(running))
        await asyncio.sleep(0)
        admission.refuse_if_full()  # both bodies still uploading: room for one waiter, both pass
        admission.refuse_if_full()
        waiter = asyncio.create_task(hold(running))
        await asyncio.sleep(0)
        async def second() -> None:
            async with admission.slot():
                pass

        with pytest.raises(AtCapacity):
            await asyncio.wait_for(second(), 1)  # refused at once, not left waiting past the bound
        assert sample(registry, "predict_shed_total") == 1
        running.set()
        await asyncio.gather(first, waiter)

    asyncio.run(scenario())


def test_a_predict_is_lone_only_on_a_server_that_was_idle() -> None:
    """What lets a predict run on the event loop (predict_service.py): it is the only one running or waiting, and
    no predict left its turn within the quiet time (another client's request may be sitting unread behind it)."""
    async def scenario() -> None:
        clock = Clock()
        admission = Admission(1, 100, 1.0, CollectorRegistry(), clock=clock)
        holders = Holders(admission, clock)
        await holders.arrive()
        assert admission.lone_after_quiet(0.01)  # the first predict of a fresh server
        await holders.arrive()  # one turn: this one waits
        clock.now += 1
        assert not admission.lone_after_quiet(0.01)  # one running, one waiting
        await holders.finish_oldest()
        assert not admission.lone_after_quiet(0.01)  # the waiter runs alone, but a predict just ended
        clock.now += 0.005
        assert not admission.lone_after_quiet(0.01)
        clock.now += 0.006
        assert admission.lone_after_quiet(0.01)
        await holders.finish_all(0.0)
        assert not admission.lone_after_quiet(0.0)  # none running: the caller must hold a turn

    asyncio.run(scenario())
