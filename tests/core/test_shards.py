"""Shard sets: identical bytes on rerun, fixed shard sizes, local and fsspec roots, never half-committed."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
import ray

import core.shards as shards
from core.layout import ArtifactLayout
from core.manifest import MANIFEST_NAME, IncompleteDirError
from core.shards import read_events, read_products, read_shard_set, verify_shard_set, write_shard_set
from data.prepare import prepare
from data.sample import generate
from tests.data.test_quarantine import CATALOG, EVENTS, config


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def sample_config(root: str, **prepare_opts):
    from core.config import ShopgraphConfig

    return ShopgraphConfig.model_validate(
        {
            "artifacts": {"root": root},
            "data": {"sample": {"num_products": 120, "num_users": 40, "num_events": 900}, "prepare": prepare_opts},
        }
    )


def hashes(uri: str) -> dict[str, str]:
    return {name: info["sha256"] for name, info in verify_shard_set(uri)["files"].items()}


def test_rerun_gives_identical_files(tmp_path: Path, monkeypatch):
    # user ids are pseudonymized with the deployment's key: the same key, the same files (without
    # one, each artifact root generates its own demo key)
    monkeypatch.setenv("SHOPGRAPH_PSEUDONYM_KEYS", "k1:" + "0123456789abcdef" * 2)
    for run in ("a", "b"):
        prepare(sample_config(str(tmp_path / run), rows_per_shard=250, row_group_rows=100), log=lambda _: None)
    a, b = ArtifactLayout(str(tmp_path / "a")), ArtifactLayout(str(tmp_path / "b"))
    assert list(hashes(a.events)) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
        "part-00003.parquet",
    ]
    for part in ("products", "events", "quarantine"):
        assert hashes(getattr(a, part)) == hashes(getattr(b, part)), part
    products, events = generate(sample_config("x").data.sample)
    assert read_products(a).equals(products.sort_by("product_id"))  # the sample is valid: nothing lost
    got = read_events(a)
    assert got.num_rows == events.num_rows == 900
    keys = list(zip(got["user_id"].to_pylist(), got["ts"].to_pylist(), strict=True))
    assert keys == sorted(keys)  # ordered by (user_id, ts)


def test_rerun_of_real_format_sources_is_identical(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SHOPGRAPH_PSEUDONYM_KEYS", "k1:" + "0123456789abcdef" * 2)
    # chunk_mb=1 and 1-row shards: many tasks finish in any order; the output must not care
    for run in ("a", "b"):
        prepare(config(tmp_path / run, [CATALOG, EVENTS], chunk_mb=1, rows_per_shard=1), log=lambda _: None)
    for part in ("products", "events", "quarantine"):
        assert hashes(getattr(ArtifactLayout(str(tmp_path / "a")), part)) == hashes(
            getattr(ArtifactLayout(str(tmp_path / "b")), part)
        )


def test_memory_root_round_trip_and_commit_marker():
    root = "memory://shopgraph-test/art"
    prepare(sample_config(root), log=lambda _: None)
    layout = ArtifactLayout(root)
    assert read_products(layout).num_rows == 120 and read_events(layout).num_rows == 900
    fs = fsspec.filesystem("memory")
    fs.rm(f"/shopgraph-test/art/data/events/{MANIFEST_NAME}")
    with pytest.raises(IncompleteDirError, match="never completed.*shopgraph data prepare"):
        read_events(layout)


def test_interrupted_remote_write_is_not_complete(monkeypatch):
    uri = "memory://shopgraph-test/interrupted"
    table = pa.table({"x": list(range(10))})
    write_shard_set(table, uri, rows_per_shard=3, row_group_rows=3, meta={})
    assert read_shard_set(uri, table.schema).equals(table)
    real = shards._shards

    def crash_after_files(*args, **kwargs):
        yield from real(*args, **kwargs)
        raise KeyboardInterrupt  # the process dies after the files, before the marker

    monkeypatch.setattr(shards, "_shards", crash_after_files)
    with pytest.raises(KeyboardInterrupt):
        write_shard_set(table, uri, rows_per_shard=3, row_group_rows=3, meta={})
    with pytest.raises(IncompleteDirError, match="never completed"):
        read_shard_set(uri, table.schema)


def test_interrupted_local_write_keeps_the_previous_set(tmp_path: Path, monkeypatch):
    uri = str(tmp_path / "set")
    old = pa.table({"x": [1, 2, 3]})
    write_shard_set(old, uri, rows_per_shard=2, row_group_rows=2, meta={})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shard_set(pa.table({"x": [9]}), uri, rows_per_shard=2, row_group_rows=2, meta={})
    assert read_shard_set(uri, old.schema).equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no staging directory left behind


def test_local_set_without_manifest_or_with_a_changed_file_is_refused(tmp_path: Path):
    uri = str(tmp_path / "set")
    write_shard_set(pa.table({"x": [1, 2, 3]}), uri, rows_per_shard=2, row_group_rows=2, meta={"k": 1})
    manifest = json.loads((tmp_path / "set" / MANIFEST_NAME).read_text())
    assert manifest["meta"] == {"k": 1, "rows": 3} and len(manifest["files"]) == 2
    with open(tmp_path / "set" / "part-00001.parquet", "ab") as f:
        f.write(b"junk")
    with pytest.raises(IncompleteDirError, match="part-00001.parquet has"):
        read_shard_set(uri, pa.schema([("x", pa.int64())]))
    (tmp_path / "set" / MANIFEST_NAME).unlink()
    with pytest.raises(IncompleteDirError, match="never completed"):
        read_shard_set(uri, pa.schema([("x", pa.int64())]))
    with pytest.raises(IncompleteDirError, match="does not exist.*shopgraph data prepare"):
        read_products(ArtifactLayout(str(tmp_path / "nothing-here")))
