"""bench/autoscale.py: bad arguments stop it before any cluster starts, naming the flag; the
deployment under test gets exactly the autoscaling settings asked for. (The run itself, on a
multi-node cluster, is the benchmark's: README "A multi-node Ray cluster on one machine".)

    pytest -q tests/bench/test_autoscale.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import autoscale  # noqa: E402  (bench/ is not a package)


def test_bad_arguments_name_the_flag_and_start_nothing():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "autoscale.py"), "--artifacts", "/nonexistent",
         "--max-replicas", "1", "--concurrency", "0"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--max-replicas must be >= 2" in out.stderr and "--concurrency must be between 1 and 256" in out.stderr


def test_the_deployment_under_test_gets_the_settings_asked_for():
    from core.config import load_config

    args = autoscale.parse_args(["--artifacts", "x", "--deployment", "retriever", "--max-replicas", "3"])
    cfg = load_config(overrides=autoscale.app_overrides(args))
    opts = cfg.serve.deployments.retriever.options()
    assert opts["autoscaling_config"] | {"initial_replicas": 1} == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
        "upscale_delay_s": 2.0,
        "downscale_delay_s": 5.0,
    }
    assert all(
        getattr(cfg.serve.deployments, d).options()["ray_actor_options"]["resources"] == {"group_cpu": 0.001}
        for d in ("ingress", "retriever", "ranker")
    )
