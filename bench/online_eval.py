"""Online evaluation: what recording served items costs a request, how fast they are written, how
long the report takes.

    .venv/bin/python bench/online_eval.py --database sqlite
    .venv/bin/python bench/online_eval.py --database postgres --answers 10000

1. `record_us`: the request path's cost, `ServedLog.record` of one 10-item answer (memory only).
2. `recommend_ms`: POST /v1/recommendations (the ingress's FastAPI app in-process, stage fakes of
   serve.testing, a real database) with the served log on and off, alternating, p50 / p99.
3. `write_rows_per_s`: `ServedLog.write_pending` of `--answers` answers, batches of
   online.served_log.batch_rows, one transaction each.
4. `report_s` (wall) and `report_cpu_s_this_process` (SQLite runs in-process: its CPU time, which a
   loaded machine does not inflate): `online_report` over those items plus events (every answer impressed, 10% of items
   clicked by request_id, 2% clicked without one, 1% purchased), the one query + the unattributed count.

PostgreSQL is started as the tests start it (core.store.pgserver, fsync on). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

K = 10


def _rows(n_answers: int, now: int) -> list[dict]:
    rows = []
    for a in range(n_answers):
        for pos in range(1, K + 1):
            rows.append(
                dict(
                    request_id=f"r{a}",
                    position=pos,
                    product_id=f"p{(a * 7 + pos) % 2000}",
                    user_key=f"u{a % 500}",
                    surface="recommendations",
                    recommender_version=f"rec{a % 2}",
                    generator_version="gen1",
                    reason_source=("generated", "cached", "template")[pos % 3],
                    degraded=None,
                    ts=now - (n_answers - a) * 100,
                )
            )
    return rows


def _events(rows: list[dict], seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    out = []

    def add(event, row, request_id, dt):
        ts = row["ts"] + dt
        out.append(dict(event=event, user_key=row["user_key"], product_id=row["product_id"], ts=ts, value=None,
                        request_id=request_id, idempotency_key=f"e{len(out)}", received_at=ts, flagged_reason=None))  # fmt: skip

    for row in rows:
        add("impression", row, row["request_id"], 10)
        x = rnd.random()
        if x < 0.10:
            add("click", row, row["request_id"], 2_000)
        elif x < 0.12:
            add("click", row, None, 3_000)
        if x < 0.01:
            add("purchase", row, row["request_id"], 60_000)
    return out


def _record_us(n: int) -> float:
    from core.config.online import ServedLogConfig
    from serve.served import ServedLog

    log = ServedLog(None, ServedLogConfig(queue_rows=10**9), lambda *_: None)
    answer = _rows(1, 0)
    started = time.perf_counter()
    for _ in range(n):
        log.record(answer)
    return round(1e6 * (time.perf_counter() - started) / n, 3)


def _recommend_ms(url: str, n: int) -> dict:
    """p50/p99 of POST /v1/recommendations with the served log on and off (alternating requests)."""
    from fastapi.testclient import TestClient
    from ray import serve as ray_serve

    from core.config.online import OnlineConfig
    from core.config.privacy import PrivacyConfig
    from core.config.serve import ServeConfig
    from core.store import Store, make_engine
    from core.store.keys import KeyRing
    from serve.ingress import Ingress
    from serve.live import LiveState
    from serve.testing import fake_ranker, fake_retriever, privacy_for_tests

    sys.path.insert(0, str(REPO / "bench"))
    from events_ingest import _catalog

    cls = next(c for c in Ingress.func_or_class.__mro__[1:] if c.__name__ == "Ingress")
    engine = make_engine(url)
    ingresses = {}
    for on in (True, False):
        cfg = OnlineConfig(served_log={"enabled": on}, evaluation={"metrics_refresh_s": 0})
        live = LiveState(Store(engine), KeyRing.from_config(cfg), cfg, ["view", "click", "cart", "purchase"])
        catalog = _catalog()
        ingress = object.__new__(cls)
        pz, tombstones, _ = privacy_for_tests()
        ingress._setup(ServeConfig(), catalog, fake_retriever(catalog), fake_ranker(catalog), None, "bench", live=live,
                       pseudonymizer=pz, tombstones=tombstones, privacy=PrivacyConfig())  # fmt: skip
        ingresses[on] = ingress
    times: dict[bool, list[float]] = {True: [], False: []}
    # One FastAPI app (the module's): each route finds its ingress through Serve's replica context.
    with TestClient(ingresses[True].http_app) as client:
        for i in range(n):
            for on in (True, False) if i % 2 else (False, True):
                ray_serve.get_replica_context = lambda i=ingresses[on]: SimpleNamespace(servable_object=i)
                body = {"user_id": f"u{i % 200}", "k": K}
                started = time.perf_counter()
                r = client.post("/v1/recommendations", json=body)
                times[on].append(1000 * (time.perf_counter() - started))
                assert r.status_code == 200, r.text
    written = ingresses[True].served.close()
    engine.dispose()

    def stats(xs: list[float]) -> dict:
        xs = sorted(xs)
        return {"p50": round(statistics.median(xs), 3), "p99": round(xs[int(0.99 * (len(xs) - 1))], 3)}

    return {"requests_each": n, "served_log_on": stats(times[True]), "served_log_off": stats(times[False]),
            "rows_written_at_close": written}  # fmt: skip


def run(url: str, answers: int, requests: int) -> dict:
    from core.config.online import ServedLogConfig
    from core.store import Store, make_engine, upgrade
    from core.store.evaluation import online_report
    from serve.served import ServedLog

    upgrade(url)
    out: dict = {"record_us": _record_us(100_000)}
    engine = make_engine(url)
    store = Store(engine)
    now = int(time.time() * 1000)
    rows = _rows(answers, now)
    log = ServedLog(store, ServedLogConfig(queue_rows=len(rows)), lambda *_: None)
    for a in range(answers):
        log.record(rows[a * K : (a + 1) * K])
    started = time.perf_counter()
    written = log.write_pending()
    seconds = time.perf_counter() - started
    out["write_rows_per_s"] = round(written / seconds)
    out["rows"] = written
    events = _events(rows)
    for i in range(0, len(events), 5000):
        store.add_events(events[i : i + 5000])
    started, cpu = time.perf_counter(), time.process_time()
    report = online_report(engine, now - (answers + 1) * 100, now + 1, 86_400_000)
    out["report_s"] = round(time.perf_counter() - started, 3)
    out["report_cpu_s_this_process"] = round(time.process_time() - cpu, 3)  # SQLite: all of it; PostgreSQL: none
    out["events"] = len(events)
    out["report_overall"] = report["overall"]
    engine.dispose()
    out["recommend_ms"] = _recommend_ms(url, requests)  # last: its rows are not in the report above
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--answers", type=int, default=10_000, help="Answers of 10 items written and evaluated.")
    parser.add_argument("--requests", type=int, default=300, help="Recommendation requests each, log on and off.")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.database == "sqlite":
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory()) + '/shop.db'}"
        else:
            from core.store.pgserver import local_postgres

            url = stack.enter_context(local_postgres())
        result = {"database": args.database, "answers": args.answers, "k": K, **run(url, args.answers, args.requests)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
