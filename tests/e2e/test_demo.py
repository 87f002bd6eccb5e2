"""The README's main command, run the way a user runs it: `shopgraph demo --exit-after-requests`.

The artifact root is the session's small pipeline output, so every data/train stage reports
"up to date" (the skip logic is part of what is tested) and the run goes straight to a real
Serve application with the real vLLM engine, then prints the sample requests. The console must stay concise: the demo's own lines only,
with vLLM, Ray and worker output in the log file whose path it prints.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_serves_and_prints_sample_requests(serving_artifacts):
    sets = [x for o in serving_artifacts for x in ("--set", o)]
    result = run_cli(
        "demo",
        "--exit-after-requests",
        *sets,
        "--set",
        "serve.http.port=8125",
        timeout=900,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for stage in ("data prepare", "data split", "data index", "train recommender", "train ranker"):
        assert re.search(rf"{stage}\s+up to date", out), stage
    assert "POST /v1/recommendations  user_id=" in out
    assert re.search(r"^\s+-?\d+\.\d{3}  .+  \[(generated|cached|template)\] .+$", out, re.MULTILINE), out
    assert "GET /v1/products/" in out and "description:" in out
    assert "shopgraph is serving at http://127.0.0.1:8125" in out
    # concise console: no engine/Ray/worker lines, no progress-bar redraws; they are in the log
    for stream in (out, result.stderr):
        assert max((len(line) for line in stream.splitlines()), default=0) <= 300, stream
        assert not re.search(r"\bINFO\b|\(ServeReplica|\(RayTrainWorker|row/s", stream), stream
    log = Path(re.search(r"engine, Ray and worker logs: (\S+)", out).group(1))
    text = log.read_text(errors="replace")
    assert "ServeReplica" in text and "vllm" in text.lower(), text[-3000:]


def test_demo_rejects_bad_config_before_work():
    result = run_cli("demo", "--set", "models.engine.dtype=int3")
    assert result.returncode == 2
    assert "models.engine.dtype" in result.stderr


def test_demo_rejects_unknown_engine():
    result = run_cli("demo", "--engine", "llama.cpp")
    assert result.returncode == 2 and "--engine" in result.stderr
