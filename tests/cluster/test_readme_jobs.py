"""Every `ray job submit` row of README.md ("Batch stages as Ray jobs") works as written.

    .venv/bin/python -m pytest -q tests/cluster/test_readme_jobs.py

The rows are parsed out of README.md here, so the README and this test cannot drift. Each
row must name the stage's module from `cluster.stages` and run `--help` through the row's own
command line. Three rows run for real, in a fresh shell's environment (no RAY_* variables,
HOME with a `~/.ray/auth_token` as any earlier `ray.init()` leaves behind), against a head
that `shopgraph cluster up` started: smoke verbatim, prepare on a tiny sample (`--set`
appended), then splits verbatim, which must find what prepare wrote. Only the dashboard
address is swapped for the test head's free port.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster.local import stop_head
from cluster.stages import STAGES
from core.config import load_config
from tests.cluster.ray_ports import head_overrides
from tests.conftest import REPO, SMALL_PIPELINE

README_ADDRESS = "http://127.0.0.1:8265"  # the head of `shopgraph cluster up` with the default config
RUN_FOR_REAL = ("smoke", "prepare", "splits")


def readme_rows() -> dict[str, str]:
    """stage -> the `ray job submit ...` command of its row in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`ray job submit"):
            rows[cells[0]] = cells[2].strip("`")
    return rows


ROWS = readme_rows()


def parse_row(command: str) -> tuple[dict[str, str], list[str]]:
    """(`ray job submit` options, the entrypoint argv after `--`) of one README row."""
    argv = shlex.split(command)
    assert argv[:3] == ["ray", "job", "submit"], command
    assert "--" in argv, f"no `--` before the entrypoint: {command}"
    split = argv.index("--")
    opts, rest = argv[3:split], argv[split + 1 :]
    assert len(opts) % 2 == 0 and all(o.startswith("--") for o in opts[::2]), (
        f"options are not `--flag value` pairs: {opts}"
    )
    return dict(zip(opts[::2], opts[1::2], strict=True)), rest


def test_the_readme_has_a_row_for_every_stage():
    assert set(ROWS) == set(STAGES), f"README rows {sorted(ROWS)} != stages {sorted(STAGES)}"


@pytest.mark.parametrize("stage", sorted(ROWS))
def test_row_runs_the_stage_module_on_the_up_head(stage):
    opts, entry = parse_row(ROWS[stage])
    assert opts.get("--address") == README_ADDRESS, (
        f"{stage}: add `--address {README_ADDRESS}` (else Ray picks the latest cluster)"
    )
    assert opts.get("--working-dir") == ".", f"{stage}: the row must upload the checkout with `--working-dir .`"
    assert entry[:2] == ["python", "-m"] and entry[3:5] == ["--config", "configs/local.yaml"], entry
    assert entry[2] == STAGES[stage].module, (
        f"{stage}: README runs {entry[2]}, cluster/stages.py {STAGES[stage].module}"
    )
    assert STAGES[stage].module_file(REPO) is not None, f"{stage}: module {entry[2]} is not in this checkout"


def _help(stage: str) -> tuple[str, subprocess.CompletedProcess]:
    _, entry = parse_row(ROWS[stage])
    argv = [sys.executable, *entry[1:], "--help"]  # the row's own entrypoint and arguments, plus --help
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return stage, subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False, timeout=300, env=env)


@pytest.mark.slow
def test_rows_not_run_here_parse_their_arguments_and_print_help():
    stages = [s for s in sorted(ROWS) if s not in RUN_FOR_REAL]
    with ThreadPoolExecutor(max_workers=2) as pool:  # a fresh interpreter each: a few seconds on 2 cores
        results = dict(pool.map(_help, stages))
    failures = [
        f"{ROWS[s]} --help: exit {p.returncode}\n{(p.stderr or p.stdout)[-1500:]}"
        for s, p in results.items()
        if p.returncode != 0 or "usage" not in p.stdout.lower()
    ]
    assert not failures, "\n\n".join(failures)


def fresh_shell_env(home: Path) -> dict[str, str]:
    """A new login's environment: this venv on PATH, no RAY_* or shopgraph variables, a token in ~/.ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SHOPGRAPH_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # what any local ray.init() leaves
    return env


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def up_head(tmp_path_factory):
    """`shopgraph cluster up` run in a scratch directory (relative artifacts land there), on free ports."""
    base = tmp_path_factory.mktemp("readme-jobs")
    env = fresh_shell_env(base / "home")
    overrides = head_overrides()
    ray_cfg = load_config(overrides=overrides).cluster.ray
    try:
        up = subprocess.run(
            ["shopgraph", "cluster", "up", *_sets(overrides)],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"base": base, "env": env, "url": f"http://127.0.0.1:{ray_cfg.dashboard_port}", "up": up.stdout}
    finally:
        down = subprocess.run(
            ["shopgraph", "cluster", "down", *_sets(overrides)],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if down.returncode != 0:
            stop_head(ray_cfg)
        shutil.rmtree(ray_cfg.temp_dir, ignore_errors=True)


def run_row(stage: str, head: dict, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """The README row verbatim from the repository root, with the test head's address (and `extra` args)."""
    command = ROWS[stage].replace(f"--address {README_ADDRESS} ", f"--address {head['url']} ")
    argv = shlex.split(command) + (extra or [])
    return subprocess.run(argv, cwd=REPO, env=head["env"], capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.slow
def test_up_says_how_to_submit(up_head):
    assert "auth:        none (RAY_AUTH_MODE=disabled)" in up_head["up"]
    assert f"against {up_head['base']}" in up_head["up"]


@pytest.mark.slow
def test_smoke_row_runs_as_written(up_head):
    result = run_row("smoke", up_head)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sum of squares 0..7 = 140" in result.stdout
    # a relative artifacts.root resolves against where `up` ran, not the job's working_dir copy
    assert (
        f"smoke: artifacts.root={up_head['base'] / 'artifacts'} models.dir={up_head['base'] / 'models'}"
        in result.stdout
    )


@pytest.mark.slow
def test_prepare_then_splits_rows_run_as_written(up_head):
    tiny = [a for item in SMALL_PIPELINE if item.startswith("data.sample.") for a in ("--set", item)]
    prepared = run_row("prepare", up_head, tiny)
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    assert (up_head["base"] / "artifacts" / "data" / "events").is_dir()
    split = run_row("splits", up_head)
    assert split.returncode == 0, split.stdout[-3000:] + split.stderr[-3000:]
    assert "Found multiple active Ray instances" not in split.stdout + split.stderr
    assert (up_head["base"] / "artifacts" / "data" / "splits").is_dir()
    assert re.search(r"succeeded", split.stdout), split.stdout[-2000:]
