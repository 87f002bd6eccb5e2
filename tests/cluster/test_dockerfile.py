"""The image the manifests name (`cluster.k8s.image`) is built by the repository's Dockerfile:
its base, paths, user, entrypoints and ports agree with the rendered KubeRay manifests. Building
it needs a container runtime and Docker Hub, neither of which this machine has; this reads it.

    pytest -q tests/cluster/test_dockerfile.py
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from cluster.manifests import render
from core.config import load_config, profile_path
from tests.cluster.test_manifests import _containers

REPO = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return {k: v for op, rest in _instructions() if op == "ARG" and "=" in rest for k, v in [rest.split("=", 1)]}


def _resolve(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


@pytest.fixture(scope="module")
def cfg():
    return load_config(profile_path("gpu-cluster"))


@pytest.fixture(scope="module")
def manifests(cfg):
    return [o for objs in render(cfg).values() for o in objs]


def _ray_containers(manifests):
    return [c for o in manifests if o["apiVersion"].startswith("ray.io") for c in _containers(o)]


def test_the_base_is_the_ray_image_of_the_manifests_and_the_projects_python(cfg):
    args = _args()
    (base,) = [_resolve(rest, args) for op, rest in _instructions() if op == "FROM"]
    assert base == f"rayproject/ray:{cfg.cluster.k8s.ray_version}-py311-gpu"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"ray[serve,train,data]=={cfg.cluster.k8s.ray_version}" in pyproject["project"]["dependencies"]
    assert pyproject["project"]["requires-python"] == ">=3.11" and args["PYTHON_TAG"] == "py311"
    assert args["VARIANT"] in ("cpu", "gpu") and {"cpu", "gpu"} <= set(pyproject["project"]["optional-dependencies"])
    assert (REPO / "requirements" / "cpu.lock").is_file()


def test_the_code_lives_where_the_pods_run_it(cfg, manifests):
    app = cfg.cluster.k8s.app_dir
    ops = _instructions()
    assert ("WORKDIR", app) in ops and ("ENV", f"PYTHONPATH={app}") in ops
    containers = _ray_containers(manifests)
    assert containers
    for c in containers:
        assert c["image"] == cfg.cluster.k8s.image and c["workingDir"] == app
        assert {"name": "PYTHONPATH", "value": app} in c["env"]
    copied = {rest.split()[-2].rstrip("/") for op, rest in ops if op == "COPY" and not rest.endswith("./")}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied  # every package of the project


def test_every_entrypoint_the_manifests_run_is_in_the_image(manifests):
    copied = {rest.split()[-2].rstrip("/") for op, rest in _instructions() if op == "COPY"}
    jobs = [o for o in manifests if o["kind"] == "RayJob"]
    assert jobs
    for job in jobs:
        m = re.fullmatch(r"python -m ([\w.]+) --config (\S+)", job["spec"]["entrypoint"])
        assert m, job["spec"]["entrypoint"]
        module = Path(*m.group(1).split("."))
        assert module.parts[0] in copied and (REPO / module.with_suffix(".py")).is_file(), m.group(1)
    (service,) = [o for o in manifests if o["kind"] == "RayService"]
    (app,) = re.findall(r"import_path: (\S+)", service["spec"]["serveConfigV2"])
    module, func = app.split(":")
    assert module.split(".")[0] in copied and f"def {func}(" in (REPO / f"{module.replace('.', '/')}.py").read_text()


def test_the_pods_user_is_the_images_user(cfg):
    users = [rest for op, rest in _instructions() if op == "USER"]
    assert users[-1] == "ray"  # uid 1000, gid 100 (users) in Ray's images
    sec = cfg.cluster.k8s.pod_security
    assert (sec.run_as_user, sec.run_as_group) == (1000, 100)


def test_every_port_the_manifests_use_is_exposed(manifests):
    (exposed,) = [set(map(int, rest.split())) for op, rest in _instructions() if op == "EXPOSE"]
    used = set()
    for c in _ray_containers(manifests):
        used |= {p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in c:
                used.add(c[probe].get("httpGet", {}).get("port"))
    used.discard(None)
    assert used and used <= exposed, used - exposed


def test_the_build_context_leaves_out_local_state():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "models", "artifacts"} <= ignored
    assert not ignored & {"core", "ml", "data", "train", "serve", "cluster", "configs", "requirements"}
