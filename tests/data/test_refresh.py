"""Incremental refresh (data.refresh): products written to the online database reach the committed
embeddings and text index without a full rebuild, on SQLite and a real PostgreSQL, with the real
encoder, Ray Data read_sql and FAISS; dead rows never come back from a search; the refreshed index
answers like a full rebuild; malformed inputs stop with a message that says what to run or fix."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.config import load_config
from core.config.data import IndexConfig
from core.layout import ArtifactLayout
from core.manifest import IncompleteDirError, read_manifest, verify_dir, write_manifest
from core.schemas import PRODUCTS
from core.shards import write_shard_set
from data.embed import embeddings_schema
from data.index import build_from_embeddings
from ml.index import IDS_FILE, load_embeddings, load_index, vectors_of

ITEMS = [
    ("Wooden Train Set", "Brio", "Toys > Trains", {"material": "beech wood"}),
    ("Cotton T-Shirt", "Basics", "Clothing > Tops", {"color": "blue"}),
    ("Steel Water Bottle", "Hydra", "Kitchen > Bottles", {"capacity": "750 ml"}),
    ("Wireless Headphones", "Sonic", "Electronics > Audio", {"battery": "30 h"}),
    ("Yoga Mat", "Zen", "Sports > Yoga", {"thickness": "6 mm"}),
    ("Leather Wallet", "Hide", "Accessories > Wallets", {"material": "leather"}),
    ("Espresso Machine", "Barista", "Kitchen > Coffee", {"pressure": "15 bar"}),
    ("Trail Running Shoes", "Stride", "Sports > Running", {"size": "42"}),
    ("Jigsaw Puzzle 1000 Pieces", "Ravens", "Toys > Puzzles", {"pieces": "1000"}),
    ("Desk Lamp", "Lumen", "Home > Lighting", {"bulb": "LED"}),
    ("Hiking Backpack", "Summit", "Outdoor > Bags", {"volume": "40 l"}),
    ("Cast Iron Skillet", "Forge", "Kitchen > Pans", {"diameter": "26 cm"}),
    ("Bluetooth Speaker", "Sonic", "Electronics > Audio", {"power": "20 W"}),
    ("Wool Scarf", "Nordic", "Clothing > Accessories", {"material": "merino wool"}),
    ("Chess Board", "Kings", "Toys > Board Games", {"material": "walnut"}),
    ("Garden Hose", "Verde", "Garden > Watering", {"length": "25 m"}),
]
NEW_TITLE = "Handmade Ceramic Teapot"


def catalog() -> pa.Table:
    rows = [
        {"product_id": f"p{i:02d}", "title": t, "brand": b, "category": c, "price": 10.0 + i,
         "attributes": list(a.items()), "description": None, "in_stock": True, "updated_at": None}
        for i, (t, b, c, a) in enumerate(ITEMS)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=PRODUCTS)


def catalog_facts(pid: str) -> dict:
    """A catalog product as the ingress hands it to the store (`base`) when the database has no row yet."""
    row = next(r for r in catalog().to_pylist() if r["product_id"] == pid)
    return {**row, "attributes": dict(row["attributes"])}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder_models(tmp_path_factory):
    """Only the encoder (the refresh needs no generator), prepared as `shopgraph models prepare` does."""
    from ml.encoder import prepare_encoder

    root = tmp_path_factory.mktemp("models")
    prepare_encoder(root)
    return root


def shop_config(root, models, db_url, *more):
    return load_config(None, [f"artifacts.root={root}", f"models.dir={models}", f"online.database_url={db_url}",
                              "data.embedding.concurrency=1", "data.embedding.batch_size=16", "data.index.type=hnsw",
                              "data.index.recall_sample=0", *more])  # fmt: skip


def build_offline(cfg) -> None:
    """The full pipeline's embed + index stages over the catalog, as `shopgraph data ...` runs them."""
    from data import embed, index

    layout = ArtifactLayout(cfg.artifacts.root)
    write_shard_set(catalog(), layout.products, rows_per_shard=100, row_group_rows=100, meta={"stage": "test"})
    embed.run(cfg)
    index.run(cfg)


def top(cfg, text: str, k: int = 3) -> list[str | None]:
    from ml.encoder import TextEncoder, resolve_encoder_dir

    encoder = TextEncoder(resolve_encoder_dir(cfg.models.dir, cfg.models.encoder))
    loaded = load_index(ArtifactLayout(cfg.artifacts.root).index)
    _, rows = loaded.search(encoder.encode([text]), k)
    return loaded.product_ids(rows)[0]


def test_refresh_follows_the_database(ray_local, encoder_models, db_url, tmp_path, capsys):
    from core.store import Store, make_engine
    from data.refresh import INDEX_ONLY_WATERMARK, run

    cfg = shop_config(tmp_path / "artifacts", encoder_models, db_url)
    build_offline(cfg)
    layout = ArtifactLayout(cfg.artifacts.root)
    store = Store(make_engine(db_url))
    index_files = read_manifest(layout.index)["files"]

    # nothing written yet: no work, nothing rewritten
    quiet = run(cfg)
    assert quiet["changed"] == 0 and quiet["embedded"] == 0 and "no change since" in quiet["message"]
    assert "no change since" in capsys.readouterr().err
    assert read_manifest(layout.index)["files"] == index_files

    # a new product: embedded once, appended, findable by its text
    store.put_product({"product_id": "n1", "title": NEW_TITLE, "brand": "Kiln", "category": "Kitchen > Tea",
                       "price": 30.0, "attributes": {"material": "stoneware", "color": ["white", "blue"]}})  # fmt: skip
    added = run(cfg)
    assert (added["embedded"], added["added"], added["removed"], added["dead_rows"]) == (1, 1, 0, 0)
    assert top(cfg, "ceramic teapot for tea")[0] == "n1"
    emb, _ = load_embeddings(layout)
    assert "n1" in emb["product_id"].to_pylist() and emb.num_rows == len(ITEMS) + 1
    mark = store.get_watermark(INDEX_ONLY_WATERMARK)["products_updated_at"]
    assert mark == store.get_product("n1")["updated_at"]

    # a changed title: a new vector, the old row dead and never returned
    old_vec = dict(zip(emb["product_id"].to_pylist(), emb["vector"].to_pylist()))["p02"]
    store.put_product({"product_id": "p02", "title": "Cashmere Winter Coat", "brand": "Basics",
                       "category": "Clothing > Coats", "price": 11.0, "attributes": {"color": "blue"}})  # fmt: skip
    changed = run(cfg)
    assert (changed["embedded"], changed["added"], changed["removed"], changed["dead_rows"]) == (1, 1, 1, 1)
    loaded = load_index(layout.index)
    assert loaded.ids["product_id"].to_pylist().count("p02") == 1 and loaded.dead_rows == 1
    assert loaded.meta["dead_rows"] == 1 and loaded.meta["count"] == len(ITEMS) + 2
    assert top(cfg, "cashmere winter coat")[0] == "p02"
    assert None not in top(cfg, "cotton t-shirt", k=len(ITEMS) + 1)  # every live row, no dead one
    emb, _ = load_embeddings(layout)
    new_vec = dict(zip(emb["product_id"].to_pylist(), emb["vector"].to_pylist()))["p02"]
    assert float(np.dot(old_vec, new_vec)) < 0.9

    # price and stock only: nothing re-embedded, nothing rewritten
    assert store.patch_product("p03", {"price": 99.0, "stock": 0, "in_stock": False}, catalog_facts("p03"))
    files = read_manifest(layout.index)["files"]
    priced = run(cfg)
    assert priced["embedded"] == 0 and priced["changed"] == 0 and priced["read"] >= 1, priced
    assert read_manifest(layout.index)["files"] == files

    # a deletion: gone from search and from the embeddings
    assert store.delete_product("p05", catalog_facts("p05"))
    deleted = run(cfg)
    assert (deleted["embedded"], deleted["removed"], deleted["deleted"]) == (0, 1, 1)
    assert "p05" not in top(cfg, "leather wallet", k=len(ITEMS))
    emb, _ = load_embeddings(layout)
    assert "p05" not in emb["product_id"].to_pylist()
    verify_dir(layout.embeddings, full=True)
    verify_dir(layout.index, full=True)

    # and again: the overlap re-reads the last writes, and they are no-ops
    again = run(cfg)
    assert again["changed"] == 0 and again["read"] >= 1


def test_refreshed_index_answers_like_a_full_rebuild(tmp_path):
    """1% of a catalog changed, a few deleted and added: the refreshed index (appended, rows marked
    dead) against a full rebuild over the same embeddings, for every index type."""
    from data.refresh import refreshed_embeddings, update_index

    rng = np.random.default_rng(0)
    n, dim = 3000, 32
    centers = rng.normal(size=(30, dim))

    def vectors(m):
        x = centers[rng.integers(0, 30, m)] + 0.4 * rng.normal(size=(m, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def table(pids, vecs):
        return pa.table({"product_id": pids, "item_idx": pa.nulls(len(pids), pa.int64()),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
                         "text_sha256": pa.nulls(len(pids), pa.string())}, schema=embeddings_schema(dim))  # fmt: skip

    base = table([f"p{i:05d}" for i in range(n)], vectors(n))
    changed = [f"p{i:05d}" for i in rng.choice(n, 30, replace=False)]
    deleted = {f"p{i:05d}" for i in rng.choice(n, 10, replace=False)} - set(changed)
    new = table(changed + [f"n{i}" for i in range(20)], vectors(50))
    refreshed = refreshed_embeddings(base, deleted, new, dim)
    assert refreshed.num_rows == n - len(deleted) + 20
    queries = vectors(300)
    exact = refreshed["product_id"].to_pylist()
    truth_scores = queries @ vectors_of(refreshed).T
    truth = [{exact[j] for j in np.argsort(-s)[:10]} for s in truth_scores]
    configs = {"flat": IndexConfig(type="flat", recall_sample=0),
               "ivf": IndexConfig(type="ivf", nlist=32, nprobe=8, recall_sample=0),
               "hnsw": IndexConfig(type="hnsw", hnsw_m=16, ef_construction=64, ef_search=64, recall_sample=0)}  # fmt: skip
    for kind, cfg in configs.items():
        build_from_embeddings(cfg, base, tmp_path / kind, dim=dim)
        loaded = load_index(tmp_path / kind)
        index, ids, marked = update_index(loaded, deleted, new)
        assert marked == len(deleted) + len(changed) and index.ntotal == n + 50
        in_place = type(loaded)(index=index, ids=ids, meta={**loaded.meta, "dead_rows": marked})
        rebuilt = build_from_embeddings(cfg, refreshed, tmp_path / f"{kind}-full", dim=dim)

        def recall(idx):
            _, rows = idx.search(queries, 10)
            got = idx.product_ids(rows)
            assert all(None not in g and len(set(g)) == 10 for g in got), kind  # k live rows, none dead
            assert not any(set(g) & deleted for g in got)
            return np.mean([len(set(g) & t) / 10 for g, t in zip(got, truth, strict=True)])

        r_in_place, r_full = recall(in_place), recall(rebuilt)
        assert r_in_place >= r_full - 0.01, (kind, r_in_place, r_full)
        if kind == "flat":
            assert r_in_place == 1.0


def test_a_search_asking_for_more_than_the_live_rows_pads_with_minus_one(tmp_path):
    from data.refresh import update_index

    vecs = np.eye(8, dtype=np.float32)
    base = pa.table({"product_id": [f"p{i}" for i in range(8)], "item_idx": pa.nulls(8, pa.int64()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 8),
                     "text_sha256": pa.nulls(8, pa.string())}, schema=embeddings_schema(8))  # fmt: skip
    build_from_embeddings(IndexConfig(type="flat", recall_sample=0), base, tmp_path / "i", dim=8)
    loaded = load_index(tmp_path / "i")
    index, ids, marked = update_index(loaded, {f"p{i}" for i in range(6)}, base.slice(0, 0))
    in_place = type(loaded)(index=index, ids=ids, meta={**loaded.meta, "dead_rows": marked})
    _, rows = in_place.search(vecs[:1], 5)
    assert sorted(p for p in in_place.product_ids(rows)[0] if p) == ["p6", "p7"]
    assert (rows[0] == -1).sum() == 3


# ---------------------------------------------------------------- malformed inputs


def test_a_bad_watermark_row_stops_with_what_to_fix(ray_local, encoder_models, db_url, tmp_path, capsys):
    from sqlalchemy import text

    from core.store import make_engine, now_ms
    from data.refresh import INDEX_ONLY_WATERMARK, main

    cfg_args = ["--set", f"artifacts.root={tmp_path / 'a'}", "--set", f"models.dir={encoder_models}",
                "--set", f"online.database_url={db_url}"]  # fmt: skip
    layout = ArtifactLayout(str(tmp_path / "a"))
    emb = pa.table({"product_id": ["p0"], "item_idx": pa.nulls(1, pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(4, np.float32)), 4),
                    "text_sha256": [None]}, schema=embeddings_schema(4))  # fmt: skip
    build_from_embeddings(IndexConfig(type="flat", recall_sample=0), emb, layout.index, dim=4)
    (tmp_path / "a" / "data" / "embeddings").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(emb, tmp_path / "a" / "data" / "embeddings" / "e.parquet")
    write_manifest(tmp_path / "a" / "data" / "embeddings", {"dim": 4})
    engine = make_engine(db_url)
    for bad, why in ((now_ms() + 86_400_000, "lies in the future"), (-5, "is negative")):
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM refresh_watermarks"))
            conn.execute(
                text("INSERT INTO refresh_watermarks VALUES (:n, :v, 0, 0)"), {"n": INDEX_ONLY_WATERMARK, "v": bad}
            )
        assert main(cfg_args) == 1
        err = capsys.readouterr().err
        assert why in err and "refresh_watermarks" in err and INDEX_ONLY_WATERMARK in err, err
    if engine.dialect.name == "sqlite":  # SQLite stores whatever it is given in an integer column
        with engine.begin() as conn:
            conn.execute(text("UPDATE refresh_watermarks SET products_updated_at = 'yesterday'"))
        assert main(cfg_args) == 1
        assert "not milliseconds" in capsys.readouterr().err
    engine.dispose()


def test_a_missing_index_or_embeddings_names_the_command(tmp_path, capsys):
    from data.refresh import main

    args = ["--set", f"artifacts.root={tmp_path}", "--set", f"online.database_url=sqlite:///{tmp_path}/shop.db"]
    assert main(args) == 1
    assert "shopgraph data embed-products" in capsys.readouterr().err
    emb_dir = tmp_path / "data" / "embeddings"
    emb_dir.mkdir(parents=True)
    (emb_dir / "e.parquet").write_bytes(b"x")
    write_manifest(emb_dir, {"dim": 4})
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no committed text index" in err and "shopgraph data index" in err


def test_an_index_whose_dead_rows_disagree_with_its_manifest_is_refused(tmp_path):
    import pyarrow.parquet as pq

    emb = pa.table({"product_id": ["a", "b"], "item_idx": pa.nulls(2, pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.eye(2, dtype=np.float32).reshape(-1)), 2),
                    "text_sha256": pa.nulls(2, pa.string())}, schema=embeddings_schema(2))  # fmt: skip
    build_from_embeddings(IndexConfig(type="flat", recall_sample=0), emb, tmp_path / "i", dim=2)
    ids = pq.read_table(tmp_path / "i" / IDS_FILE)
    pq.write_table(ids.set_column(1, "product_id", pa.array(["a", None], pa.string())), tmp_path / "i" / IDS_FILE)
    meta = read_manifest(tmp_path / "i")["meta"]
    write_manifest(tmp_path / "i", meta)  # files re-hashed, dead_rows still 0
    with pytest.raises(IncompleteDirError, match="dead rows.*shopgraph data index"):
        load_index(tmp_path / "i")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.refresh.overlap_ms=-1", "data.refresh.overlap_ms"),
        ("data.refresh.rebuild_dead_fraction=0", "data.refresh.rebuild_dead_fraction"),
        ("data.refresh.every=3", "data.refresh"),
    ],  # fmt: skip
)
def test_bad_refresh_config_names_the_key(override, key, capsys):
    from data.refresh import main

    assert main(["--set", override]) == 2
    assert key in capsys.readouterr().err


def test_an_unsupported_database_is_refused():
    from data.refresh import Connect

    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        Connect("mysql://shop@db/shop")


def test_embeddings_from_before_the_text_hash_take_it_from_the_catalog(tmp_path):
    """An artifact root embedded before `text_sha256` existed: a price change still embeds nothing,
    a new title does, a product in neither the column nor the catalog is re-embedded."""
    from data.refresh import known_text_hashes, plan_changes

    layout = ArtifactLayout(str(tmp_path))
    write_shard_set(catalog(), layout.products, rows_per_shard=100, row_group_rows=100, meta={"stage": "test"})
    pids = ["p00", "p01", "x9"]
    old = pa.table({"product_id": pids, "item_idx": pa.nulls(3, pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(6, np.float32)), 2)})  # fmt: skip
    known = known_text_hashes(old, layout)
    assert known["x9"] is None and known["p00"] and known["p01"]
    x9 = {"product_id": "x9", "title": "Old Lamp", "attributes": {}}
    plan = plan_changes([{**catalog_facts("p00"), "price": 1.0}, {**catalog_facts("p01"), "title": "Linen Shirt"}, x9],
                        known)  # fmt: skip
    assert [r["product_id"] for r in plan.embed] == ["p01", "x9"] and plan.remove == {"p01", "x9"}


def test_an_index_behind_its_embeddings_is_rebuilt_by_the_next_run(tmp_path):
    """A refresh cut off after committing the embeddings (or embeddings re-run without `data index`):
    the index's recorded embeddings digest no longer matches, so the refresh rebuilds it first."""
    import pyarrow.parquet as pq

    from data import index as index_stage
    from data.refresh import _resync_index

    cfg = load_config(None, [f"artifacts.root={tmp_path}", "data.index.type=flat", "data.index.recall_sample=0"])
    layout = ArtifactLayout(str(tmp_path))

    def commit_embeddings(n):
        out = tmp_path / "data" / "embeddings"
        out.mkdir(parents=True, exist_ok=True)
        vecs = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
        table = pa.table({"product_id": [f"p{i}" for i in range(n)], "item_idx": pa.nulls(n, pa.int64()),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 4),
                          "text_sha256": pa.nulls(n, pa.string())}, schema=embeddings_schema(4))  # fmt: skip
        pq.write_table(table, out / "e.parquet")
        write_manifest(out, {"dim": 4})

    commit_embeddings(5)
    index_stage.run(cfg)
    emb, meta = load_embeddings(layout)
    assert _resync_index(cfg, tmp_path / "index", tmp_path / "data" / "embeddings", emb, meta) is None
    commit_embeddings(6)  # the embeddings moved on, the index did not
    emb, meta = load_embeddings(layout)
    why = _resync_index(cfg, tmp_path / "index", tmp_path / "data" / "embeddings", emb, meta)
    assert why and "rebuilt in full" in why
    assert load_index(layout.index).ids["product_id"].to_pylist() == [f"p{i}" for i in range(6)]
    assert _resync_index(cfg, tmp_path / "index", tmp_path / "data" / "embeddings", emb, meta) is None
