"""A multi-node Ray cluster on this machine: `shopgraph cluster up --workers 1 --gpu-workers 1`.

    .venv/bin/python -m pytest -q -m multinode tests/cluster/test_multinode.py

One module-scoped cluster (a head with 0 CPUs, a CPU-group and a GPU-group worker node with two
logical CPUs each, free ports, a private temp dir) serves every test here, and is stopped in the
fixture's teardown whatever happens. On it the real pipeline builds a small artifact root (Ray
Data stages, then Ray Train with one worker per node: `train.scaling.placement_strategy=
STRICT_SPREAD`), then the real Serve application (fake engine behind the generator seam) runs
with its deployments placed per node group from config. What ran where is read back from Ray:
the state API (tasks, actors, nodes) and Serve's REST API.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import httpx
import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.local import get_json, read_state, stop_head
from core.config import load_config
from tests.cluster.ray_ports import free_ports, head_overrides
from tests.conftest import SMALL_PIPELINE

runner = CliRunner()

PLACEMENT = [  # the CPU group serves HTTP, retrieval and ranking; the GPU group generates
    "serve.deployments.ingress.node_group=cpu",
    "serve.deployments.retriever.node_group=cpu",
    "serve.deployments.ranker.node_group=cpu",
    "serve.deployments.generator.node_group=gpu",
    *(f"serve.deployments.{d}.num_cpus=0.05" for d in ("ingress", "retriever", "ranker", "generator")),
    # autoscaling settings that differ from the defaults, so reading them back proves they came from here
    "serve.deployments.retriever.max_replicas=2",
    "serve.deployments.retriever.target_ongoing_requests=3",
    "serve.deployments.retriever.upscale_delay_s=2",
    "serve.deployments.retriever.downscale_delay_s=7",
    "serve.deployments.ingress.max_ongoing_requests=100",
]
TRAIN = ["train.scaling.placement_strategy=STRICT_SPREAD", "train.recommender.epochs=2", "train.ranker.epochs=2"]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def cluster():
    """(overrides, RayConfig, `cluster up` result, {node id: node name}) of a running 3-node cluster."""
    import ray

    # Two logical CPUs per worker (Ray's CPUs are logical; the box has 2 cores): with one, the embed
    # stage deadlocks: its two encoder actors take 0.5 CPU on each node and its 1-CPU read task fits nowhere.
    overrides = [*head_overrides(), "cluster.local.cpu_workers.num_cpus=2", "cluster.local.gpu_workers.num_cpus=2"]
    ray_cfg = load_config(overrides=overrides).cluster.ray
    # The driver speaks the head's (pinned) auth mode. Serve's HAProxy binds fixed stats and metrics
    # ports (8404, 9101): free ones, so another Serve on this machine does not make it crash.
    metrics_port, stats_port = free_ports(2)
    env = {
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = runner.invoke(app, ["cluster", "up", "--workers", "1", "--gpu-workers", "1", *_sets(overrides)])
        assert result.exit_code == 0, result.output
        ray.init(address=f"127.0.0.1:{ray_cfg.gcs_port}", log_to_driver=False)
        names = {}
        for n in ray.nodes():
            named = [k for k in n["Resources"] if k.startswith("shopgraph-")]
            names[n["NodeID"]] = named[0] if named else "head"
        yield overrides, ray_cfg, result, names
    finally:
        from ray import serve

        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        stop_head(ray_cfg)
        shutil.rmtree(ray_cfg.temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def pipeline(cluster, models_dir, tmp_path_factory):
    """The real pipeline on the cluster; returns (overrides, this driver's job id)."""
    import ray

    from cluster.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("multinode-artifacts")
    overrides = [f"artifacts.root={root}", f"models.dir={models_dir}", *SMALL_PIPELINE, *TRAIN]
    run_pipeline(load_config(overrides=overrides), echo=lambda _: None)
    return overrides, ray.get_runtime_context().get_job_id()


@pytest.fixture(scope="module")
def served(cluster, pipeline):
    """The Serve application over the pipeline's artifacts; returns (base URL, config)."""
    from ray import serve

    from serve.app import build_app

    overrides = [*pipeline[0], *PLACEMENT]
    (port,) = free_ports(1)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"overrides": overrides, "engine": "fake"}), name="shopgraph", route_prefix="/")
    return f"http://127.0.0.1:{port}", load_config(overrides=overrides)


def _dashboard(cluster) -> str:
    return f"http://127.0.0.1:{cluster[1].dashboard_port}"


@pytest.mark.slow
@pytest.mark.multinode
def test_up_starts_a_head_and_two_named_worker_nodes(cluster):
    _, _, result, names = cluster
    assert "worker node: shopgraph-cpu-1 (group cpu" in result.output
    assert "worker node: shopgraph-gpu-1 (group gpu" in result.output
    assert sorted(names.values()) == ["head", "shopgraph-cpu-1", "shopgraph-gpu-1"]


@pytest.mark.slow
@pytest.mark.multinode
def test_status_lists_every_node_with_its_group(cluster):
    import ray

    overrides = cluster[0]
    result = runner.invoke(app, ["cluster", "status", *_sets(overrides)])
    assert result.exit_code == 0, result.output
    assert "nodes (3):" in result.output
    assert "worker group=cpu name=shopgraph-cpu-1 ALIVE: CPU=2" in result.output
    assert "worker group=gpu name=shopgraph-gpu-1 ALIVE: CPU=2" in result.output
    assert ray.cluster_resources()["CPU"] == 4  # the head schedules, the two workers run (head_num_cpus=0)


@pytest.mark.slow
@pytest.mark.multinode
def test_ray_data_stages_run_tasks_on_both_worker_nodes(cluster, pipeline):
    from ray.util.state import list_tasks

    names = cluster[3]
    tasks = list_tasks(
        address=_dashboard(cluster),
        filters=[("job_id", "=", pipeline[1]), ("type", "=", "NORMAL_TASK")],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    )
    data_tasks = [t for t in tasks if t.node_id and ("Read" in t.name or "Map" in t.name or "Write" in t.name)]
    where = Counter(names.get(t.node_id, "?") for t in data_tasks)
    assert where["shopgraph-cpu-1"] > 0 and where["shopgraph-gpu-1"] > 0, where


@pytest.mark.slow
@pytest.mark.multinode
def test_ray_train_runs_one_worker_per_node(cluster, pipeline):
    from ray.util.state import list_actors

    names = cluster[3]
    actors = list_actors(
        address=_dashboard(cluster),
        filters=[("job_id", "=", pipeline[1])],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    )
    workers = [a for a in actors if "TrainWorker" in a.class_name]
    assert workers, sorted({a.class_name for a in actors})
    # every run (recommender, ranker) spread its 2 workers over the 2 worker nodes
    by_node = Counter(names.get(a.node_id, "?") for a in workers)
    assert (
        set(by_node) == {"shopgraph-cpu-1", "shopgraph-gpu-1"}
        and by_node["shopgraph-cpu-1"] == by_node["shopgraph-gpu-1"]
    ), by_node


def _applications(cluster) -> dict:
    return get_json(f"{_dashboard(cluster)}/api/serve/applications/", timeout=30)["applications"]


@pytest.mark.slow
@pytest.mark.multinode
def test_the_serving_graph_answers_with_replicas_on_the_nodes_config_says(cluster, served):
    url, cfg = served
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/recommendations", json={"user_id": "someone-new", "k": 5, "with_reasons": False})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 5
    names = cluster[3]
    deployments = _applications(cluster)["shopgraph"]["deployments"]
    placed = {
        name: {names.get(r["node_id"], "?") for r in d["replicas"] if r["state"] == "RUNNING"}
        for name, d in deployments.items()
    }
    assert placed == {
        "Ingress": {"shopgraph-cpu-1"},
        "Retriever": {"shopgraph-cpu-1"},
        "Ranker": {"shopgraph-cpu-1"},
        "Generator": {"shopgraph-gpu-1"},
    }


@pytest.mark.slow
@pytest.mark.multinode
def test_serve_reports_the_autoscaling_settings_of_the_config(cluster, served):
    _, cfg = served
    deployments = _applications(cluster)["shopgraph"]["deployments"]
    for name, key in (
        ("Ingress", "ingress"),
        ("Retriever", "retriever"),
        ("Ranker", "ranker"),
        ("Generator", "generator"),
    ):
        want = getattr(cfg.serve.deployments, key).options()
        got = deployments[name]["deployment_config"]
        reported = {k: got["autoscaling_config"][k] for k in want["autoscaling_config"]}
        assert reported == want["autoscaling_config"], name
        assert got["max_ongoing_requests"] == want["max_ongoing_requests"], name
        assert got["max_queued_requests"] == want["max_queued_requests"], name
        assert got["backpressure_config"] == want["backpressure_config"], name
        actor = got["ray_actor_options"]
        assert actor["num_cpus"] == want["ray_actor_options"]["num_cpus"], name
        assert actor["resources"] == want["ray_actor_options"]["resources"], name
    retriever = deployments["Retriever"]["deployment_config"]["autoscaling_config"]
    assert (retriever["max_replicas"], retriever["upscale_delay_s"], retriever["downscale_delay_s"]) == (2, 2, 7)


@pytest.mark.slow
@pytest.mark.multinode
def test_down_stops_exactly_the_processes_up_started(cluster):
    import ray

    overrides, ray_cfg, _, _ = cluster
    state = read_state(ray_cfg)
    groups = [int(state["pid"]), *(int(w["pid"]) for w in state["workers"])]
    ray.shutdown()  # the driver leaves; Serve's controller goes with the cluster
    result = runner.invoke(app, ["cluster", "down", *_sets(overrides)])
    assert result.exit_code == 0, result.output
    assert "and 2 worker node(s)" in result.output
    deadline = time.monotonic() + 60  # a busy box reaps slowly
    while _members(groups) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _members(groups), f"still running after down: {_members(groups)}"
    assert read_state(ray_cfg) is None


def _members(pgids: list[int]) -> list[str]:
    """The live (not zombie) processes of these process groups, as 'pid status command'."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(proc.pid) in pgids and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(f"{proc.pid} {proc.info['status']} {' '.join(proc.info['cmdline'] or [])[:80]}")
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def test_up_refuses_a_negative_worker_count():
    result = runner.invoke(app, ["cluster", "up", "--workers", "-1"])
    assert result.exit_code == 2 and "--workers must be between 0 and 16, got -1" in result.output


def test_a_bad_node_group_or_worker_share_names_the_key():
    result = runner.invoke(app, ["cluster", "up", "--set", "serve.deployments.generator.node_group=tpu"])
    assert result.exit_code == 2 and "serve.deployments.generator.node_group" in result.output
    result = runner.invoke(app, ["cluster", "up", "--set", "cluster.local.cpu_workers.num_cpus=-1"])
    assert result.exit_code == 2 and "cluster.local.cpu_workers.num_cpus" in result.output
