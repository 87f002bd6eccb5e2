"""`shopgraph cluster up / status / down` against a real single-node Ray head on this machine.

    .venv/bin/python -m pytest -q tests/cluster/test_local_cluster.py

The head runs on free, non-default ports with 2 CPUs (tests/cluster/ray_ports.py), so it
does not collide with other Ray instances; it is always stopped in the fixture teardown.
The up -> down -> prepare test gives Ray a private default temp dir (RAY_TMPDIR), so the
"latest cluster" file it checks is not the one other Ray users of this machine read.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.local import LocalClusterError, head_auth_mode, head_env, stop_head
from core.config import PATHS_BASE_ENV, ConfigError, load_config
from tests.cluster.ray_ports import free_ports, head_overrides
from tests.conftest import SMALL_PIPELINE

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
    assert "e+" not in result.output  # bytes as GiB, not 1.43808e+10
    assert re.search(r" memory=\d+\.\dGiB", result.output), result.output
    assert re.search(r"object_store_memory=\d+\.\dGiB", result.output), result.output
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
    assert (
        f"cluster.ray.gcs_port={gcs_port}" in result.output
        and "--set cluster.ray.gcs_port=<free port>" in result.output
    )


def test_up_with_a_bad_config_exits_2():
    result = runner.invoke(app, ["cluster", "up", "--set", "cluster.ray.num_cpus=0"])
    assert result.exit_code == 2 and "cluster.ray.num_cpus" in result.output


def test_head_auth_mode_is_pinned(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert head_auth_mode() == "disabled"  # not left to Ray, which turns token auth on if ~/.ray/auth_token exists
    env = head_env({"X": "1"}, "disabled", tmp_path)
    assert env["RAY_AUTH_MODE"] == "disabled" and env[PATHS_BASE_ENV] == str(tmp_path) and env["X"] == "1"
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    monkeypatch.setenv("RAY_AUTH_MODE", "tokens")
    with pytest.raises(LocalClusterError, match="set it to token or disabled"):
        head_auth_mode()


def test_relative_paths_resolve_against_the_head_base(monkeypatch, tmp_path):
    monkeypatch.setenv(PATHS_BASE_ENV, str(tmp_path))
    cfg = load_config()
    assert cfg.artifacts.root == str(tmp_path / "artifacts") and cfg.models.dir == str(tmp_path / "models")
    uri = load_config(overrides=["artifacts.root=s3://bucket/x", "models.dir=/abs/m"])
    assert uri.artifacts.root == "s3://bucket/x"
    assert load_config(overrides=["models.dir=/abs/m"]).models.dir == "/abs/m"


def test_a_job_in_its_working_dir_copy_refuses_relative_paths(monkeypatch, tmp_path):
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv(PATHS_BASE_ENV, raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(ConfigError, match=r"--set artifacts.root=/absolute/path --set models.dir=/absolute/path"):
        load_config()
    absolute = load_config(overrides=[f"artifacts.root={tmp_path}/a", f"models.dir={tmp_path}/m"])
    assert absolute.artifacts.root == f"{tmp_path}/a"


def test_ensure_ray_starts_its_own_instance_unless_it_runs_as_a_job(monkeypatch):
    import ray

    from core.runtime import ensure_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ensure_ray(load_config(overrides=["cluster.ray.num_cpus=2"]))
    assert calls[-1]["address"] == "local" and calls[-1]["num_cpus"] == 2  # never the "latest cluster" of the machine
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what the job supervisor sets for a job's driver
    ensure_ray(load_config(overrides=["cluster.ray.num_cpus=2"]))
    assert calls[-1]["address"] is None and "num_cpus" not in calls[-1]
    ensure_ray(load_config(overrides=["cluster.ray.address=ray://h:10001"]))
    assert calls[-1]["address"] == "ray://h:10001"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.slow
def test_up_down_leaves_the_machine_as_it_was_and_prepare_runs_after(tmp_path, monkeypatch):
    """up writes Ray's "latest cluster" file; after down a plain `shopgraph data prepare` must not hang on it."""
    ray_tmp = Path(tempfile.gettempdir()) / f"sgt-{secrets.token_hex(4)}"  # short: Ray puts sockets under it
    ray_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SHOPGRAPH_"))}
    env.update(RAY_TMPDIR=str(ray_tmp), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))  # so that stop_head below finds the head's state too
    # ports of their own, but Ray's default temp dir (here: private to this test) like a plain `shopgraph cluster up`
    overrides = [o for o in head_overrides() if not o.startswith("cluster.ray.temp_dir=")]
    sets = [a for o in overrides for a in ("--set", o)]

    def shopgraph(*args: str, timeout: float) -> subprocess.CompletedProcess:
        argv = ["shopgraph", *args]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=timeout)

    ray_dir = ray_tmp / "ray"
    before = _tree(ray_tmp)
    try:
        up = shopgraph("cluster", "up", *sets, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (ray_dir / "ray_current_cluster").is_file()
        down = shopgraph("cluster", "down", *sets, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert _tree(ray_tmp) == before, f"left behind by up/down: {sorted(_tree(ray_tmp) - before)[:20]}"
        # A head that died without `down` leaves the same file behind: prepare must not join it either.
        ray_dir.mkdir()
        (ray_dir / "ray_current_cluster").write_text(f"127.0.0.1:{free_ports(1)[0]}")
        tiny = [a for item in SMALL_PIPELINE if item.startswith("data.sample.") for a in ("--set", item)]
        try:
            root = f"artifacts.root={tmp_path / 'artifacts'}"
            prepared = shopgraph("data", "prepare", "--set", root, *tiny, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("`shopgraph data prepare` hung after `cluster down` (joining a stopped head?)")
        assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
        assert "Connecting to existing Ray cluster" not in prepared.stdout + prepared.stderr
    finally:
        stop_head(load_config(overrides=overrides).cluster.ray)  # a no-op after a successful down
        shutil.rmtree(ray_tmp, ignore_errors=True)
