"""What each answer showed, into the online database for online evaluation, off the request path;
and the shopgraph_online_* gauges of /metrics, recomputed in the background.

    log = ServedLog(store, cfg.online.served_log, on_outcome)   # in the ingress replica
    log.record(rows)            # in the route: appends to memory, never waits, never raises
    log.start()                 # the background writer on the replica's loop (idempotent)
    log.close()                 # replica shutdown: stop, write what is still waiting

A request never waits on the database for this: rows go to a bounded queue that a background task
writes every `online.served_log.flush_ms` (sooner once `batch_rows` wait), one transaction per
batch. A full queue drops the new answer's rows (whole answers only) and a failed write drops its
batch; both are counted (`on_outcome("dropped" | "failed", rows)`), never silent, and neither
touches the request that produced the rows. `close` (the ingress's `__del__`, which Serve calls at
graceful shutdown) writes what is left.

`OnlineGauges` sets the gauges every `metrics_refresh_s`, in the background, from
`core.store.evaluation.online_report` over the last `online.evaluation.metrics_window`; a scrape
only reads them. The report is computed once per refresh for all the ingress replicas that share
the online database (`core.store.evaluation.shared_report`: one replica takes a lease and stores
the result, the others read it), not once per replica. Every replica shows the same
database-wide numbers: aggregate them with max(), not sum().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from core.runtime import background_executor

log = logging.getLogger("shopgraph.serve")


class ServedLog:
    def __init__(self, store, cfg, on_outcome: Callable[[str, int], None]):
        self.store, self.cfg, self.on_outcome = store, cfg, on_outcome
        self.rows: deque[dict[str, Any]] = deque()
        self.closed = False
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def record(self, rows: list[dict[str, Any]]) -> bool:
        """Queue one answer's rows; False (and counted as dropped) when they do not all fit or the
        log is closed: an answer is recorded whole or not at all."""
        if not rows:
            return True
        if self.closed or len(self.rows) + len(rows) > self.cfg.queue_rows:
            self.on_outcome("dropped", len(rows))
            return False
        self.rows.extend(rows)
        if len(self.rows) >= self.cfg.batch_rows and self._wake is not None:
            self._wake.set()
        return True

    def start(self) -> None:
        """Start the background writer on the running loop (idempotent; restarts one that died or
        whose loop is not this one)."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.flush_ms / 1000)
            self._wake.clear()
            try:
                await asyncio.to_thread(self.write_pending)
            except Exception:  # a bug here must not stop the writer
                log.exception("served log: writing failed")

    def _batch(self) -> list[dict[str, Any]]:
        batch = []
        with contextlib.suppress(IndexError):  # deque.popleft is atomic: a concurrent writer gets the rest
            while len(batch) < self.cfg.batch_rows:
                batch.append(self.rows.popleft())
        return batch

    def write_pending(self) -> int:
        """Write every waiting row, batch by batch, in the calling thread; returns the rows written.
        A batch whose transaction fails is dropped and counted, and the next one is tried."""
        written = 0
        while batch := self._batch():
            try:
                self.store.add_served(batch)
            except Exception as e:
                self.on_outcome("failed", len(batch))
                log.warning("served log: a batch of %d rows was not written (%s: %s)", len(batch), type(e).__name__, e)
                continue
            written += len(batch)
            self.on_outcome("written", len(batch))
        return written

    def close(self) -> int:
        """Stop the writer and write what is waiting (in the calling thread); later rows are dropped
        and counted. Idempotent."""
        if self.closed:
            return 0
        self.closed = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._task.get_loop().call_soon_threadsafe(self._task.cancel)
        return self.write_pending()


class OnlineGauges:
    """The shopgraph_online_* gauges, recomputed every `cfg.metrics_refresh_s` in the background."""

    LABELS = ("recommender_version", "generator_version", "reason_source")

    def __init__(self, engine, cfg, registry):
        from prometheus_client import Counter, Gauge

        from core.values import as_duration_ms

        self.engine, self.cfg = engine, cfg
        self.window_ms = as_duration_ms(cfg.metrics_window, "online.evaluation.metrics_window")
        self.attribution_ms = as_duration_ms(cfg.attribution_window, "online.evaluation.attribution_window")
        what = f"over items served in the last online.evaluation.metrics_window ({cfg.metrics_window})"
        self.counts = {
            name: Gauge(f"shopgraph_online_{name}", f"{doc} {what}", self.LABELS, registry=registry)
            for name, doc in (
                ("served", "Items served"),
                ("impressions", "Served items with an impression event"),
                ("clicks", "Impressed items clicked (attributed by request_id, else user+product in the attribution window)"),
                ("purchases", "Impressed items purchased (attributed as clicks)"),
            )
        }  # fmt: skip
        self.rates = {
            name: Gauge(f"shopgraph_online_{name}", f"{doc} {what}", self.LABELS, registry=registry)
            for name, doc in (("ctr", "Clicks / impressions"), ("conversion", "Purchases / impressions"))
        }
        self.unattributed = Gauge(
            "shopgraph_online_unattributed_events",
            f"Events no served item takes, by type and whether they carried a request_id, {what}",
            ["event", "with_request_id"],
            registry=registry,
        )
        self.updated = Gauge(
            "shopgraph_online_report_timestamp_seconds",
            "When the report behind the shopgraph_online_* gauges was computed (by this replica or another)",
            registry=registry,
        )
        self.failures = Counter(
            "shopgraph_online_report_failures_total", "Online evaluation refreshes that failed", registry=registry
        )
        self.refreshes = 0  # reports applied to the gauges
        self.computed = 0  # of those, computed by this replica (the others were another's)
        self.key = f"online:{self.window_ms}:{self.attribution_ms}"  # replicas with other settings share nothing
        self.owner = uuid.uuid4().hex
        self._task: asyncio.Task | None = None
        self._executor = background_executor("online-report")

    def start(self) -> None:
        if self.cfg.metrics_refresh_s <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started, computed = time.monotonic(), self.computed
            await self.refresh()
            took = time.monotonic() - started if self.computed > computed else 0.0
            # A day of served rows grows with the shop: the report never takes more than a tenth
            # of the time (one core at most 10% busy with it), however long one refresh runs.
            await asyncio.sleep(max(self.cfg.metrics_refresh_s, 9 * took))

    def _shared(self, now: int):
        from core.store.evaluation import online_report, shared_report

        refresh_ms = int(self.cfg.metrics_refresh_s * 1000)
        return shared_report(
            self.engine,
            self.key,
            self.owner,
            now,
            # a little under the refresh: the replica that computed it recomputes on its next
            # refresh, another one that asks in between takes the stored report
            fresh_ms=int(0.9 * refresh_ms),
            # a replica that dies while computing holds the report back this long at most
            lease_ms=max(10 * 60_000, 2 * refresh_ms),
            compute=lambda: online_report(self.engine, now - self.window_ms, now + 1, self.attribution_ms),
        )

    async def refresh(self) -> dict[str, Any] | None:
        now = int(time.time() * 1000)
        try:
            # Seconds of CPU over a day of served rows (2.6 s at 860,000 on SQLite): in a thread
            # at the lowest priority, or every refresh was a latency spike for the requests.
            shared = await asyncio.get_running_loop().run_in_executor(self._executor, self._shared, now)
        except Exception as e:
            self.failures.inc()
            log.warning(
                "online evaluation refresh failed (%s: %s); the gauges keep their last values", type(e).__name__, e
            )
            return None
        if shared.report is None:  # another replica is computing the first one
            return None
        self.computed += shared.computed_here
        self.apply(shared.report, shared.computed_at / 1000)
        return shared.report

    def apply(self, report: dict[str, Any], computed_at: float | None = None) -> None:
        """Set every gauge from `report` at once (no await in here: a scrape sees the old set or the
        new one); groups that are gone from the window disappear, rates without impressions are absent."""
        for gauge in (*self.counts.values(), *self.rates.values(), self.unattributed):
            gauge.clear()
        for g in report["groups"]:
            labels = [str(g[k]) for k in self.LABELS]
            for name, gauge in self.counts.items():
                gauge.labels(*labels).set(g[name])
            for name, gauge in self.rates.items():
                if g[name] is not None:
                    gauge.labels(*labels).set(g[name])
        for kind, by_event in report["unattributed"].items():
            for event, n in by_event.items():
                self.unattributed.labels(event, "true" if kind == "with_request_id" else "false").set(n)
        self.updated.set(time.time() if computed_at is None else computed_at)
        self.refreshes += 1

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):
                self._task.get_loop().call_soon_threadsafe(self._task.cancel)
        self._executor.shutdown(wait=False, cancel_futures=True)
