"""Typed config of the Kubernetes section (`cluster.k8s:` in the YAML): what the KubeRay
manifests in k8s/ are rendered from.

    shopgraph cluster render --config configs/gpu-cluster.yaml

Quantities (`cpu`, `memory`, `storage.size`) are Kubernetes quantity strings ("4", "500m",
"16Gi"). The defaults describe a small dev cluster; configs/gpu-cluster.yaml the production one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Node groups: the KubeRay worker groups (`cpu`, `gpu`) and the worker nodes `shopgraph cluster up
# --workers/--gpu-workers` starts. Every node of a group offers the custom Ray resource
# `group_<name>` (GROUP_CAPACITY of it); a deployment placed on a group asks for GROUP_SHARE of it,
# so any number of replicas fits on a node and the resource only decides *which* nodes qualify.
NODE_GROUPS = ("cpu", "gpu")
GROUP_CAPACITY = 1000
GROUP_SHARE = 0.001


def group_resource(group: str) -> str:
    """The custom Ray resource that marks the nodes of node group `group` (cpu, gpu)."""
    if group not in NODE_GROUPS:
        raise ValueError(f"unknown node group {group!r}; use one of {', '.join(NODE_GROUPS)}")
    return f"group_{group}"


class HeadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: str = Field(
        "2", pattern=QUANTITY, description="CPU request and limit of the Ray head pod (Kubernetes quantity)."
    )
    memory: str = Field(
        "8Gi", pattern=QUANTITY, description="Memory request and limit of the Ray head pod (Kubernetes quantity)."
    )


class WorkerGroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(
        1, ge=0, description="Workers started with the cluster (the autoscaler moves it between min and max)."
    )
    min_replicas: int = Field(0, ge=0, description="Fewest workers the autoscaler keeps.")
    max_replicas: int = Field(2, ge=1, description="Most workers the autoscaler starts.")
    cpu: str = Field(
        "4", pattern=QUANTITY, description="CPU request and limit of one worker pod (Kubernetes quantity)."
    )
    memory: str = Field(
        "16Gi", pattern=QUANTITY, description="Memory request and limit of one worker pod (Kubernetes quantity)."
    )
    gpus: int = Field(0, ge=0, description="`nvidia.com/gpu` limit of one worker pod; 0 for the CPU group.")

    @model_validator(mode="after")
    def _ordered(self) -> WorkerGroupConfig:
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"need min_replicas <= replicas <= max_replicas, got {self.min_replicas} <= {self.replicas} <= {self.max_replicas}; "
                "change cluster.k8s.<group>.replicas, min_replicas or max_replicas"
            )
        return self


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claim_name: str = Field(
        "shopgraph-data",
        pattern=DNS_LABEL,
        description="Name of the PersistentVolumeClaim that holds artifacts and models.",
    )
    size: str = Field("50Gi", pattern=QUANTITY, description="Requested size of the claim (Kubernetes quantity).")
    storage_class: str | None = Field(
        None, description="StorageClass of the claim (must support ReadWriteMany); None = the cluster's default class."
    )
    mount_path: str = Field(
        "/mnt/shopgraph",
        pattern=r"^/",
        description="Where every Ray pod mounts the claim; artifacts.root and models.dir must lie under it.",
    )


class GcsFaultToleranceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Keep GCS state in an external Redis, so the head can restart without losing Serve applications.",
    )
    redis_address: str = Field(
        "redis:6379", description="host:port of the external Redis (a Service in the same namespace, usually)."
    )
    password_secret: str | None = Field(
        None,
        description="Name of the Kubernetes Secret that holds the Redis password; None = Redis without a password. The password itself never appears in a manifest.",
    )
    password_key: str = Field("password", description="Key inside `password_secret` whose value is the Redis password.")
    exclude_head_from_serve_service: bool = Field(
        True,
        description=(
            "With fault tolerance on, keep the head pod out of the RayService's Serve Service "
            "(`excludeHeadPodFromServeSvc`): traffic goes to the worker pods' proxies only, so a head restart "
            "costs no request in flight (bench/failures.py gcs-kill: the only errors were requests on the head's "
            "proxy when it died)."
        ),
    )


class AutoscalerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the Ray autoscaler in the head pod (`enableInTreeAutoscaling`).")
    idle_timeout_seconds: int = Field(
        60, ge=0, description="Seconds a worker may sit idle before the autoscaler removes it."
    )
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = Field(
        "Default", description="How fast the autoscaler adds workers (KubeRay `upscalingMode`)."
    )


class ServeAppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "shopgraph", pattern=DNS_LABEL, description="Name of the RayService and of its Serve application."
    )
    route_prefix: str = Field("/", pattern=r"^/", description="HTTP route prefix of the Serve application.")
    import_path: str = Field(
        "serve.app:build_app", description="Serve application builder (`module:function`) that the RayService imports."
    )


class PodSecurityConfig(BaseModel):
    """The user Ray pods run as. Every Ray container also gets allowPrivilegeEscalation: false,
    all Linux capabilities dropped and the runtime's default seccomp profile (`cluster.manifests`)."""

    model_config = ConfigDict(extra="forbid")

    run_as_user: int = Field(
        1000, ge=1, description="UID of every Ray container (non-root; 1000 is the `ray` user of Ray's images)."
    )
    run_as_group: int = Field(100, ge=0, description="GID of every Ray container (100, `users`, in Ray's images).")
    fs_group: int = Field(
        100, ge=0, description="Group that owns the mounted volumes, so the shared volume is writable."
    )


class RefreshScheduleConfig(BaseModel):
    """The CronJob that starts the refresh RayJob on a schedule (KubeRay's RayJob has no schedule field)."""

    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        "*/30 * * * *",
        pattern=r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$",
        description="Cron schedule (five fields, UTC unless time_zone is set) of `shopgraph data refresh` as a RayJob.",
    )
    time_zone: str | None = Field(None, description="IANA time zone of `schedule` (CronJob timeZone); None = UTC.")
    suspend: bool = Field(False, description="Keep the CronJob but start no RayJob (pause scheduled refreshes).")
    kubectl_image: str = Field(
        "registry.k8s.io/kubectl:v1.33.0",
        description="Image of the CronJob's one container, which runs `kubectl create` of the refresh RayJob; any image with kubectl on PATH.",
    )


# A Kubernetes label as key=value: an optional DNS prefix, a name, a value of at most 63 characters.
LABEL_PAIR = (
    r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$"
)


class MonitoringConfig(BaseModel):
    """Prometheus and Grafana for the Ray pods (k8s/monitoring.yaml): a PodMonitor (Prometheus
    Operator) that scrapes every node's Ray metrics agent, and the graph's dashboard as a ConfigMap
    that Grafana's dashboard sidecar loads."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Render k8s/monitoring.yaml (PodMonitor + Grafana dashboard ConfigMap).")
    metrics_port: int = Field(
        8080,
        ge=1,
        le=65535,
        description="Port of Ray's metrics agent on every Ray pod (`metrics-export-port`; 8080 is Ray's default), a container port named `metrics`.",
    )
    scrape_interval: str = Field(
        "15s", pattern=r"^[0-9]+(ms|s|m)$", description="How often Prometheus scrapes each pod (PodMonitor interval)."
    )
    prometheus_label: str = Field(
        "release=prometheus",
        pattern=LABEL_PAIR,
        description="`key=value` label on the PodMonitor that the Prometheus resource's podMonitorSelector matches (kube-prometheus-stack: release=<its release name>).",
    )
    grafana_label: str = Field(
        "grafana_dashboard=1",
        pattern=LABEL_PAIR,
        description="`key=value` label on the dashboard ConfigMap that Grafana's dashboard sidecar looks for.",
    )

    @staticmethod
    def label(pair: str) -> dict[str, str]:
        key, _, value = pair.partition("=")
        return {key: value}


class K8sConfig(BaseModel):
    """What `shopgraph cluster render` writes into k8s/ and `shopgraph cluster deploy` applies."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        "shopgraph:0.1.0",
        description="Container image of every Ray pod: Ray 2.60 plus this repository under `app_dir`.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of every Ray container."
    )
    app_dir: str = Field(
        "/app", pattern=r"^/", description="Where the image holds this repository; jobs and Serve run from there."
    )
    ray_version: str = Field("2.60.0", description="Ray version inside `image` (KubeRay `rayVersion`).")
    head: HeadConfig = Field(default_factory=HeadConfig, description="Ray head pod; it runs no tasks (`num-cpus: 0`).")
    cpu_workers: WorkerGroupConfig = Field(
        default_factory=WorkerGroupConfig, description="CPU worker group (data stages, ranker, Serve ingress)."
    )
    gpu_workers: WorkerGroupConfig = Field(
        default_factory=lambda: WorkerGroupConfig(
            replicas=0, min_replicas=0, max_replicas=1, cpu="8", memory="32Gi", gpus=1
        ),
        description="GPU worker group (LM training, vLLM generator).",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Shared volume for artifacts and models.")
    pod_security: PodSecurityConfig = Field(
        default_factory=PodSecurityConfig, description="Non-root user and group of the Ray pods."
    )
    gcs_ft: GcsFaultToleranceConfig = Field(
        default_factory=GcsFaultToleranceConfig, description="GCS fault tolerance with an external Redis."
    )
    autoscaler: AutoscalerConfig = Field(
        default_factory=AutoscalerConfig, description="Ray autoscaler inside the head pod."
    )
    serve_app: ServeAppConfig = Field(
        default_factory=ServeAppConfig, description="The RayService and its Serve application."
    )
    refresh: RefreshScheduleConfig = Field(
        default_factory=RefreshScheduleConfig,
        description="Scheduled incremental refresh: a CronJob that creates the refresh RayJob (k8s/cronjob-refresh.yaml).",
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Prometheus PodMonitor for the Ray metrics port and the Grafana dashboard (k8s/monitoring.yaml).",
    )
    kubernetes_version: str = Field(
        "1.33", pattern=r"^\d+\.\d+$", description="Kubernetes minor version the core objects are validated against."
    )
