"""Every batch stage points at a module that exists and runs: the stage table (cluster/stages.py)
and every RayJob entrypoint in k8s/ (what `shopgraph cluster submit` and KubeRay run).

Each module is run as `python -m <module> --help` in a subprocess, the way a Ray job starts it:
it must import, exit 0 and print a usage that offers `--config`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from cluster.manifests import K8S_DIR
from cluster.stages import REPO_ROOT, STAGES, StageError, get_stage
from tests.conftest import REPO


def _rayjob_entrypoints() -> dict[str, list[str]]:
    """file name -> the entrypoint's argv, for every RayJob in k8s/."""
    out = {}
    for path in sorted(K8S_DIR.glob("rayjob-*.yaml")):
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if obj and obj.get("kind") == "RayJob":
                out[path.name] = shlex.split(obj["spec"]["entrypoint"])
    return out


def _module_of(argv: list[str]) -> str:
    assert argv[:2] == ["python", "-m"] and len(argv) > 2, f"entrypoint is not `python -m <module> ...`: {argv}"
    return argv[2]


ENTRYPOINTS = _rayjob_entrypoints()
MODULES = sorted({s.module for s in STAGES.values()} | {_module_of(argv) for argv in ENTRYPOINTS.values()})


def test_every_stage_has_a_rayjob_and_every_rayjob_a_stage():
    assert set(ENTRYPOINTS) == {f"rayjob-{name}.yaml" for name in STAGES}
    for name, stage in STAGES.items():
        argv = ENTRYPOINTS[f"rayjob-{name}.yaml"]
        assert _module_of(argv) == stage.module, f"k8s/rayjob-{name}.yaml runs {argv}; run `shopgraph cluster render`"
        assert "--config" in argv


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_module_exists_in_this_checkout(name):
    stage = get_stage(name)  # raises StageError when the module file is missing
    assert stage.module_file(REPO_ROOT) is not None


def test_a_stage_without_its_module_is_refused(tmp_path):
    with pytest.raises(StageError, match=r"module train\.recommender not found"):
        get_stage("train-recommender", root=tmp_path)
    with pytest.raises(StageError, match="choose one of"):
        get_stage("generate_content")


def _help(module: str) -> tuple[str, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    argv = [sys.executable, "-m", module, "--help"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    return module, proc


def test_every_stage_and_rayjob_module_runs_help():
    # In parallel: each is a fresh interpreter importing its command (a few seconds each on 2 cores).
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(_help, MODULES))
    failures = []
    for module, proc in results.items():
        if proc.returncode != 0:
            failures.append(f"python -m {module} --help exited {proc.returncode}: {proc.stderr[-1500:]}")
        elif "usage" not in proc.stdout.lower() or "--config" not in proc.stdout:
            failures.append(f"python -m {module} --help printed no usage with --config:\n{proc.stdout[-1500:]}")
    assert not failures, "\n\n".join(failures)
