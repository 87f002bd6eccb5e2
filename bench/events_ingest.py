"""Events ingest through HTTP into the online database, and freshness of live answers.

    .venv/bin/python bench/events_ingest.py --database sqlite --duration 30
    .venv/bin/python bench/events_ingest.py --database postgres --duration 30 --kill-after 10

Starts the ingress's HTTP app (serve.ingress, the real routes, auth, validation and
serve.live over a real database) under uvicorn in a subprocess on 127.0.0.1, around a synthetic
catalog and the in-process retriever/ranker stand-ins of serve.testing (events ingest never
calls them; the freshness check measures the ingress's database path, not model compute).
Ray Serve's proxy is not in the path. PostgreSQL is started as the tests start it
(core.store.pgserver, fsync on).

Clients (`--clients` threads, keep-alive connections) send batches of 100 events with unique
idempotency keys for `--duration` seconds and retry a batch until it is acknowledged; with
`--kill-after S` the server is killed (SIGKILL) after S seconds and restarted, and the clients
retry their unacknowledged batches. At the end rows in the database must equal the events
acknowledged (stored, or duplicate of a batch that committed before a kill cut its answer):
0 lost, 0 doubled. Then freshness: (1) event acknowledged -> the
user's next recommendation changed; (2) a product deleted through one server -> gone from the
recommendations of a second server (another replica: the online.poll_ms path).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOKEN = "sgk_bench_events_and_catalog"
N_PRODUCTS, N_CATEGORIES = 2000, 20


def _catalog():
    import numpy as np

    from serve.catalog import Catalog, Product

    products = {}
    for i in range(N_PRODUCTS):
        pid = f"p{i}"
        category = f"Dept {i % N_CATEGORIES} > Shelf"
        products[pid] = Product(pid, f"Item {i}", category, f"Brand {i % 7}", 5.0 + i % 50, {}, None, True, i)
    users = {f"u{n}": np.asarray([n % N_PRODUCTS], np.int64) for n in range(200)}
    catalog = Catalog(products, {i: f"p{i}" for i in range(N_PRODUCTS)}, users, {}, list(products), "bench", "USD")
    catalog.user_history_ts = {u: np.asarray([1_704_067_200_000], np.int64) for u in users}
    return catalog


def serve_main(port: int, url: str) -> None:
    """The server process: one ingress replica's HTTP app on 127.0.0.1:port."""
    from types import SimpleNamespace

    import uvicorn
    from ray import serve as ray_serve

    from core.config.online import OnlineConfig
    from core.config.serve import ServeConfig
    from core.store import Store, make_engine, upgrade
    from core.store.keys import KeyRing, token_hash
    from serve.ingress import Ingress
    from serve.live import LiveState
    from serve.testing import fake_ranker, fake_retriever, privacy_for_tests

    engine = make_engine(url)
    upgrade(engine)
    online = OnlineConfig(api_keys=[{"name": "bench", "sha256": token_hash(TOKEN), "scopes": ["admin"]}])
    live = LiveState(Store(engine), KeyRing.from_config(online), online, ["view", "click", "cart", "purchase"])
    catalog = _catalog()
    cls = next(c for c in Ingress.func_or_class.__mro__[1:] if c.__name__ == "Ingress")
    ingress = object.__new__(cls)
    pz, tombstones, privacy = privacy_for_tests()  # users pseudonymized at the edge, as in production
    ingress._setup(
        ServeConfig(), catalog, fake_retriever(catalog), fake_ranker(catalog), None, "bench", live=live,
        pseudonymizer=pz, tombstones=tombstones, privacy=privacy,
    )  # fmt: skip
    ray_serve.get_replica_context = lambda: SimpleNamespace(servable_object=ingress)  # what a Serve replica provides
    uvicorn.run(ingress.http_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--database-url", url],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on port {port} did not start")


def _post(conn: HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def ingest(port: int, args, restart) -> dict:
    stop_at = time.monotonic() + args.duration
    lat: list[float] = []
    counts = {"acked_stored": 0, "acked_duplicates": 0, "batches": 0, "retries": 0, "errors": {}}
    lock = threading.Lock()

    def client(c: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        interval = args.clients * args.batch / args.rate if args.rate else 0.0
        next_at = time.monotonic() + c * interval / args.clients
        while time.monotonic() < stop_at:
            if interval:  # paced: one batch per interval per client (late ones go at once)
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            batch = {
                "events": [
                    {
                        "event": "view",
                        "user_id": f"u{(c * 7919 + n * 100 + j) % 5000}",
                        "product_id": f"p{(n * 100 + j) % N_PRODUCTS}",
                        "idempotency_key": f"c{c}-b{n}-e{j}",
                    }
                    for j in range(args.batch)
                ]
            }
            while True:  # until acknowledged: a retry after a lost answer is deduplicated by key
                started = time.perf_counter()
                try:
                    status, body = _post(conn, "POST", "/v1/events", batch)
                except OSError as e:
                    status, body = None, {"error": type(e).__name__}
                if status == 200:
                    with lock:
                        lat.append(1000 * (time.perf_counter() - started))
                        counts["acked_stored"] += body["stored"]
                        counts["acked_duplicates"] += body["duplicates"]
                        counts["batches"] += 1
                    break
                with lock:
                    counts["retries"] += 1
                    key = str(status or body.get("error"))
                    counts["errors"][key] = counts["errors"].get(key, 0) + 1
                conn.close()
                time.sleep(0.05)
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
            n += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    if args.kill_after:
        time.sleep(args.kill_after)
        restart()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    acknowledged = counts["batches"] * args.batch  # distinct events (unique keys), each acknowledged once
    return {
        "seconds": round(seconds, 2),
        "events_acknowledged": acknowledged,
        "events_per_s": round(acknowledged / seconds, 1),
        "batch_ms_p50": round(_pct(lat, 0.5), 2),
        "batch_ms_p99": round(_pct(lat, 0.99), 2),
        **counts,
    }


def freshness(port_a: int, port_b: int, trials: int) -> dict:
    """Event acknowledged -> next recommendation changed; delete on A -> gone on B."""
    a, b = HTTPConnection("127.0.0.1", port_a, timeout=10), HTTPConnection("127.0.0.1", port_b, timeout=10)
    event_ms, delete_ms = [], []
    for t in range(trials):
        user = f"fresh{t}"  # no events yet: a cold start, then the category of what they just viewed
        before = _post(a, "POST", "/v1/recommendations", {"user_id": user, "k": 5, "with_reasons": False})[1]
        target = f"p{(t * 37 + 5) % N_PRODUCTS}"
        body = {"events": [{"event": "view", "user_id": user, "product_id": target, "idempotency_key": f"f{t}"}]}
        status, _ = _post(a, "POST", "/v1/events", body)
        acked = time.perf_counter()
        assert status == 200
        while True:
            r = _post(a, "POST", "/v1/recommendations", {"user_id": user, "k": 5, "with_reasons": False})[1]
            if [i["product_id"] for i in r["items"]] != [i["product_id"] for i in before["items"]]:
                event_ms.append(1000 * (time.perf_counter() - acked))
                break
        victim = r["items"][0]["product_id"]  # recommended on B too (same data): delete it through A
        status, _ = _post(a, "DELETE", f"/v1/products/{victim}")
        deleted = time.perf_counter()
        assert status == 200
        while True:
            r = _post(b, "POST", "/v1/recommendations", {"user_id": user, "k": 5, "with_reasons": False})[1]
            if victim not in [i["product_id"] for i in r["items"]]:
                delete_ms.append(1000 * (time.perf_counter() - deleted))
                break
            time.sleep(0.005)
    return {
        "event_to_changed_recommendation_ms": {"p50": round(_pct(event_ms, 0.5), 2), "max": round(max(event_ms), 2)},
        "delete_to_gone_on_other_replica_ms": {"p50": round(_pct(delete_ms, 0.5), 2), "max": round(max(delete_ms), 2)},
        "trials": trials,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of sustained ingest")
    p.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    p.add_argument("--batch", type=int, default=100, help="events per POST")
    p.add_argument(
        "--rate", type=float, default=0.0, help="offered events/s over all clients; 0 = as fast as acknowledged"
    )
    p.add_argument("--kill-after", type=float, default=0.0, help="kill and restart the server after this many s")
    p.add_argument("--fresh-trials", type=int, default=20)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--database-url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve_main(args.port, args.database_url)
        return

    from core.store import Store, make_engine
    from core.store.pgserver import local_postgres

    with contextlib.ExitStack() as stack:
        if args.database == "postgres":
            url = stack.enter_context(local_postgres(fsync=True))
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/shop.db"
        port_a, port_b = _free_port(), _free_port()
        servers = {"a": _start(port_a, url)}

        def stop(proc: subprocess.Popen) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

        def restart() -> None:
            stop(servers["a"])
            servers["a"] = _start(port_a, url)

        try:
            result = {
                "database": args.database,
                "batch": args.batch,
                "clients": args.clients,
                "offered_rate": args.rate,
            }
            result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
            result["ingest"] = ingest(port_a, args, restart)
            engine = make_engine(url)
            rows = Store(engine).count_events()
            engine.dispose()
            result["ingest"]["rows_in_db"] = rows
            # A batch committed just before a kill is acknowledged on retry as duplicates: rows must
            # equal the distinct events acknowledged (stored + duplicates), never more or fewer.
            result["ingest"]["lost_or_doubled"] = rows - result["ingest"]["events_acknowledged"]
            result["ingest"]["killed_and_restarted"] = bool(args.kill_after)
            result["load_average_after_ingest"] = [round(x, 2) for x in os.getloadavg()]
            servers["b"] = _start(port_b, url)
            result["freshness"] = freshness(port_a, port_b, args.fresh_trials)
            result["targets"] = {
                "events_per_s>=2000": result["ingest"]["events_per_s"] >= 2000,
                "batch_p99_ms<=100": result["ingest"]["batch_ms_p99"] <= 100,
                "zero_lost": result["ingest"]["lost_or_doubled"] == 0,
                "freshness_ms<=1000": result["freshness"]["event_to_changed_recommendation_ms"]["max"] <= 1000
                and result["freshness"]["delete_to_gone_on_other_replica_ms"]["max"] <= 1000,
            }
        finally:
            for proc in servers.values():
                stop(proc)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
