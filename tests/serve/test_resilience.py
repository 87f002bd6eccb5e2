"""serve.resilience without Ray: the background generation queue (dedup, bound, age, shedding,
cancellation), the circuit breaker and the stage monitor, with fake work and a fake clock.

    pytest -q tests/serve/test_resilience.py
"""

from __future__ import annotations

import asyncio

import pytest

from serve.resilience import CircuitBreaker, GenerationQueue, StageMonitor, awaited


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(**kwargs) -> GenerationQueue:
    return GenerationQueue(**{"max_length": 4, "max_age_s": 5.0, "workers": 1, **kwargs})


def _work(log: list, value, delay: float = 0.0):
    async def run():
        log.append(value)
        await asyncio.sleep(delay)
        return value

    return run


def test_the_same_key_is_generated_once():
    async def main():
        q, ran = _queue(), []
        first = q.submit("k", _work(ran, "a", 0.01), 1.0)
        again = q.submit("k", _work(ran, "b"), 1.0)
        assert again is first
        assert await first == "a"
        assert ran == ["a"] and q.events["deduplicated"] == 1 and q.events["done"] == 1
        # Once done, the key may be generated again (the cache answers it meanwhile).
        assert await q.submit("k", _work(ran, "c"), 1.0) == "c"

    asyncio.run(main())


def test_a_full_queue_sheds_new_work_at_once():
    async def main():
        q, ran = _queue(max_length=2), []
        blocker = q.submit("running", _work(ran, 0, 0.05), 1.0)
        await asyncio.sleep(0)  # the worker takes it: the queue is empty again
        waiting = [q.submit(f"k{i}", _work(ran, i), 1.0) for i in range(2)]
        assert all(f is not None for f in waiting) and len(q) == 2
        assert q.submit("k-over", _work(ran, "over"), 1.0) is None  # no wait behind the backlog
        assert q.events["shed"] == 1
        await asyncio.gather(blocker, *waiting)
        assert "over" not in ran and q.stats()["waiting"] == 0

    asyncio.run(main())


def test_work_older_than_max_age_is_dropped_without_running():
    async def main():
        clock = Clock()
        q, ran = _queue(clock=clock, max_age_s=2.0), []
        gate = asyncio.Event()

        async def blocking():
            await gate.wait()
            return "blocker"

        q.submit("blocker", blocking, 60.0)
        await asyncio.sleep(0)
        old = q.submit("old", _work(ran, "old"), 1.0)
        clock.now += 3.0  # it waited past its maximum age
        fresh = q.submit("fresh", _work(ran, "fresh"), 1.0)
        gate.set()
        assert await old is None and await fresh == "fresh"
        assert ran == ["fresh"] and q.events["expired"] == 1
        assert q.max_started_age_s <= 2.0

    asyncio.run(main())


def test_a_job_past_its_timeout_is_cancelled_and_resolves_to_none():
    async def main():
        cancelled = []

        async def hangs():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        outcomes = []
        q = _queue(on_outcome=lambda event, cause: outcomes.append((event, cause)))
        assert await q.submit("k", hangs, 0.05) is None
        assert cancelled == [True] and q.events["timeout"] == 1 and ("timeout", "timeout") in outcomes

    asyncio.run(main())


def test_failures_resolve_to_none_and_name_the_error():
    async def main():
        async def fails():
            raise RuntimeError("engine died")

        outcomes = []
        q = _queue(on_outcome=lambda event, cause: outcomes.append((event, cause)))
        assert await q.submit("k", fails, 1.0) is None
        assert ("failed", "RuntimeError") in outcomes

    asyncio.run(main())


def test_a_job_refused_for_overload_names_overload_not_the_exception():
    """Serve's BackPressureError (the generator's queue is full) is reported as the cause
    `overloaded`, the same word the ingress uses for every other refused call."""
    from ray.serve.exceptions import BackPressureError

    async def main():
        async def refused():
            raise BackPressureError(num_queued_requests=4, max_queued_requests=4)

        outcomes = []
        q = _queue(on_outcome=lambda event, cause: outcomes.append((event, cause)))
        assert await q.submit("k", refused, 1.0) is None
        assert ("failed", "overloaded") in outcomes and q.events["failed"] == 1

    asyncio.run(main())


def test_a_closed_gate_drops_waiting_work():
    async def main():
        open_ = [False]
        q, ran = _queue(gate=lambda: open_[0]), []
        assert await q.submit("k", _work(ran, 1), 1.0) is None
        assert ran == [] and q.events["refused"] == 1

    asyncio.run(main())


def test_workers_bound_concurrency_and_close_cancels_everything():
    async def main():
        q, running, peak = _queue(workers=2, max_length=10), [0], [0]

        async def slow():
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            try:
                await asyncio.sleep(10)
            finally:
                running[0] -= 1

        futures = [q.submit(i, slow, 60.0) for i in range(5)]
        await asyncio.sleep(0.05)
        assert peak[0] == 2 and q.running == 2 and len(q) == 3
        await q.close()
        assert running[0] == 0 and all(f.done() and f.result() is None for f in futures)
        assert q.events["cancelled"] == 5

    asyncio.run(main())


def test_awaited_cancels_the_request_it_gives_up_on():
    class Response:
        def __init__(self):
            self.cancelled = False

        def __await__(self):
            return asyncio.sleep(10).__await__()

        def cancel(self):
            self.cancelled = True

    async def main():
        r = Response()
        with pytest.raises(asyncio.TimeoutError):
            await awaited(r, 0.01)
        assert r.cancelled

    asyncio.run(main())


# ----------------------------------------------------------------------------- breaker


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown():
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown_s=2.0, clock=clock)
    b.failure()
    b.failure()
    b.success()  # not consecutive: still closed
    b.failure()
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.now += 2.0
    assert b.allow() and b.state == "half_open"  # one trial
    assert not b.allow()  # the others still skip
    b.failure()  # the trial failed: open for another cool-down
    assert b.state == "open" and not b.allow()
    clock.now += 2.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.opened == 2


def test_a_half_open_trial_that_never_reports_does_not_block_forever():
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown_s=1.0, clock=clock)
    b.failure()
    clock.now += 1.0
    assert b.allow() and not b.allow()
    clock.now += 1.0
    assert b.allow()


def test_breaker_rejects_nonsense_settings():
    with pytest.raises(ValueError, match="failures >= 1"):
        CircuitBreaker(failures=0, cooldown_s=1)


# ----------------------------------------------------------------------------- monitor


def test_monitor_reports_ok_busy_and_down_and_drives_the_breakers():
    async def main():
        behaviour = {"retriever": 0.0, "ranker": 0.0, "generator": 0.0}
        failing = set()

        def probe(name):
            async def run():
                await asyncio.sleep(behaviour[name])
                if name in failing:
                    raise ConnectionError(f"{name} replica died")
                return "ok"

            return run

        breakers = {n: CircuitBreaker(3, 60.0) for n in behaviour}
        m = StageMonitor(
            {n: probe(n) for n in behaviour}, breakers, interval_s=1.0, timeout_s=0.1, busy_s=0.03, down_after=2
        )
        await m.probe_once()
        assert {n: m.state(n) for n in behaviour} == dict.fromkeys(behaviour, "ok")
        behaviour["ranker"] = 0.05  # slow but answering
        behaviour["generator"] = 1.0  # hung
        failing.add("retriever")  # dead
        await m.probe_once()
        assert m.state("ranker") == "busy" and m.state("generator") == "busy" and m.state("retriever") == "down"
        assert breakers["retriever"].state == "open" and breakers["generator"].state == "closed"
        await m.probe_once()
        assert m.state("generator") == "down" and breakers["generator"].state == "open"
        # Back: the next probe closes the breakers, whatever their cool-down.
        failing.clear()
        behaviour.update(ranker=0.0, generator=0.0)
        await m.probe_once()
        assert {n: m.state(n) for n in behaviour} == dict.fromkeys(behaviour, "ok")
        assert all(b.state == "closed" for b in breakers.values())
        snap = m.snapshot()
        assert snap["retriever"]["state"] == "ok" and snap["retriever"]["probed_ms_ago"] is not None

    asyncio.run(main())


def test_monitor_runs_in_the_background_until_closed():
    async def main():
        calls = []

        async def probe():
            calls.append(1)

        m = StageMonitor({"ranker": probe}, {}, interval_s=0.05, timeout_s=0.1, busy_s=0.05)
        await m.first_round()
        await asyncio.sleep(0.2)
        await m.close()
        assert m.rounds >= 3 and len(calls) == m.rounds

    asyncio.run(main())


def test_urgent_work_runs_first_and_takes_the_place_of_other_work_when_full():
    async def main():
        q, ran = _queue(max_length=2), []
        gate = asyncio.Event()

        async def blocking():
            await gate.wait()

        q.submit("blocker", blocking, 60.0)
        await asyncio.sleep(0)
        reasons = [q.submit(f"reason{i}", _work(ran, f"reason{i}"), 1.0) for i in range(2)]
        page = q.submit("page", _work(ran, "page"), 1.0, urgent=True)
        assert page is not None and q.events["shed"] == 1  # the newest reason made room
        assert q.submit("reason-late", _work(ran, "late"), 1.0) is None  # full: shed
        gate.set()
        await asyncio.gather(page, *reasons)
        assert ran == ["page", "reason0"] and reasons[1].result() is None

    asyncio.run(main())
