"""The README's main command, run the way a user runs it: `shopgraph demo --exit-after-requests`.

The artifact root is the session's small pipeline output, so every data/train stage reports
"up to date" (the skip logic is part of what is tested) and the run goes straight to a real
Serve application with the real vLLM engine, then prints the sample requests.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_serves_and_prints_sample_requests(serving_artifacts):
    sets = [x for o in serving_artifacts for x in ("--set", o)]
    result = run_cli("demo", "--exit-after-requests", *sets, "--set", "serve.http.port=8125", timeout=900, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for stage in ("data prepare", "data split", "data index", "train recommender", "train ranker"):
        assert re.search(rf"{stage}\s+up to date", out), stage
    assert "POST /v1/recommendations  user_id=" in out
    assert re.search(r"^\s+-?\d+\.\d{3}  .+  \[(generated|cached|template)\] .+$", out, re.M), out
    assert "GET /v1/products/" in out and "description:" in out
    assert "shopgraph is serving at http://127.0.0.1:8125" in out


def test_demo_rejects_bad_config_before_work():
    result = run_cli("demo", "--set", "models.engine.dtype=int3")
    assert result.returncode == 2
    assert "models.engine.dtype" in result.stderr


def test_demo_rejects_unknown_engine():
    result = run_cli("demo", "--engine", "llama.cpp")
    assert result.returncode == 2 and "--engine" in result.stderr
