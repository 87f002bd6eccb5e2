"""Fail fast, recover fast: a circuit breaker per stage, cached health probes, and the bounded
background queue that generation for cache misses runs through.

    from serve.resilience import CircuitBreaker, GenerationQueue, StageMonitor

All three live on one ingress replica's event loop (asyncio, no threads) and are plain classes,
so tests drive them in-process with fake stages and a fake clock. The ingress (`serve.ingress`)
asks a stage's breaker before every call and skips a stage that is open at once, instead of
waiting out its budget; `/readyz` reads the monitor's last probe results, never probes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("shopgraph.serve")

BreakerState = Literal["closed", "open", "half_open"]
StageState = Literal["ok", "busy", "down", "unknown"]


async def awaited(response, timeout_s: float | None = None):
    """Await a Serve DeploymentResponse (or any awaitable) for at most `timeout_s`; when the wait
    times out or is cancelled, cancel the request itself (`response.cancel()`: Serve raises
    CancelledError in the replica's coroutine, which aborts its vLLM request), so abandoned work
    stops where it runs instead of finishing for no one."""
    try:
        if timeout_s is None:
            return await response
        return await asyncio.wait_for(_plain(response), timeout=max(timeout_s, 0.0))
    except (TimeoutError, asyncio.CancelledError):
        cancel = getattr(response, "cancel", None)
        if cancel is not None:
            with contextlib.suppress(Exception):  # best effort: the replica may be gone already
                cancel()
        raise


async def _plain(response):
    return await response


def overloaded(exc: BaseException) -> bool:
    """Whether `exc` is Serve refusing a call for overload (the callee's `max_queued_requests`
    reached): the stage is alive and busy, so it must not count as a failure or trip a breaker."""
    from ray.serve.exceptions import BackPressureError

    return isinstance(exc, BackPressureError)


class CircuitBreaker:
    """Consecutive failures open the breaker; an open breaker refuses calls (the caller falls back
    at once) until `cooldown_s` has passed, then lets one trial call through (half-open): its
    success closes the breaker, its failure opens it for another cool-down. Health probes feed it
    too (`trip` when a probe finds the stage down, `success` when it answers), so a stage that
    comes back is used again within one probe interval, whatever the traffic."""

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        if failures < 1 or cooldown_s < 0:
            raise ValueError(f"breaker needs failures >= 1 and cooldown_s >= 0; got {failures}, {cooldown_s}")
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.state: BreakerState = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.trial_at = 0.0
        self.opened = 0  # times it opened, for /readyz and tests

    def allow(self) -> bool:
        """Whether a call may go to the stage now (a half-open breaker lets one trial through per cool-down)."""
        if self.state == "closed":
            return True
        now = self.clock()
        if self.state == "open" and now - self.opened_at >= self.cooldown_s:
            self.state, self.trial_at = "half_open", now
            return True
        if self.state == "half_open" and now - self.trial_at >= self.cooldown_s:  # the trial never reported
            self.trial_at = now
            return True
        return False

    def success(self) -> None:
        self.state, self.consecutive = "closed", 0

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.failures:
            self.trip()

    def trip(self) -> None:
        if self.state != "open":
            self.opened += 1
        self.state, self.opened_at = "open", self.clock()


@dataclass
class _Job:
    key: Hashable
    run: Callable[[], Awaitable[Any]]
    timeout_s: float
    enqueued: float
    future: asyncio.Future = field(repr=False)


class GenerationQueue:
    """Background generation for cache misses, one per ingress replica: bounded, de-duplicated by
    cache key, `workers` jobs at a time; urgent jobs (a page's sections and note: one per page
    view) before the rest (reasons: several per response), oldest first within each.

    `submit(key, run, timeout_s)` returns the future of the job for `key` (an already queued or
    running one if there is one: the same content is generated once), or None when the queue is
    full: the work is shed at once and the caller serves template copy, never waits behind a
    backlog (an urgent job takes the place of the newest waiting non-urgent one, which is shed). A job still waiting after `max_age_s` is dropped without running (whoever asked has
    long been answered), one that runs past its `timeout_s` is cancelled (`run` must cancel its
    deployment call, see `awaited`). The future resolves to `run()`'s value, or None when the job
    was dropped, timed out or failed; it never raises. `events` counts what happened.
    """

    EVENTS = ("submitted", "deduplicated", "shed", "expired", "refused", "done", "failed", "timeout", "cancelled")

    def __init__(
        self,
        *,
        max_length: int,
        max_age_s: float,
        workers: int,
        gate: Callable[[], bool] | None = None,
        on_outcome: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_length < 0 or workers < 1 or max_age_s <= 0:
            raise ValueError(
                f"queue needs max_length >= 0, workers >= 1, max_age_s > 0; got {max_length}, {workers}, {max_age_s}"
            )
        self.max_length, self.max_age_s, self.workers = max_length, max_age_s, workers
        self.gate = gate  # checked when a job is about to run: False drops it (the generator is down)
        self.on_outcome = on_outcome  # (outcome, cause), for metrics: ("done"|"failed"|..., error name)
        self.clock = clock
        self.events = dict.fromkeys(self.EVENTS, 0)
        self.max_started_age_s = 0.0  # the oldest a job ever was when it started: never above max_age_s
        self._waiting: deque[_Job] = deque()
        self._urgent: deque[_Job] = deque()
        self._jobs: dict[Hashable, _Job] = {}  # waiting or running, by key
        self._running: set[asyncio.Task] = set()
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []

    # -- state

    def __len__(self) -> int:
        return len(self._waiting) + len(self._urgent)

    @property
    def running(self) -> int:
        return len(self._running)

    def oldest_age_s(self) -> float:
        oldest = [q[0].enqueued for q in (self._waiting, self._urgent) if q]
        return self.clock() - min(oldest) if oldest else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "waiting": len(self),
            "running": self.running,
            "max_length": self.max_length,
            "oldest_age_ms": round(1000 * self.oldest_age_s(), 1),
            "max_started_age_ms": round(1000 * self.max_started_age_s, 1),
            **self.events,
        }

    def _count(self, event: str, cause: str = "") -> None:
        self.events[event] += 1
        if self.on_outcome is not None:
            self.on_outcome(event, cause)

    # -- submitting

    def submit(
        self, key: Hashable, run: Callable[[], Awaitable[Any]], timeout_s: float, *, urgent: bool = False
    ) -> asyncio.Future | None:
        job = self._jobs.get(key)
        if job is not None:
            self._count("deduplicated")
            return job.future
        if len(self) >= self.max_length:
            if not (urgent and self._waiting):
                self._count("shed")
                return None
            self._finish(self._waiting.pop(), None, "shed")  # the newest non-urgent job makes room
        self._ensure_workers()
        job = _Job(key, run, timeout_s, self.clock(), asyncio.get_running_loop().create_future())
        (self._urgent if urgent else self._waiting).append(job)
        self._jobs[key] = job
        self._count("submitted")
        self._wakeup.set()
        return job.future

    def _ensure_workers(self) -> None:
        if self._workers and not all(w.done() for w in self._workers):
            return
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    def _finish(self, job: _Job, value: Any, event: str, cause: str = "") -> None:
        self._jobs.pop(job.key, None)
        if not job.future.done():
            job.future.set_result(value)
        self._count(event, cause)

    # -- running

    async def _work(self) -> None:
        while True:
            while not len(self):
                self._wakeup.clear()
                await self._wakeup.wait()
            job = (self._urgent or self._waiting).popleft()
            age = self.clock() - job.enqueued
            if age > self.max_age_s:
                self._finish(job, None, "expired")
                continue
            if self.gate is not None and not self.gate():
                self._finish(job, None, "refused", "down")
                continue
            self.max_started_age_s = max(self.max_started_age_s, age)
            task = asyncio.create_task(self._run(job))
            self._running.add(task)
            try:
                await asyncio.shield(task)  # a cancelled worker (close) cancels the job below, not here
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                self._running.discard(task)

    async def _run(self, job: _Job) -> None:
        try:
            value = await asyncio.wait_for(job.run(), timeout=job.timeout_s)
        except TimeoutError:
            self._finish(job, None, "timeout", "timeout")
        except asyncio.CancelledError:
            self._finish(job, None, "cancelled")
            raise
        except Exception as e:  # the generator failed or refused for overload: the caller keeps its template copy
            self._finish(job, None, "failed", "overloaded" if overloaded(e) else type(e).__name__)
        else:
            self._finish(job, value, "done")

    async def close(self) -> None:
        """Cancel the workers, the running jobs (and so their deployment calls) and drop the rest."""
        for task in [*self._workers, *self._running]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._running, return_exceptions=True)
        for waiting in (self._urgent, self._waiting):
            while waiting:
                self._finish(waiting.popleft(), None, "cancelled")
        self._workers = []


@dataclass
class StageHealth:
    state: StageState = "unknown"
    detail: str = "not probed yet"
    latency_ms: float | None = None
    at: float | None = None  # clock() of the probe
    timeouts: int = 0  # consecutive


class Busy(str):
    """What a probe returns for a stage that answers but is saturated (the reason, as text)."""


class StageMonitor:
    """Probes every stage every `interval_s` in the background, each with a short `timeout_s`, and
    keeps the last result: ok (answered within `busy_s`), busy (answered late, returned `Busy`,
    or timed out once: a loaded stage), down (failed, or timed out `down_after` times in a row). `/readyz` reads
    these results (`snapshot`), so it answers at once whatever the stages do. Each result also
    feeds the stage's breaker: down trips it, an answer closes it."""

    def __init__(
        self,
        probes: dict[str, Callable[[], Awaitable[Any]]],
        breakers: dict[str, CircuitBreaker],
        *,
        interval_s: float,
        timeout_s: float,
        busy_s: float,
        down_after: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.probes, self.breakers = probes, breakers
        self.interval_s, self.timeout_s, self.busy_s, self.down_after = interval_s, timeout_s, busy_s, down_after
        self.clock = clock
        self.health = {name: StageHealth() for name in probes}
        self.rounds = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start probing on the running loop (idempotent: restarts a loop that died)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            started = self.clock()
            try:
                await self.probe_once()
            except Exception:  # a bug here must not stop the probing
                log.exception("stage probe round failed")
            await asyncio.sleep(max(0.05, self.interval_s - (self.clock() - started)))

    async def first_round(self) -> None:
        """Wait for the first probe round (at most one probe timeout); later calls return at once."""
        self.start()
        while self.rounds == 0:
            await asyncio.sleep(0.02)

    async def probe_once(self) -> None:
        await asyncio.gather(*(self._probe(name, fn) for name, fn in self.probes.items()))
        self.rounds += 1

    async def _probe(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        h = self.health[name]
        breaker = self.breakers.get(name)
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(_plain(fn()), timeout=self.timeout_s)
        except TimeoutError:
            h.timeouts += 1
            h.state = "down" if h.timeouts >= self.down_after else "busy"
            h.detail = f"no answer to {h.timeouts} probe(s) within {self.timeout_s * 1000:.0f} ms"
            h.latency_ms = None
            if h.state == "down" and breaker is not None:
                breaker.trip()
        except Exception as e:
            h.timeouts = 0
            if overloaded(e):  # it refused the probe because its queue is full: alive, busy
                h.state, h.detail, h.latency_ms = "busy", f"refused for overload: {str(e)[:200]}", None
            else:
                h.state, h.detail, h.latency_ms = "down", f"probe failed: {type(e).__name__}: {str(e)[:200]}", None
                if breaker is not None:
                    breaker.trip()
        else:
            h.timeouts = 0
            h.latency_ms = round(1000 * (time.perf_counter() - started), 2)
            slow = h.latency_ms > 1000 * self.busy_s
            h.state = "busy" if slow or isinstance(answer, Busy) else "ok"
            h.detail = f"answered in {h.latency_ms:.0f} ms" + (" (slow)" if slow else "")
            if isinstance(answer, Busy):
                h.detail += f"; {answer}"
            if breaker is not None:
                breaker.success()
        h.at = self.clock()

    def state(self, name: str) -> StageState:
        return self.health[name].state if name in self.health else "unknown"

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        return {
            name: {
                "state": h.state,
                "detail": h.detail,
                "latency_ms": h.latency_ms,
                "probed_ms_ago": None if h.at is None else round(1000 * (now - h.at), 1),
                "breaker": self.breakers[name].state if name in self.breakers else None,
            }
            for name, h in self.health.items()
        }

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
