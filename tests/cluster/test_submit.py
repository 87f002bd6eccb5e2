"""`shopgraph cluster submit <stage>`: a real Ray job on a local head started by this module.

One head (module-scoped fixture, free ports, 2 CPUs) serves every test here; the stage is
`smoke` (cluster/smoke_job.py), a tiny real module that loads the config and runs Ray tasks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.local import start_head, stop_head
from cluster.stages import REPO_ROOT, STAGES, Stage, StageError, get_stage
from core.config import load_config
from tests.cluster.ray_ports import head_overrides

runner = CliRunner()


@pytest.fixture(scope="module")
def head():
    overrides = head_overrides()
    ray_cfg = load_config(overrides=overrides).cluster.ray
    try:
        info = start_head(ray_cfg)
        yield info.dashboard_url
    finally:
        stop_head(ray_cfg)
        shutil.rmtree(ray_cfg.temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_smoke_job_succeeds_and_streams_its_logs(head):
    result = runner.invoke(app, ["cluster", "submit", "smoke", "--address", head])
    assert result.exit_code == 0, result.output
    assert "python -m cluster.smoke_job --config configs/local.yaml --set artifacts.root=" in result.output
    assert "smoke: profile=local sum of squares 0..7 = 140 on 1 node(s)" in result.output  # streamed from the job
    assert "succeeded" in result.output
    # relative paths are pinned to this checkout, not the job's temporary working_dir copy
    assert f"smoke: artifacts.root={REPO_ROOT / 'artifacts'} models.dir={REPO_ROOT / 'models'}" in result.output


@pytest.mark.slow
def test_failing_job_exits_nonzero_and_shows_the_error(head):
    result = runner.invoke(app, ["cluster", "submit", "smoke", "--address", head, "--", "--fail"])
    assert result.exit_code == 1, result.output
    assert "RuntimeError: deliberate failure requested with --fail" in result.output
    assert "FAILED" in result.output and "exit code 1" in result.output


@pytest.mark.slow
def test_raw_ray_job_submit_equivalent_from_the_readme(head):
    ray = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray),
        "job",
        "submit",
        "--address",
        head,
        "--working-dir",
        ".",
        "--",
        "python",
        "-m",
        "cluster.smoke_job",
        "--config",
        "configs/local.yaml",
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sum of squares 0..7 = 140" in result.stdout


def test_unknown_stage_exits_2_and_lists_stages():
    result = runner.invoke(app, ["cluster", "submit", "trian-ranker"])
    assert result.exit_code == 2
    assert "unknown stage 'trian-ranker'" in result.output and "train-ranker" in result.output


def test_stage_missing_from_checkout_fails_at_submit_time(monkeypatch):
    monkeypatch.setitem(STAGES, "ghost", Stage("ghost", "train.ghost_stage", "not written yet"))
    result = runner.invoke(app, ["cluster", "submit", "ghost", "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "stage ghost is not available in this checkout: module train.ghost_stage not found" in result.output


def test_every_stage_is_checked_against_the_checkout(tmp_path):
    for name in STAGES:
        with pytest.raises(StageError, match=f"stage {name} is not available in this checkout"):
            get_stage(name, root=tmp_path)
    assert get_stage("smoke").module_file() == REPO_ROOT / "cluster" / "smoke_job.py"


def test_bad_config_exits_2_before_submitting():
    result = runner.invoke(app, ["cluster", "submit", "smoke", "--set", "cluster.jobs.pip=3"])
    assert result.exit_code == 2 and "cluster.jobs.pip" in result.output


def test_config_outside_the_working_dir_exits_2(tmp_path):
    outside = tmp_path / "c.yaml"
    outside.write_text("profile: local\n")
    result = runner.invoke(app, ["cluster", "submit", "smoke", "--config", str(outside)])
    assert result.exit_code == 2 and "outside the working_dir" in result.output


def test_no_cluster_at_the_address_is_a_clear_error():
    result = runner.invoke(app, ["cluster", "submit", "smoke", "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "start one with `shopgraph cluster up`" in result.output
