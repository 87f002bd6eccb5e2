"""k8s/ manifests: valid against the KubeRay CRDs and core schemas, identical to what the
renderer produces from the shipped config, and shaped the way the issue asks.

The CRDs are read from $SHOPGRAPH_KUBERAY_CRDS (default: <shared>/kuberay-crds); they are
never copied into this repository.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.manifest_schema import CRD_FILES, validate, validate_core, validate_kuberay
from cluster.manifests import K8S_DIR, config_path_in_pod, ray_service, render, render_texts
from cluster.stages import STAGES
from core.config import load_config, profile_path
from tests.conftest import SHARED

runner = CliRunner()
SOURCE = "configs/gpu-cluster.yaml"
CHECKED_IN = sorted(K8S_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    path = Path(os.environ.get("SHOPGRAPH_KUBERAY_CRDS", SHARED / "kuberay-crds"))
    missing = [f for f in CRD_FILES.values() if not (path / f).is_file()]
    if missing:
        pytest.skip(
            f"KubeRay CRDs not found in {path} (missing {', '.join(missing)}); set SHOPGRAPH_KUBERAY_CRDS to a directory with the KubeRay v1 CRDs"
        )
    return path


@pytest.fixture(scope="module")
def gpu_cfg():
    return load_config(profile_path("gpu-cluster"))


def _objects(path: Path) -> list[dict]:
    return [o for o in yaml.safe_load_all(path.read_text(encoding="utf-8")) if o]


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: p.name)
def test_checked_in_manifest_validates(path, crd_dir, gpu_cfg):
    for obj in _objects(path):
        assert validate(obj, crd_dir, gpu_cfg.cluster.k8s.kubernetes_version) == [], f"{path.name}: {obj['kind']}"


def test_checked_in_manifests_match_the_renderer(gpu_cfg):
    texts = render_texts(gpu_cfg, SOURCE)
    assert sorted(texts) == [p.name for p in CHECKED_IN], (
        "k8s/ has missing or extra files; run `shopgraph cluster render`"
    )
    for name, text in texts.items():
        assert (K8S_DIR / name).read_text(encoding="utf-8") == text, (
            f"k8s/{name} drifted; run `shopgraph cluster render`"
        )


def test_render_check_cli(tmp_path):
    ok = runner.invoke(app, ["cluster", "render", "--check"])
    assert ok.exit_code == 0, ok.output
    out = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, out)
    (out / "rayservice.yaml").write_text(
        (out / "rayservice.yaml").read_text().replace("maxReplicas: 8", "maxReplicas: 80")
    )
    (out / "rayjob-gone.yaml").write_text("# Rendered by `shopgraph cluster render --config x`; do not edit by hand.\n")
    drift = runner.invoke(app, ["cluster", "render", "--check", "--out", str(out)])
    assert drift.exit_code == 1
    assert (
        "rayservice.yaml" in drift.output
        and "rayjob-gone.yaml" in drift.output
        and "shopgraph cluster render" in drift.output
    )
    fixed = runner.invoke(app, ["cluster", "render", "--out", str(out)])
    assert fixed.exit_code == 0 and not (out / "rayjob-gone.yaml").exists()
    assert runner.invoke(app, ["cluster", "render", "--check", "--out", str(out)]).exit_code == 0


def test_rendering_is_deterministic(gpu_cfg):
    assert render_texts(gpu_cfg, SOURCE) == render_texts(load_config(profile_path("gpu-cluster")), SOURCE)


def test_local_profile_cannot_be_rendered():
    result = runner.invoke(app, ["cluster", "render", "--config", "configs/local.yaml", "--check"])
    assert result.exit_code == 2
    assert "models.dir" in result.output and "cluster.k8s.storage.mount_path" in result.output


def test_validators_catch_typos_and_wrong_types(crd_dir, gpu_cfg):
    service = ray_service(gpu_cfg)
    typo = copy.deepcopy(service)
    typo["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    assert any("rayStartParam" in e for e in validate_kuberay(typo, crd_dir))
    wrong = copy.deepcopy(service)
    wrong["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in e for e in validate_kuberay(wrong, crd_dir))
    container = copy.deepcopy(service)
    container["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = (
        "Always"
    )
    assert validate_kuberay(container, crd_dir)
    pvc = render(gpu_cfg)["00-core.yaml"][2]
    assert validate_core(pvc, "1.33") == []
    bad_pvc = copy.deepcopy(pvc)
    bad_pvc["spec"]["accesModes"] = ["ReadWriteMany"]
    assert validate_core(bad_pvc, "1.33")


def test_rayservice_shape(gpu_cfg):
    spec = ray_service(gpu_cfg)["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == str(gpu_cfg.cluster.k8s.gpu_workers.gpus)
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert groups["gpu"]["minReplicas"] == gpu_cfg.cluster.k8s.gpu_workers.min_replicas
    assert groups["gpu"]["maxReplicas"] == gpu_cfg.cluster.k8s.gpu_workers.max_replicas
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    for pod in [cluster["headGroupSpec"]["template"], *(g["template"] for g in groups.values())]:
        container = pod["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"] and container["livenessProbe"]["httpGet"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/mnt/shopgraph", "/etc/shopgraph"} <= mounts


def test_serve_config_parses_with_serves_own_schema(gpu_cfg):
    from ray.serve.schema import ServeDeploySchema

    serve = ServeDeploySchema.model_validate(yaml.safe_load(ray_service(gpu_cfg)["spec"]["serveConfigV2"]))
    (application,) = serve.applications
    assert application.import_path == "serve.app:build_app"
    assert application.args == {"config_path": config_path_in_pod()}
    assert application.route_prefix == "/" and application.name == "shopgraph"
    assert serve.http_options.port == gpu_cfg.serve.http.port


def test_configmap_holds_the_config_the_pods_load(gpu_cfg, tmp_path):
    config_map = render(gpu_cfg)["00-core.yaml"][1]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    assert load_config(path) == gpu_cfg
    assert gpu_cfg.models.dir.startswith(gpu_cfg.cluster.k8s.storage.mount_path)
    assert gpu_cfg.artifacts.root.startswith(gpu_cfg.cluster.k8s.storage.mount_path)


def test_gcs_fault_tolerance_references_a_secret_only(crd_dir, gpu_cfg):
    cluster = ray_service(gpu_cfg)["spec"]["rayClusterConfig"]
    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "redis:6379"
    assert ft["redisPassword"] == {"valueFrom": {"secretKeyRef": {"name": "redis-password", "key": "password"}}}
    assert all(o["kind"] != "Secret" for path in CHECKED_IN for o in _objects(path))
    off = load_config(profile_path("gpu-cluster"), ["cluster.k8s.gcs_ft.enabled=false"])
    service = ray_service(off)
    assert "gcsFaultToleranceOptions" not in service["spec"]["rayClusterConfig"]
    assert validate_kuberay(service, crd_dir) == []
    no_password = ray_service(load_config(profile_path("gpu-cluster"), ["cluster.k8s.gcs_ft.password_secret=null"]))
    assert "redisPassword" not in no_password["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]


def test_with_fault_tolerance_the_head_pod_takes_no_serve_traffic(crd_dir, gpu_cfg):
    """A head restart must not cut requests in flight: KubeRay keeps the head out of the Serve Service."""
    service = ray_service(gpu_cfg)
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    assert validate_kuberay(service, crd_dir) == []
    for overrides in (
        ["cluster.k8s.gcs_ft.enabled=false"],  # one head, no restart to survive: it serves too
        ["cluster.k8s.gcs_ft.exclude_head_from_serve_service=false"],
    ):
        spec = ray_service(load_config(profile_path("gpu-cluster"), overrides))["spec"]
        assert "excludeHeadPodFromServeSvc" not in spec


def test_the_serving_pods_share_the_content_cache_through_the_gcs_redis(gpu_cfg):
    """serve.cache.redis_url names the Redis of GCS fault tolerance: the RayService's pods get its
    password from that Secret (referenced, never written); batch jobs serve nothing and get none."""
    cache, ft = gpu_cfg.serve.cache, gpu_cfg.cluster.k8s.gcs_ft
    assert cache.redis_url and cache.redis_url.startswith(f"redis://{ft.redis_address}/")
    ref = {"secretKeyRef": {"name": ft.password_secret, "key": ft.password_key}}
    service = list(_containers(ray_service(gpu_cfg)))
    assert service and all({"name": cache.password_env, "valueFrom": ref} in c["env"] for c in service)
    jobs = [
        c for name, objs in render(gpu_cfg).items() if name.startswith("rayjob-") for o in objs for c in _containers(o)
    ]
    assert jobs and not [c for c in jobs if any(e["name"] == cache.password_env for e in c["env"])]
    no_cache = ray_service(load_config(profile_path("gpu-cluster"), ["serve.cache.redis_url=null"]))
    assert not [c for c in _containers(no_cache) if any(e["name"] == cache.password_env for e in c["env"])]


def test_one_rayjob_per_stage(gpu_cfg):
    files = render(gpu_cfg)
    for stage in STAGES.values():
        (job,) = files[f"rayjob-{stage.name}.yaml"]
        assert job["spec"]["entrypoint"] == f"python -m {stage.module} --config {config_path_in_pod()}"
        groups = {g["groupName"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
        assert groups == ({"cpu", "gpu"} if stage.gpu else {"cpu"})
        assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_bad_k8s_config_values_name_the_key():
    result = runner.invoke(app, ["cluster", "render", "--check", "--set", "cluster.k8s.gpu_workers.min_replicas=9"])
    assert (
        result.exit_code == 2
        and "cluster.k8s.gpu_workers" in result.output
        and "min_replicas <= replicas" in result.output
    )
    result = runner.invoke(app, ["cluster", "render", "--check", "--set", "cluster.k8s.head.memory=lots"])
    assert result.exit_code == 2 and "cluster.k8s.head.memory" in result.output


def _containers(obj):
    """Every container spec anywhere in a manifest object."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _containers(item)


def test_every_ray_pod_gets_the_pseudonym_keys_from_the_secret_never_a_value(gpu_cfg):
    name, p = gpu_cfg.privacy.key_env, gpu_cfg.privacy
    # Ray pods only: the refresh CronJob's kubectl container runs no shopgraph code
    containers = [
        c for path in CHECKED_IN for o in _objects(path) if o["apiVersion"].startswith("ray.io") for c in _containers(o)
    ]
    assert containers
    for c in containers:
        env = [e for e in c.get("env", []) if e["name"] == name]
        assert env == [{"name": name, "valueFrom": {"secretKeyRef": {"name": p.secret_name, "key": p.secret_key}}}], c
    assert p.require_key  # the cluster profile refuses to start without it (no generated key on a cluster)


def test_the_refresh_runs_on_a_schedule_through_a_cronjob(crd_dir, gpu_cfg):
    """The RayJob CRD has no schedule field: a CronJob creates the refresh RayJob, which lives in a
    ConfigMap (generateName: one RayJob per run), as an account that may only create RayJobs."""
    from cluster.manifests import REFRESH_RAYJOB_FILE, ray_job

    crd = (crd_dir / CRD_FILES["RayJob"]).read_text(encoding="utf-8")
    assert "schedule:" not in crd.replace("schedulerName:", "")  # if KubeRay adds one, use it instead
    objects = {o["kind"]: o for o in render(gpu_cfg)["cronjob-refresh.yaml"]}
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    job = yaml.safe_load(objects["ConfigMap"]["data"][REFRESH_RAYJOB_FILE])
    assert validate_kuberay(job, crd_dir) == []
    assert "name" not in job["metadata"] and job["metadata"]["generateName"] == "shopgraph-refresh-"
    assert job["spec"] == ray_job(gpu_cfg, STAGES["refresh"])["spec"]
    assert job["spec"]["entrypoint"] == f"python -m train.refresh --config {config_path_in_pod()}"
    cron = objects["CronJob"]["spec"]
    assert cron["schedule"] == gpu_cfg.cluster.k8s.refresh.schedule and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["kubectl", "create"] and container["command"][-1].endswith(REFRESH_RAYJOB_FILE)
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert objects["Role"]["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    for obj in objects.values():
        assert validate(obj, crd_dir, gpu_cfg.cluster.k8s.kubernetes_version) == [], obj["kind"]
    paused = load_config(profile_path("gpu-cluster"), ["cluster.k8s.refresh.suspend=true",
                                                       "cluster.k8s.refresh.time_zone=Europe/Berlin"])  # fmt: skip
    cron = {o["kind"]: o for o in render(paused)["cronjob-refresh.yaml"]}["CronJob"]["spec"]
    assert cron["suspend"] is True and cron["timeZone"] == "Europe/Berlin"


def test_a_bad_refresh_schedule_names_the_key():
    result = runner.invoke(app, ["cluster", "render", "--check", "--set", "cluster.k8s.refresh.schedule=hourly"])
    assert result.exit_code == 2 and "cluster.k8s.refresh.schedule" in result.output


def test_worker_groups_offer_the_resource_that_deployments_placed_on_them_ask_for(gpu_cfg):
    import json
    import shlex

    groups = {g["groupName"]: g for g in ray_service(gpu_cfg)["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    offered = {}
    for name, group in groups.items():
        # KubeRay runs `ray start --resources=<value>` through a shell: the value must survive it as JSON
        (arg,) = shlex.split(f"--resources={group['rayStartParams']['resources']}")
        offered[name] = json.loads(arg.removeprefix("--resources="))
    assert offered == {"cpu": {"group_cpu": 1000}, "gpu": {"group_gpu": 1000}}
    deps = gpu_cfg.serve.deployments
    for dep in ("ingress", "retriever", "ranker", "generator"):
        settings = getattr(deps, dep)
        asked = settings.options()["ray_actor_options"]["resources"]
        assert asked == {f"group_{settings.node_group}": 0.001}, dep
        assert all(k in offered[settings.node_group] for k in asked)
    assert deps.generator.node_group == "gpu" and deps.ingress.node_group == "cpu"
