"""`shopgraph cluster deploy` / `rollout-status` against a local stand-in for the Kubernetes API.

No real API server runs here: tests/cluster/kube_standin.py speaks the subset the kubernetes
client uses (discovery, GET/POST/PATCH, dryRun, RayService status), including the failure
modes KubeRay-not-installed (404) and RBAC-forbidden (403).
"""

from __future__ import annotations

import socket

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.kube import readiness
from cluster.manifests import ray_service
from core.config import load_config, profile_path
from tests.cluster.kube_standin import KubeStandin

runner = CliRunner()
FAST = ["--poll", "0.05"]


@pytest.fixture
def kube(tmp_path):
    with KubeStandin() as standin:
        standin.kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
        yield standin


def _deploy(kube, *args: str):
    return runner.invoke(app, ["cluster", "deploy", "--kubeconfig", str(kube.kubeconfig), *FAST, *args])


def test_deploy_creates_everything_and_waits_for_ready(kube):
    result = _deploy(kube)
    assert result.exit_code == 0, result.output
    for line in [
        "namespace/shopgraph created",
        "configmap/shopgraph-config created",
        "persistentvolumeclaim/shopgraph-data created",
        "rayservice.ray.io/shopgraph created",
    ]:
        assert line in result.output
    assert "Ready=False (Initializing" in result.output
    assert "rayservice/shopgraph is ready" in result.output and "apps: shopgraph=RUNNING" in result.output
    stored = kube.objects[("rayservices", "shopgraph", "shopgraph")]
    assert stored["spec"] == ray_service(load_config(profile_path("gpu-cluster")))["spec"]
    assert ("configmaps", "shopgraph", "shopgraph-config") in kube.objects


def test_redeploy_patches_and_waits_for_the_new_generation(kube):
    assert _deploy(kube).exit_code == 0
    result = _deploy(kube, "--set", "cluster.k8s.cpu_workers.max_replicas=9")
    assert result.exit_code == 0, result.output
    assert "rayservice.ray.io/shopgraph configured" in result.output
    assert "persistentvolumeclaim/shopgraph-data unchanged (exists)" in result.output
    stored = kube.objects[("rayservices", "shopgraph", "shopgraph")]
    assert stored["metadata"]["generation"] == 2
    assert stored["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 9
    assert any(m == "PATCH" and p.endswith("/rayservices/shopgraph") for m, p, _ in kube.requests)


def test_dry_run_sends_dry_run_all_and_changes_nothing(kube):
    kube.namespaces["shopgraph"] = {"metadata": {"name": "shopgraph"}}
    result = _deploy(kube, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "rayservice.ray.io/shopgraph created (server dry run)" in result.output
    assert kube.objects == {}
    writes = [(m, q) for m, _, q in kube.requests if m in ("POST", "PATCH")]
    assert writes and all(q.get("dryRun") == ["All"] for _, q in writes)


def test_dry_run_in_a_new_namespace_stops_after_the_namespace(kube):
    result = _deploy(kube, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "namespace/shopgraph created (server dry run)" in result.output and "does not exist yet" in result.output
    assert kube.namespaces == {} and kube.objects == {}


def test_rollout_status_reports_ready_and_not_found(kube):
    status = ["cluster", "rollout-status", "--kubeconfig", str(kube.kubeconfig)]
    missing = runner.invoke(app, status)
    assert missing.exit_code == 1 and "RayService shopgraph not found in namespace shopgraph" in missing.output
    assert "shopgraph cluster deploy" in missing.output
    assert _deploy(kube, "--no-wait").exit_code == 0
    kube._reads_left[("rayservices", "shopgraph", "shopgraph")] = 5
    pending = runner.invoke(app, status)
    assert pending.exit_code == 1 and "Ready=False" in pending.output
    waited = runner.invoke(app, [*status, "--wait", *FAST])
    assert waited.exit_code == 0 and "is ready" in waited.output


def test_deploy_times_out_when_never_ready(tmp_path):
    with KubeStandin(ready_after=10**6) as kube:
        result = runner.invoke(
            app,
            [
                "cluster",
                "deploy",
                "--kubeconfig",
                str(kube.write_kubeconfig(tmp_path / "kc")),
                *FAST,
                "--timeout",
                "0.3",
            ],
        )
    assert result.exit_code == 1
    assert (
        "not ready after 0s" in result.output and "kubectl -n shopgraph describe rayservice shopgraph" in result.output
    )


def test_kuberay_not_installed(tmp_path):
    with KubeStandin(mode="no-crds") as kube:
        result = runner.invoke(app, ["cluster", "deploy", "--kubeconfig", str(kube.write_kubeconfig(tmp_path / "kc"))])
        status = runner.invoke(app, ["cluster", "rollout-status", "--kubeconfig", str(tmp_path / "kc")])
    assert result.exit_code == 1
    assert (
        "KubeRay is not installed" in result.output
        and "ray.io/v1" in result.output
        and "helm install kuberay-operator" in result.output
    )
    assert status.exit_code == 1 and "KubeRay is not installed" in status.output


def test_forbidden_by_rbac(tmp_path):
    with KubeStandin(mode="forbidden") as kube:
        result = runner.invoke(app, ["cluster", "deploy", "--kubeconfig", str(kube.write_kubeconfig(tmp_path / "kc"))])
    assert result.exit_code == 1
    assert "forbidden (HTTP 403)" in result.output and "RBAC" in result.output
    assert 'cannot get resource "rayservices"' in result.output


def test_no_kubeconfig(tmp_path, monkeypatch):
    import kubernetes.config.kube_config as kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = runner.invoke(app, ["cluster", "deploy"])
    assert result.exit_code == 1
    assert "no kubeconfig found" in result.output and "--kubeconfig" in result.output
    explicit = runner.invoke(app, ["cluster", "rollout-status", "--kubeconfig", str(tmp_path / "nope")])
    assert explicit.exit_code == 1 and "not found; pass --kubeconfig" in explicit.output


def test_unreachable_api_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kc = tmp_path / "kc"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    result = runner.invoke(app, ["cluster", "deploy", "--kubeconfig", str(kc)])
    assert result.exit_code == 1 and "cannot reach the Kubernetes API server" in result.output


def test_deploy_refuses_a_config_that_cannot_run_on_kubernetes(kube):
    result = _deploy(kube, "--config", "configs/local.yaml")
    assert result.exit_code == 2 and "models.dir" in result.output and "cluster.k8s.storage.mount_path" in result.output
    assert kube.requests == []


def test_readiness_ignores_status_of_an_older_generation():
    obj = {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}],
        },
    }
    ready, summary = readiness(obj)
    assert not ready and "generation 2" in summary
    obj["status"]["observedGeneration"] = 3
    assert readiness(obj)[0]
    assert readiness({"metadata": {}})[1].startswith("Ready=Unknown")
