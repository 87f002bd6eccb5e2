"""Shared fixtures. Nothing here touches the network: hub access is switched off for the
whole session, so a test that tried to download a model would fail instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config.serve import HttpConfig
from tests.cluster.ray_ports import free_ports

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Serve's HAProxy binds its stats and metrics ports (8404, 9101 by default) on every start: a second
# Serve on the machine (another checkout's tests, a leftover proxy) would crash every app test. Free
# ports for this session, inherited by the Ray processes the tests start; a test may set its own.
for _var, _port in zip(("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"), free_ports(2)):
    os.environ.setdefault(_var, str(_port))
# Every Ray instance a test starts serves the way the product does (serve.http.proxy's default).
for _key, _value in HttpConfig().ray_env().items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHOPGRAPH_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The embedded models, prepared once per session exactly as `shopgraph models prepare` does."""
    from ml.base_model import prepare_generator_tuned
    from ml.encoder import prepare_encoder

    root = tmp_path_factory.mktemp("models")
    prepare_generator_tuned(root)  # the base, then the default generator: the base + shopgraph's adapter
    prepare_encoder(root)
    return root


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `shopgraph` console script the way a user does."""
    exe = Path(sys.executable).parent / "shopgraph"
    return subprocess.run(
        [str(exe), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


SMALL_PIPELINE = [
    "data.sample.num_products=800",
    "data.sample.num_users=400",
    "data.sample.num_events=12000",
    "train.recommender.epochs=6",
    "train.recommender.eval_users=300",
    "train.ranker.epochs=4",
    "train.ranker.candidates=50",
    "data.index.recall_sample=100",
]


@pytest.fixture(scope="session")
def serving_artifacts(tmp_path_factory, models_dir) -> list[str]:
    """A small but real artifact root (sample data -> shards -> splits -> embeddings -> index ->
    recommender -> ranker), built once per session; returns the --set overrides that point at it."""
    import ray

    from cluster.pipeline import run_pipeline
    from core.config import load_config

    root = tmp_path_factory.mktemp("serving-artifacts")
    overrides = [f"artifacts.root={root}", f"models.dir={models_dir}", *SMALL_PIPELINE]
    started_here = not ray.is_initialized()
    run_pipeline(load_config(overrides=overrides), echo=lambda _: None)
    if started_here:
        ray.shutdown()
    return overrides


# ----------------------------------------------------------------------------- online database


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (core.store.pgserver), stopped after; skipped,
    saying why, where the server binaries are missing (CI installs them: scripts/setup.sh)."""
    from core.store.pgserver import local_postgres, missing_reason

    why = missing_reason()
    if why:
        pytest.skip(why)
    with local_postgres(fsync=False) as url:
        yield url


_DATABASES = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, migrated online database of each dialect: every database test runs on both."""
    from core.store import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        from core.store.pgserver import create_database

        url = create_database(request.getfixturevalue("postgres_server"), f"t{next(_DATABASES)}")
    upgrade(url)
    return url


@pytest.fixture
def redis_server():
    """A real Redis (Debian's redis-server, core.redisserver) on a free port, stopped after; the
    test may stop() and start() it again. Skipped, saying why, where redis-server is missing."""
    from core.redisserver import local_redis, missing_reason

    why = missing_reason()
    if why:
        pytest.skip(why)
    with local_redis() as server:
        yield server


# ----------------------------------------------------------------------------- the end of the session

_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    """Leave nothing of this session running: Ray (a test that connected and failed before its own
    shutdown), and note the exit status for `pytest_unconfigure`."""
    _EXIT["status"] = int(exitstatus)
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process with pytest's own exit status once everything is reported and every
    fixture torn down, without running the interpreter's teardown of the native libraries the
    session loaded (Ray's core worker, torch, FAISS, gRPC). That teardown is not what the suite
    tests, and it once crashed (SIGSEGV, exit 139) after a run in which every test had passed,
    which turned a green run red with nothing to fix in the project. Opt out with
    SHOPGRAPH_TEST_NATIVE_EXIT=1 (e.g. to look into such a crash with PYTHONFAULTHANDLER=1)."""
    if "status" not in _EXIT or os.environ.get("SHOPGRAPH_TEST_NATIVE_EXIT") == "1":
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT["status"])
