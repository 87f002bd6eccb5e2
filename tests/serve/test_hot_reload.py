"""The running Serve app (local Ray, real SASRec, FAISS, ranker, embedded SQLite) picks up catalog
writes and a refreshed text index without a restart: a product added by PUT is answered by text
once `data refresh` (the real job, over the app's own database) has embedded and indexed it, no request fails while the index is swapped, a corrupted index
directory leaves the old one serving, and a deleted product leaves every deployment's answers.

    pytest -q tests/serve/test_hot_reload.py

The tests run in file order on one app (each builds on the product the first one added).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow
PORT = 8125
BASE = f"http://127.0.0.1:{PORT}"
APP = "hotreload"
KEY = "sgk_hot_reload_test_key"
NEW = "hot-new-1"
POLL_MS = 50
RELOAD_MS = 100


@pytest.fixture(scope="module")
def app(serving_artifacts, tmp_path_factory):
    import ray
    from ray import serve

    from core.config import load_config
    from serve.app import build_app
    from serve.catalog import load_catalog

    # A copy: this module rewrites the index and embeddings, the session's root stays as built.
    source = next(o.split("=", 1)[1] for o in serving_artifacts if o.startswith("artifacts.root="))
    root = tmp_path_factory.mktemp("hot-reload") / "artifacts"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("online"))
    overrides = [
        *(o for o in serving_artifacts if not o.startswith("artifacts.root=")),
        f"artifacts.root={root}",
        f"online.api_keys=[{{name: tests, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}, scopes: [admin]}}]",
        f"online.poll_ms={POLL_MS}",
        f"serve.reload_poll_ms={RELOAD_MS}",
        "serve.deployments.ingress.num_cpus=0.05",
        "serve.deployments.retriever.num_cpus=0.05",
        "serve.deployments.ranker.num_cpus=0.05",
        "serve.budgets.retrieval_ms=20000",  # a busy 2-CPU box must not turn a slow call into a "failure"
        "serve.budgets.ranking_ms=20000",
        "serve.health.probe_timeout_ms=10000",  # nor a slow probe into a stage marked down
    ]
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"overrides": overrides, "engine": "none"}), name=APP, route_prefix="/")
    cfg = load_config(overrides=overrides)
    catalog = load_catalog(cfg)
    anchor = next(p for p in catalog.popular if catalog.products[p].in_stock)
    yield SimpleNamespace(cfg=cfg, catalog=catalog, anchor=anchor)
    serve.shutdown()
    ray.shutdown()
    if _LOOP:  # stop the handles' loop and its thread: a thread left running into the interpreter's exit can crash it
        loop, thread = _LOOP.pop(), _THREAD.pop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(scope="module")
def client(app):
    with httpx.Client(base_url=BASE, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


_LOOP: list = []  # one event loop for every handle call of this module, in its own thread
_THREAD: list = []


def _call(deployment: str, method: str, *args):
    """One call through a deployment handle. The product's Serve settings run a handle's router
    on the caller's event loop (tests/conftest.py), and the router stays bound to the first loop
    it ran on: every call goes through one loop, kept running in a thread."""
    import asyncio

    from ray import serve

    if not _LOOP:
        _LOOP.append(asyncio.new_event_loop())
        _THREAD.append(threading.Thread(target=_LOOP[0].run_forever, daemon=True))
        _THREAD[0].start()

    async def call():
        return await getattr(serve.get_deployment_handle(deployment, app_name=APP), method).remote(*args)

    return asyncio.run_coroutine_threadsafe(call(), _LOOP[0]).result(timeout=60)


def _status() -> dict:
    return _call("Retriever", "reload_status")


def _recs(client, anchor: str) -> list[str]:
    """An anonymous session that just viewed `anchor`: new items close to it in text may show."""
    r = client.post("/v1/recommendations", json={"recent_items": [anchor], "k": 10, "with_reasons": False})
    assert r.status_code == 200, r.text
    return [i["product_id"] for i in r.json()["items"]]


def _rewrite_text_index(cfg, extra: list[dict], corrupt: bool = False) -> None:
    """What the refresh commits: the embeddings with the new products' vectors, then the index,
    each with data.embed's and data.index's own writers. `corrupt`: the index directory is
    committed with a file that does not match its manifest (a torn copy)."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from core.layout import ArtifactLayout
    from core.manifest import read_manifest, staged_dir, write_manifest
    from core.runtime import local_dir
    from data.embed import embeddings_schema, product_text, write_embeddings
    from data.index import build_from_embeddings, build_index
    from ml.encoder import TextEncoder, resolve_encoder_dir
    from ml.index import IDS_FILE, INDEX_FILE, check_vectors, load_embeddings, vectors_of

    layout = ArtifactLayout(cfg.artifacts.root)
    table, meta = load_embeddings(layout)
    if extra:
        encoder = TextEncoder(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder))
        vectors = encoder.encode([product_text(p) for p in extra]).astype(np.float32)
        added = pa.table(
            {
                "product_id": [p["product_id"] for p in extra],
                "item_idx": pa.nulls(len(extra), pa.int64()),  # new: not in the recommender's vocabulary
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            },
            schema=embeddings_schema(vectors.shape[1]),
        )
        table = pa.concat_tables([table.cast(added.schema), added])
        write_embeddings(
            layout, ray.data.from_arrow(table), {k: v for k, v in meta.items() if k not in ("count", "dim")}
        )
    final = local_dir(layout.index)
    if not corrupt:
        build_from_embeddings(cfg.data.index, table, final, dim=meta["dim"], seed=cfg.data.seed)
        return
    index, _ = build_index(cfg.data.index, check_vectors(vectors_of(table)), seed=cfg.data.seed)
    with staged_dir(final) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        pq.write_table(table.select(["product_id"]), staging / IDS_FILE)
        write_manifest(staging, {**read_manifest(final)["meta"]})
        with open(staging / INDEX_FILE, "ab") as f:
            f.write(b"torn")  # after the manifest: sizes no longer match


def _stage_errors(client) -> dict[tuple[str, str], float]:
    """Retriever and ranker calls that raised, by stage and exception, from /metrics. Calls the
    ingress gave up on because the busy box made them slow (`timeout`, `down`) are not errors."""
    import re

    pattern = r'shopgraph_fallbacks_total\{stage="(retriever|ranker)",why="([^"]+)"\} ([0-9.e+]+)'
    found = re.findall(pattern, client.get("/metrics").text)
    return {(stage, why): float(n) for stage, why, n in found if why not in ("timeout", "down")}


def _wait(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_new_product_is_answered_by_text_after_the_refresh_and_no_request_fails(app, client):
    anchor = app.catalog.products[app.anchor]
    facts = {k: v for k, v in anchor.as_record().items() if k not in ("product_id", "in_stock", "description")}
    r = client.put(f"/v1/products/{NEW}", json={**facts, "stock": 5})
    assert r.status_code == 200, r.text
    assert NEW not in _recs(client, app.anchor)  # in the catalog, not yet embedded: no text path to it
    before = _status()["text index"]["reloads"]

    failures, answered, stop = [], [0], threading.Event()

    def load() -> None:  # a steady stream of requests across the swap
        with httpx.Client(base_url=BASE, timeout=30) as c:
            while not stop.is_set():
                try:
                    got = c.post("/v1/recommendations", json={"recent_items": [app.anchor], "k": 10})
                    if got.status_code != 200:
                        failures.append((got.status_code, got.text[:200]))
                    answered[0] += 1
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    errors_before = _stage_errors(client)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        # The real job: `data refresh` reads the PUT row from the online database, embeds it and
        # adds it to the committed index in place; the running replicas pick both up.
        from data.refresh import run as refresh

        summary = refresh(app.cfg)
        assert summary["changed"] >= 1 and summary.get("embedded", 0) >= 1, summary
        assert _wait(lambda: _status()["text index"]["reloads"] > before), _status()
        time.sleep(0.5)  # and a little after the swap
    finally:
        stop.set()
        worker.join(timeout=60)
    assert NEW in _recs(client, app.anchor)  # reachable by text, without a restart
    status = _status()
    assert status["text index"]["failures"] == 0 and status["text_index_rows"] >= len(app.catalog.products) + 1
    assert answered[0] >= 5 and failures == [], failures[:3]
    assert _stage_errors(client) == errors_before  # and no stage call raised (it would degrade, not fail)
    print(f"\nswap under load: {answered[0]} requests, 0 failed; load took {status['text index']['last_reload_s']} s")


def test_a_corrupted_index_directory_leaves_the_old_one_serving(app, client):
    before = _status()["text index"]
    _rewrite_text_index(app.cfg, [], corrupt=True)
    assert _wait(lambda: _status()["text index"]["failures"] > before["failures"])
    status = _status()["text index"]
    assert status["reloads"] == before["reloads"] and status["failures"] == before["failures"] + 1
    assert "index.faiss" in status["last_error"] and "manifest" in status["last_error"]
    assert NEW in _recs(client, app.anchor)  # the old index (with the new product) still answers
    _rewrite_text_index(app.cfg, [])  # the next good commit is picked up
    assert _wait(lambda: _status()["text index"]["reloads"] > before["reloads"])
    assert NEW in _recs(client, app.anchor)


def test_a_deleted_product_leaves_every_deployments_answers_within_a_poll(app, client):
    from serve.deployments import RankFilters, RankRequest, RetrieveRequest
    from serve.recommend import Candidates

    anchor_idx = app.catalog.item_idx(app.anchor)

    def retrieved() -> set[str]:
        got = _call("Retriever", "retrieve", RetrieveRequest(recent_items=[app.anchor], n=50))
        return {pid for pid, _, _ in got.candidates.new_items}

    def ranked() -> list[str]:
        """The ranker on its own (no exclusions from the ingress): a trained item and the new one."""
        trained = next(i for i in sorted(app.catalog.by_item_idx) if i != anchor_idx)
        cands = Candidates(np.asarray([trained], np.int64), np.asarray([1.0], np.float32), [(NEW, 0.99, app.anchor)])
        req = RankRequest(history=np.asarray([anchor_idx], np.int64), candidates=cands, k=5, filters=RankFilters())
        return [s.product_id for s in _call("Ranker", "rank", req)]

    assert NEW in retrieved() and NEW in ranked()
    old = app.catalog.by_item_idx[next(i for i in sorted(app.catalog.by_item_idx) if i != anchor_idx)]
    assert old in ranked()
    assert client.delete(f"/v1/products/{NEW}").status_code == 200
    assert client.delete(f"/v1/products/{old}").status_code == 200
    time.sleep(4 * POLL_MS / 1000)  # a poll of each replica, with room for a busy box
    assert NEW not in retrieved()
    assert NEW not in ranked() and old not in ranked()
    assert NEW not in _recs(client, app.anchor)
