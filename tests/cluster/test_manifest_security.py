"""No secret in any rendered manifest or ConfigMap, and Ray pods without privilege.

pytest -q tests/cluster/test_manifest_security.py
"""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.manifests import check_renderable, render_texts
from core.config import ConfigError, load_config, profile_path

runner = CliRunner()
PLANTED = {
    "REDIS_PASSWORD": "planted-redis-pw-7c1e",
    "SHOPGRAPH_API_KEY": "sk-planted-api-key-93b2f0",
    "AWS_SECRET_ACCESS_KEY": "planted/aws+secret+key+0d4a",
    "HF_TOKEN": "hf_plantedtoken5521",
    "SHOPGRAPH_HMAC_KEY": "planted-hmac-key-e8a9",
}


def test_no_secret_from_the_environment_or_a_secret_reference_reaches_a_manifest(tmp_path, monkeypatch):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "k8s"
    # a Secret named in config (the Redis password) is referenced by name, never read or written
    result = runner.invoke(
        app,
        ["cluster", "render", "--out", str(out), "--set", "cluster.k8s.gcs_ft.password_secret=redis-credentials"],
    )
    assert result.exit_code == 0, result.output
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*.yaml"))}
    assert len(texts) >= 14 and "00-core.yaml" in texts
    for name, text in texts.items():
        for secret in PLANTED.values():
            assert secret not in text, (name, secret)
        for obj in yaml.safe_load_all(text):
            assert obj is None or obj["kind"] != "Secret", name
    assert "secretKeyRef" in texts["rayservice.yaml"] and "redis-credentials" in texts["rayservice.yaml"]


@pytest.mark.parametrize(
    "override,key",
    [
        ("artifacts.root=s3://AKIAPLANTED:planted-secret-55@bucket/shopgraph", "artifacts.root"),
        ("cluster.k8s.gcs_ft.redis_address=redis://:planted-pw-19@redis:6379", "cluster.k8s.gcs_ft.redis_address"),
    ],
)
def test_a_credential_in_config_is_refused_not_rendered(override, key):
    cfg = load_config(profile_path("gpu-cluster"), [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " holds a password"):
        check_renderable(cfg)
    result = runner.invoke(app, ["cluster", "render", "--check", "--set", override])
    assert result.exit_code == 2 and "planted" not in result.output.replace(key, ""), result.output


def test_ray_pods_run_as_non_root_without_capabilities():
    texts = render_texts(load_config(profile_path("gpu-cluster")), "configs/gpu-cluster.yaml")
    pods = 0
    for name, text in texts.items():
        for obj in yaml.safe_load_all(text):
            if not obj or obj["kind"] not in ("RayService", "RayJob", "RayCluster"):
                continue
            spec = obj["spec"]
            cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
            groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
            for group in groups:
                pod = group["template"]["spec"]
                assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
                assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
                for container in pod["containers"]:
                    sc = container["securityContext"]
                    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
                    assert sc["runAsNonRoot"] is True, (name, container["name"])
                    pods += 1
    assert pods >= 14 * 2  # a head and at least one worker group in each of the 14 Ray objects
