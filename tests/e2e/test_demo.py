"""The README's main command, run the way a user runs it (real models, real vLLM)."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(models_dir):
    result = run_cli("demo", "--set", f"models.dir={models_dir}", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "up to date" in out  # models were already prepared by the session fixture
    assert "Wooden train set with 40 pieces, beech wood  ->  Magnetic wooden railway bridge" in out
    assert "Plush teddy bear, 30 cm, washable  ->  Soft cuddly bunny toy for babies" in out
    copy = out.split("vLLM product copy for", 1)[1]
    assert len(copy.split()) > 10


def test_demo_rejects_bad_config_before_work():
    result = run_cli("demo", "--set", "models.engine.dtype=int3")
    assert result.returncode == 2
    assert "models.engine.dtype" in result.stderr
