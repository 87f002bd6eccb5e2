"""Render the KubeRay manifests in k8s/ from the typed config.

    shopgraph cluster render [--config configs/gpu-cluster.yaml] [--check]

One RayService (Serve application `cluster.k8s.serve_app`), one RayJob per batch stage of
`cluster.stages.STAGES`, a CronJob that starts the refresh RayJob on a schedule
(`cluster.k8s.refresh`), a dev RayCluster, and the core objects they need: the Namespace,
a ConfigMap holding the resolved shopgraph config (mounted at /etc/shopgraph in every Ray
pod), and the PersistentVolumeClaim for artifacts and models. Output is deterministic
(same config -> same bytes), so a test can compare it with the checked-in files.
Secrets are only referenced (`secretKeyRef`), never written; a config value with a password in a
URI is refused. Every Ray container runs as a non-root user, without privilege escalation and
with every Linux capability dropped (`cluster.k8s.pod_security`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from cluster.monitoring import METRICS_PORT_NAME, dashboard_config_map, pod_monitor
from cluster.stages import REPO_ROOT, STAGES, Stage
from core.config import ConfigError, ShopgraphConfig, dump_config
from core.config.k8s import GROUP_CAPACITY, K8sConfig, WorkerGroupConfig, group_resource

K8S_DIR = REPO_ROOT / "k8s"
CONFIG_MOUNT = "/etc/shopgraph"
CONFIG_FILE = "config.yaml"
CONFIG_MAP = "shopgraph-config"
# Ports Ray uses inside the pods (KubeRay's defaults; the head Service exposes them).
GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, AGENT_PORT = 6379, 8265, 10001, 52365

Obj = dict[str, Any]


def config_path_in_pod() -> str:
    return f"{CONFIG_MOUNT}/{CONFIG_FILE}"


# user:password@ inside a URI (s3://key:secret@bucket, redis://:pw@host): a credential in config
_URI_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@", re.IGNORECASE)


def _credential_keys(value: Any, path: str = "") -> list[str]:
    """Config keys whose value carries a password inside a URI: it would be written to the ConfigMap."""
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in _credential_keys(v, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _credential_keys(v, f"{path}.{i}")]
    return [path] if isinstance(value, str) and _URI_CREDENTIALS.search(value) else []


def check_renderable(cfg: ShopgraphConfig) -> None:
    """Pods read artifacts and models from the shared volume: the paths must lie under its mount.
    No config value may carry a credential: the whole config is written to a ConfigMap."""
    mount = cfg.cluster.k8s.storage.mount_path.rstrip("/") + "/"
    problems = [
        f"{key} holds a password inside a URI; the config is written to a ConfigMap in clear: give the "
        "credential to the pods through a Kubernetes Secret (e.g. the object store's own environment variables)"
        for key in _credential_keys(cfg.model_dump(mode="json"))
    ]
    if not cfg.models.dir.startswith(mount):
        problems.append(
            f"models.dir is {cfg.models.dir!r}; set it under cluster.k8s.storage.mount_path ({mount}models)"
        )
    if "://" not in cfg.artifacts.root and not cfg.artifacts.root.startswith(mount):
        problems.append(
            f"artifacts.root is {cfg.artifacts.root!r}; set it under cluster.k8s.storage.mount_path ({mount}artifacts) or to a URI (s3://...)"
        )
    if problems:
        raise ConfigError(
            "cannot render Kubernetes manifests:\n  "
            + "\n  ".join(problems)
            + "\n  (use --config configs/gpu-cluster.yaml)"
        )


def _labels(cfg: ShopgraphConfig, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "shopgraph",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": cfg.cluster.k8s.serve_app.name,
    }


def _meta(cfg: ShopgraphConfig, name: str, component: str) -> Obj:
    return {"name": name, "namespace": cfg.cluster.namespace, "labels": _labels(cfg, component)}


def _resources(cpu: str, memory: str, gpus: int = 0) -> Obj:
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def _probe(path: str, port: int, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 10,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _pod(
    cfg: ShopgraphConfig,
    name: str,
    resources: Obj,
    ports: list[Obj],
    probes: tuple[str, int],
    gpu: bool,
    component: str,
) -> Obj:
    k8s = cfg.cluster.k8s
    path, port = probes
    container = {
        "name": name,
        "image": k8s.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "workingDir": k8s.app_dir,
        # Serve imports `serve.app:build_app` in Ray workers: put the repository on their path.
        # Serve's start-up settings (serve.http.proxy) are read from the environment of Ray's processes.
        "env": [
            {"name": "PYTHONPATH", "value": k8s.app_dir},
            *({"name": k, "value": v} for k, v in sorted(cfg.serve.http.ray_env().items())),
            _pseudonym_keys_env(cfg),
            *_db_password(cfg),
            *(_cache_password(cfg) if component == "rayservice" else []),
        ],
        "resources": resources,
        "volumeMounts": [
            {"name": "shopgraph-data", "mountPath": k8s.storage.mount_path},
            {"name": "shopgraph-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        ],
        # Ray's own health endpoints (503 when unhealthy): raylet via the dashboard agent, GCS via the dashboard.
        "livenessProbe": _probe("/api/local_raylet_healthz", AGENT_PORT, period=15, failures=5),
        "readinessProbe": _probe(path, port, period=10, failures=3),
        # Ray needs no privilege: no capability, no escalation. The root filesystem stays writable
        # (Ray writes its session under /tmp/ray and pip caches under $HOME).
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if ports:
        container["ports"] = ports
    sec = k8s.pod_security
    spec: Obj = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": sec.run_as_user,
            "runAsGroup": sec.run_as_group,
            "fsGroup": sec.fs_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "shopgraph-data", "persistentVolumeClaim": {"claimName": k8s.storage.claim_name}},
            {"name": "shopgraph-config", "configMap": {"name": CONFIG_MAP}},
        ],
    }
    if gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": _labels(cfg, component)}, "spec": spec}


def _head(cfg: ShopgraphConfig, component: str, *, serve: bool, num_cpus_zero: bool = True) -> Obj:
    k8s = cfg.cluster.k8s
    ports = [
        {"containerPort": GCS_PORT, "name": "gcs-server"},
        {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
        {"containerPort": CLIENT_PORT, "name": "client"},
        _metrics_port(cfg),
    ]
    if serve:
        ports.append({"containerPort": cfg.serve.http.port, "name": "serve"})
    params = {"dashboard-host": "0.0.0.0", "metrics-export-port": str(k8s.monitoring.metrics_port)}
    if num_cpus_zero:
        params["num-cpus"] = "0"  # the head schedules, it does not run tasks or replicas
    pod = _pod(
        cfg,
        "ray-head",
        _resources(k8s.head.cpu, k8s.head.memory),
        ports,
        ("/api/gcs_healthz", DASHBOARD_PORT),
        gpu=False,
        component=component,
    )
    return {"rayStartParams": params, "template": pod}


def _metrics_port(cfg: ShopgraphConfig) -> Obj:
    """Ray's metrics agent on every Ray pod, named for the PodMonitor (cluster.monitoring)."""
    return {"containerPort": cfg.cluster.k8s.monitoring.metrics_port, "name": METRICS_PORT_NAME}


def _worker_group(
    cfg: ShopgraphConfig, name: str, group: WorkerGroupConfig, component: str, replicas: int | None = None
) -> Obj:
    pod = _pod(
        cfg,
        "ray-worker",
        _resources(group.cpu, group.memory, group.gpus),
        [_metrics_port(cfg)],
        ("/api/local_raylet_healthz", AGENT_PORT),
        gpu=group.gpus > 0,
        component=component,
    )
    return {
        "groupName": name,
        "replicas": group.replicas if replicas is None else replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        # The group's custom resource, which deployments placed on it ask for (serve.deployments.*.node_group);
        # the autoscaler reads it too, to know which group to grow for a pending replica. KubeRay
        # passes the value to `ray start --resources=` through a shell: the JSON stays quoted.
        "rayStartParams": {
            "resources": _quoted_json({group_resource(name): GROUP_CAPACITY}),
            "metrics-export-port": str(cfg.cluster.k8s.monitoring.metrics_port),
        },
        "template": pod,
    }


def _quoted_json(value: Obj) -> str:
    return '"' + json.dumps(value).replace('"', '\\"') + '"'


def _autoscaling(k8s: K8sConfig) -> Obj:
    if not k8s.autoscaler.enabled:
        return {"enableInTreeAutoscaling": False}
    return {
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": k8s.autoscaler.upscaling_mode,
            "idleTimeoutSeconds": k8s.autoscaler.idle_timeout_seconds,
            "imagePullPolicy": k8s.image_pull_policy,
            "resources": _resources("500m", "512Mi"),
        },
    }


def _pseudonym_keys_env(cfg: ShopgraphConfig) -> Obj:
    """privacy.key_env from the Secret privacy.secret_name (core.privacy): referenced, never written.
    Optional unless privacy.require_key, so a demo cluster without the Secret falls back to the
    generated key on the shared artifacts volume."""
    p = cfg.privacy
    ref = {"name": p.secret_name, "key": p.secret_key}
    if not p.require_key:
        ref["optional"] = True
    return {"name": p.key_env, "valueFrom": {"secretKeyRef": ref}}


def _db_password(cfg: ShopgraphConfig) -> list[Obj]:
    """The online database's password, from its Secret (only referenced, never written)."""
    online = cfg.online
    if not online.password_secret:
        return []
    ref = {"secretKeyRef": {"name": online.password_secret, "key": online.password_key}}
    return [{"name": online.password_env, "valueFrom": ref}]


def _cache_password(cfg: ShopgraphConfig) -> list[Obj]:
    """The shared content cache's Redis password (serve.cache.password_env): the Redis of GCS fault
    tolerance, so the Secret is cluster.k8s.gcs_ft's (only referenced, never written)."""
    cache, ft = cfg.serve.cache, cfg.cluster.k8s.gcs_ft
    if not (cache.redis_url and cache.password_env and ft.password_secret):
        return []
    return [
        {
            "name": cache.password_env,
            "valueFrom": {"secretKeyRef": {"name": ft.password_secret, "key": ft.password_key}},
        }
    ]


def _gcs_ft(k8s: K8sConfig) -> Obj:
    if not k8s.gcs_ft.enabled:
        return {}
    options: Obj = {"redisAddress": k8s.gcs_ft.redis_address}
    if k8s.gcs_ft.password_secret:
        options["redisPassword"] = {
            "valueFrom": {"secretKeyRef": {"name": k8s.gcs_ft.password_secret, "key": k8s.gcs_ft.password_key}}
        }
    return {"gcsFaultToleranceOptions": options}


def _cluster_spec(cfg: ShopgraphConfig, component: str, *, serve: bool, gpu: bool, gcs_ft: bool) -> Obj:
    k8s = cfg.cluster.k8s
    groups = [_worker_group(cfg, "cpu", k8s.cpu_workers, component)]
    if gpu:
        groups.append(_worker_group(cfg, "gpu", k8s.gpu_workers, component))
    return {
        "rayVersion": k8s.ray_version,
        **_autoscaling(k8s),
        **(_gcs_ft(k8s) if gcs_ft else {}),
        "headGroupSpec": _head(cfg, component, serve=serve),
        "workerGroupSpecs": groups,
    }


def serve_config(cfg: ShopgraphConfig) -> Obj:
    """The Serve deploy config (what `serve deploy` takes) embedded as the RayService's serveConfigV2."""
    app = cfg.cluster.k8s.serve_app
    return {
        "proxy_location": cfg.serve.http.proxy_location,
        "http_options": {"host": "0.0.0.0", "port": cfg.serve.http.port},
        "applications": [
            {
                "name": app.name,
                "route_prefix": app.route_prefix,
                "import_path": app.import_path,
                # The builder's args: it loads and validates the mounted shopgraph config itself.
                "args": {"config_path": config_path_in_pod()},
            }
        ],
    }


def ray_service(cfg: ShopgraphConfig) -> Obj:
    app = cfg.cluster.k8s.serve_app
    out = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(cfg, app.name, "rayservice"),
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": yaml.safe_dump(serve_config(cfg), sort_keys=False),
            "rayClusterConfig": _cluster_spec(cfg, "rayservice", serve=True, gpu=True, gcs_ft=True),
        },
    }
    ft = cfg.cluster.k8s.gcs_ft
    if ft.enabled and ft.exclude_head_from_serve_service:
        out["spec"]["excludeHeadPodFromServeSvc"] = True
    return out


def ray_job(cfg: ShopgraphConfig, stage: Stage) -> Obj:
    name = f"{cfg.cluster.k8s.serve_app.name}-{stage.name}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(cfg, name, "rayjob"),
        "spec": {
            "entrypoint": " ".join(stage.entrypoint(config_path_in_pod())),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "backoffLimit": 0,
            "rayClusterSpec": _cluster_spec(cfg, "rayjob", serve=False, gpu=stage.gpu, gcs_ft=False),
        },
    }


REFRESH_RAYJOB_FILE = "rayjob.yaml"


def refresh_schedule(cfg: ShopgraphConfig) -> list[Obj]:
    """KubeRay's RayJob has no schedule field (CRD v1): a CronJob runs `kubectl create` of the refresh
    RayJob (kept in a ConfigMap, named by `generateName` so every run gets its own), as a service
    account that may create RayJobs and nothing else. Overlapping runs are harmless: a refresh that
    finds another one running exits at once (data.refresh)."""
    k8s, sec = cfg.cluster.k8s, cfg.cluster.k8s.pod_security
    base = f"{k8s.serve_app.name}-refresh"
    job = ray_job(cfg, STAGES["refresh"])
    job["metadata"] = {"generateName": f"{base}-", **{k: v for k, v in job["metadata"].items() if k != "name"}}
    account = _meta(cfg, f"{base}-scheduler", "refresh-schedule")
    mount = "/etc/shopgraph-refresh"
    container = {
        "name": "create-rayjob",
        "image": k8s.refresh.kubectl_image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": ["kubectl", "create", "-f", f"{mount}/{REFRESH_RAYJOB_FILE}"],
        "resources": _resources("100m", "128Mi"),
        "volumeMounts": [{"name": "rayjob", "mountPath": mount, "readOnly": True}],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "serviceAccountName": account["name"],
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": sec.run_as_user,
            "runAsGroup": sec.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "rayjob", "configMap": {"name": f"{base}-rayjob"}}],
    }
    cron: Obj = {
        "schedule": k8s.refresh.schedule,
        "suspend": k8s.refresh.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 300,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": _labels(cfg, "refresh-schedule")},
            "spec": {
                "backoffLimit": 2,
                "template": {"metadata": {"labels": _labels(cfg, "refresh-schedule")}, "spec": pod},
            },
        },
    }
    if k8s.refresh.time_zone:
        cron["timeZone"] = k8s.refresh.time_zone
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(account)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": dict(account),
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(account),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": account["name"], "namespace": cfg.cluster.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(cfg, f"{base}-rayjob", "refresh-schedule"),
            "data": {
                REFRESH_RAYJOB_FILE: yaml.dump(job, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
            },
        },
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(cfg, base, "refresh-schedule"), "spec": cron},
    ]


def dev_cluster(cfg: ShopgraphConfig) -> Obj:
    """A small long-lived RayCluster to `ray job submit` to while developing (CPU only, head runs tasks)."""
    k8s = cfg.cluster.k8s
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _meta(cfg, f"{k8s.serve_app.name}-dev", "raycluster-dev"),
        "spec": {
            "rayVersion": k8s.ray_version,
            "headGroupSpec": _head(cfg, "raycluster-dev", serve=False, num_cpus_zero=False),
            "workerGroupSpecs": [
                _worker_group(cfg, "cpu", k8s.cpu_workers, "raycluster-dev", replicas=k8s.cpu_workers.min_replicas)
            ],
        },
    }


def core_objects(cfg: ShopgraphConfig) -> list[Obj]:
    storage = cfg.cluster.k8s.storage
    pvc_spec: Obj = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class:
        pvc_spec["storageClassName"] = storage.storage_class
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": cfg.cluster.namespace, "labels": _labels(cfg, "namespace")},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(cfg, CONFIG_MAP, "config"),
            "data": {CONFIG_FILE: dump_config(cfg)},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(cfg, storage.claim_name, "storage"),
            "spec": pvc_spec,
        },
    ]


# Components whose pods run Ray (a head or a worker): the ones the PodMonitor scrapes.
RAY_COMPONENTS = ["rayservice", "rayjob", "raycluster-dev"]


def monitoring_objects(cfg: ShopgraphConfig) -> list[Obj]:
    """The PodMonitor for the Ray pods' metrics port and the Grafana dashboard (cluster.monitoring)."""
    return [
        pod_monitor(cfg, _labels(cfg, "monitoring"), RAY_COMPONENTS),
        dashboard_config_map(cfg, _labels(cfg, "monitoring")),
    ]


def render(cfg: ShopgraphConfig) -> dict[str, list[Obj]]:
    """File name under k8s/ -> the objects it holds, in apply order."""
    check_renderable(cfg)
    files = {
        "00-core.yaml": core_objects(cfg),
        "rayservice.yaml": [ray_service(cfg)],
        "raycluster-dev.yaml": [dev_cluster(cfg)],
    }
    for stage in STAGES.values():
        files[f"rayjob-{stage.name}.yaml"] = [ray_job(cfg, stage)]
    files["cronjob-refresh.yaml"] = refresh_schedule(cfg)
    if cfg.cluster.k8s.monitoring.enabled:
        files["monitoring.yaml"] = monitoring_objects(cfg)
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config, serveConfigV2) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_text(objects: list[Obj], source: str) -> str:
    header = f"# Rendered by `shopgraph cluster render --config {source}`; do not edit by hand.\n"
    body = "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120) for o in objects)
    return header + body


def render_texts(cfg: ShopgraphConfig, source: str) -> dict[str, str]:
    return {name: to_text(objects, source) for name, objects in render(cfg).items()}


def write(texts: dict[str, str], out: Path = K8S_DIR) -> list[str]:
    """Write the files, remove stale rendered ones; return the names that changed."""
    out.mkdir(parents=True, exist_ok=True)
    changed = [name for name in diff(texts, out)]
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    for stale in set(_rendered(out)) - set(texts):
        (out / stale).unlink()
    return changed


def _rendered(out: Path) -> list[str]:
    return sorted(
        p.name
        for p in out.glob("*.yaml")
        if p.read_text(encoding="utf-8").startswith("# Rendered by `shopgraph cluster render")
    )


def diff(texts: dict[str, str], out: Path = K8S_DIR) -> list[str]:
    """Names of files that are missing, different or stale compared with `texts`."""
    names = []
    for name, text in texts.items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            names.append(name)
    names += [stale for stale in _rendered(out) if stale not in texts] if out.is_dir() else []
    return sorted(names)
