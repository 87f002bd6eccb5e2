"""`shopgraph cluster up / status / down` against a real single-node Ray head on this machine.

The head runs on free, non-default ports with 2 CPUs (tests/cluster/ray_ports.py), so it
does not collide with other Ray instances; it is always stopped in the fixture teardown.
"""

from __future__ import annotations

import shutil
import socket

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from core.config import load_config
from cluster.local import stop_head
from tests.cluster.ray_ports import head_overrides

runner = CliRunner()
pytestmark = pytest.mark.slow


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def head():
    overrides = head_overrides()
    ray_cfg = load_config(overrides=overrides).cluster.ray
    try:
        result = runner.invoke(app, ["cluster", "up", *_sets(overrides)])
        yield overrides, ray_cfg, result
    finally:
        stop_head(ray_cfg)
        shutil.rmtree(ray_cfg.temp_dir, ignore_errors=True)


def test_up_starts_a_head_and_says_where_it_is(head):
    _, ray_cfg, result = head
    assert result.exit_code == 0, result.output
    url = f"http://127.0.0.1:{ray_cfg.dashboard_port}"
    assert f"dashboard:   {url}" in result.output
    assert f"ray job submit --address {url} --working-dir ." in result.output
    assert f"127.0.0.1:{ray_cfg.gcs_port}" in result.output


def test_second_up_refuses_because_a_cluster_runs_there(head):
    overrides, ray_cfg, _ = head
    result = runner.invoke(app, ["cluster", "up", *_sets(overrides)])
    assert result.exit_code == 1
    assert "already running" in result.output and f"127.0.0.1:{ray_cfg.dashboard_port}" in result.output


def test_status_lists_nodes_resources_serve_and_jobs(head):
    overrides, _, _ = head
    result = runner.invoke(app, ["cluster", "status", *_sets(overrides)])
    assert result.exit_code == 0, result.output
    assert "nodes (1):" in result.output and "head ALIVE" in result.output and "CPU=2" in result.output
    assert "serve applications:" in result.output and "unfinished jobs (0):" in result.output


def test_down_stops_it(head):
    overrides, _, _ = head
    result = runner.invoke(app, ["cluster", "down", *_sets(overrides)])
    assert result.exit_code == 0, result.output
    assert "stopped the Ray head" in result.output
    status = runner.invoke(app, ["cluster", "status", *_sets(overrides)])
    assert status.exit_code == 1 and "shopgraph cluster up" in status.output
    again = runner.invoke(app, ["cluster", "down", *_sets(overrides)])
    assert again.exit_code == 0 and "nothing to stop" in again.output


def test_up_refuses_a_port_held_by_another_process():
    overrides = head_overrides()
    gcs_port = int(next(o for o in overrides if o.startswith("cluster.ray.gcs_port=")).split("=")[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", gcs_port))
        s.listen()
        result = runner.invoke(app, ["cluster", "up", *_sets(overrides)])
    assert result.exit_code == 1
    assert f"cluster.ray.gcs_port={gcs_port}" in result.output and "--set cluster.ray.gcs_port=<free port>" in result.output


def test_up_with_a_bad_config_exits_2():
    result = runner.invoke(app, ["cluster", "up", "--set", "cluster.ray.num_cpus=0"])
    assert result.exit_code == 2 and "cluster.ray.num_cpus" in result.output
