"""The head's GCS killed under load (bench/failures.py, scenario gcs-kill, small): the app keeps
answering through the worker nodes' proxies, the head comes back, and the cluster recovers.

    .venv/bin/python -m pytest -q -m multinode tests/bench/test_failures.py

A real 3-node cluster (head + 2 CPU-group workers, 2 logical CPUs each, free ports, a private temp dir),
GCS fault tolerance on a throwaway Redis as the KubeRay manifests render it
(`cluster.faults.gcs_ft_env`), the real app (fake engine behind the generator seam) with 2
replicas of every deployment and Serve's proxy on every node. 5 req/s for 40 s
(recommendations and product pages), the head's `gcs_server` SIGKILLed 10 s in; the head is
started again as the kubelet would. The full-size figures (50 req/s for 120 s) are the bench's.
The worker-node kill is tests/cluster/test_failures.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import failures  # noqa: E402  (bench/ is not a package)


def test_bad_arguments_name_the_flag_and_start_nothing():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "failures.py"), "--artifacts", "/nonexistent",
         "--scenarios", "gcs-kill,disk-full", "--rate", "0", "--kill-at", "500"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--scenarios must be some of" in out.stderr and "--rate must be in (0, 500]" in out.stderr
    assert "--kill-at must be inside (0, --duration)" in out.stderr


@pytest.mark.slow
@pytest.mark.multinode
def test_a_killed_gcs_leaves_the_app_answering_and_the_cluster_recovers(serving_artifacts):
    from core.redisserver import missing_reason

    if missing_reason():
        pytest.skip(missing_reason())
    root = next(o.split("=", 1)[1] for o in serving_artifacts if o.startswith("artifacts.root="))
    models = next(o.split("=", 1)[1] for o in serving_artifacts if o.startswith("models.dir="))
    sets = [a for o in serving_artifacts if not o.startswith(("artifacts.root=", "models.dir=")) for a in ("--set", o)]
    cmd = [
        sys.executable, str(REPO / "bench" / "failures.py"), "--artifacts", root, "--models", models, *sets,
        "--scenarios", "gcs-kill", "--worker-cpus", "2", "--rate", "5", "--duration", "40", "--kill-at", "10",
        "--recover-timeout", "240", "--target", "0.9",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}  # what earlier tests set here
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=840, cwd=REPO, env=env)
    assert run.stdout.strip(), run.stderr[-3000:]
    out = json.loads(run.stdout)["scenarios"]["gcs-kill"]
    assert "error" not in out, out.get("error")
    load, recovery = out["load"], out["recovery"]
    # Before the kill every request answers. While the head is down, requests reach the worker
    # nodes' proxies and answer (the few in flight on the head's own proxy when it died fail:
    # KubeRay keeps the head out of the Serve Service, which one host cannot).
    assert load["windows"]["before_kill"]["success_rate"] == 1.0, load["windows"]["before_kill"]
    down = load["windows"]["head_down"]
    assert down["requests"] >= 20 and down["success_rate"] >= 0.8, down
    assert load["success_rate"] >= 0.9, load
    # The head came back, found the cluster in Redis: every node alive, the app RUNNING with its
    # replicas, and a new deployment answers.
    assert recovery["head_starts"] >= 1 and recovery["head_exited_after_s"] < 30, recovery
    assert recovery.get("nodes_alive_after_s") is not None, recovery
    assert recovery.get("serve_running_after_s") is not None, recovery
    assert recovery["new_deployment"]["ok"], recovery["new_deployment"]
    assert out["met_target"], out


def test_the_scenario_runs_the_app_with_the_replicas_asked_for():
    from core.config import load_config

    cfg = load_config(overrides=failures.app_overrides(2))
    for name in failures.DEPLOYMENTS:
        opts = getattr(cfg.serve.deployments, name).options()
        scaling = opts.get("autoscaling_config") or {"min_replicas": opts.get("num_replicas")}
        assert scaling["min_replicas"] == 2 and scaling.get("max_replicas", 2) == 2, (name, opts)
