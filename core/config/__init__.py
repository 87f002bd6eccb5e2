"""The root config: one typed description of a shopgraph deployment.

    shopgraph cluster show-config --config configs/gpu-cluster.yaml --set train.seed=3

YAML in, `--set dotted.key=value` overrides on top, validated as a whole before any work
starts. Each component reads only its own section (`data`, `train`, `serve`, `cluster`);
`artifacts` and `models` are shared locations. Errors name the key, what was wrong and what
to change.

A relative `artifacts.root` / `models.dir` is relative to the working directory, except in
processes of a head started by `shopgraph cluster up`: it sets SHOPGRAPH_PATHS_BASE, and they
resolve both against that directory. A Ray job runs in an unpacked copy of its working_dir,
where relative outputs would be lost with the job, so a job driver without that variable
refuses relative paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config.data import DataConfig
from core.config.k8s import K8sConfig
from core.config.online import OnlineConfig
from core.config.privacy import PrivacyConfig
from core.config.serve import ServeConfig
from core.config.train import GeneratorEngineConfig, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PROFILES = ("local", "gpu-cluster")
# Set by `shopgraph cluster up` on its head (so in every job driver it runs): the directory a
# relative artifacts.root / models.dir means, instead of the job's unpacked working_dir copy.
PATHS_BASE_ENV = "SHOPGRAPH_PATHS_BASE"


class ConfigError(ValueError):
    """The config cannot be used; the message says which key and what to change."""


class ArtifactsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(
        "artifacts",
        description="Root of every artifact (shards, checkpoints, index, reports): a local path or any URI pyarrow/fsspec understands (s3://, gs://, file://).",
    )

    @field_validator("root")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "must not be empty; use a local path such as 'artifacts' or a URI such as 's3://bucket/shopgraph'"
            )
        protocol = fsspec.utils.get_protocol(value)
        if protocol not in fsspec.available_protocols():
            raise ValueError(
                f"unknown storage protocol '{protocol}://'; use a local path or one of s3://, gs://, abfs://, file://, memory://"
            )
        return value


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str = Field(
        "models",
        description="Local directory that `shopgraph models prepare` fills; vLLM and transformers load from it (must be a local or mounted path).",
    )
    generator: str = Field(
        "smollm2-135m-shopgraph",
        description="Generator base model: the embedded 'smollm2-135m-shopgraph' (SmolLM2-135M-Instruct with shopgraph's committed LoRA adapter merged in) or 'smollm2-135m-instruct' (the plain model), or a path to any local Hugging Face causal-LM directory.",
    )
    encoder: str = Field(
        "all-minilm-l6-v2",
        description="Text encoder: the embedded 'all-minilm-l6-v2', or a path to a local sentence-transformers directory.",
    )

    engine: GeneratorEngineConfig = Field(
        default_factory=GeneratorEngineConfig,
        description="How vLLM runs the generator (serving, batch content generation, evaluation).",
    )

    @field_validator("dir")
    @classmethod
    def _local_path(cls, value: str) -> str:
        if "://" in value and not value.startswith("file://"):
            raise ValueError(
                "must be a local or mounted path (vLLM loads weights from disk); put remote copies under artifacts.root"
            )
        return value.removeprefix("file://")


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None starts a local Ray instance."
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs of the local Ray instance and of the head that `shopgraph cluster up` starts; None = all cores.",
    )
    num_gpus: int | None = Field(
        None, ge=0, description="GPUs of the head that `shopgraph cluster up` starts; None = what Ray detects."
    )
    object_store_memory_mb: int | None = Field(
        None,
        ge=75,
        description="Object store size of the head that `shopgraph cluster up` starts, in MiB; None = Ray's default (30% of RAM).",
    )
    dashboard_host: str = Field(
        "127.0.0.1",
        description="Address the dashboard (and job submission API) of `shopgraph cluster up` binds; 0.0.0.0 to reach it from other machines.",
    )
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Ray dashboard / job submission port.")
    gcs_port: int = Field(
        6379,
        ge=1,
        le=65535,
        description="GCS port of the head that `shopgraph cluster up` starts (the address workers and drivers join).",
    )
    client_server_port: int = Field(
        10001,
        ge=1,
        le=65535,
        description="Ray Client server port of the head that `shopgraph cluster up` starts (ray://host:port).",
    )
    dashboard_agent_listen_port: int = Field(
        52365,
        ge=1,
        le=65535,
        description="HTTP port of the head's dashboard agent; change it when two Ray heads share a machine.",
    )
    temp_dir: str | None = Field(
        None,
        description="Ray's session/log directory for `shopgraph cluster up` (keep it short: Ray puts sockets in it); None = Ray's default under the system temp dir.",
    )


class LocalWorkersConfig(BaseModel):
    """Worker nodes of one node group that `shopgraph cluster up` starts beside the head, on this machine."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(
        0, ge=0, le=16, description="Worker nodes of this group (`--workers` / `--gpu-workers` of `cluster up`)."
    )
    num_cpus: int = Field(
        2,
        ge=0,
        description="Logical CPUs each worker node offers Ray's scheduler (its share of this machine; logical, so 2 per node on a 2-core box is fine). Below 2 the embed stage cannot run: its encoder actors hold 0.5 each and its read task needs 1.",
    )
    num_gpus: int = Field(
        0,
        ge=0,
        description="GPUs each worker node offers; 0 on a machine without one (the node still carries its group's resource, so placement by group works).",
    )
    object_store_memory_mb: int = Field(
        512, ge=75, description="Object store of each worker node, MiB (several nodes share this machine's memory)."
    )


class LocalClusterConfig(BaseModel):
    """`shopgraph cluster up --workers N [--gpu-workers M]`: a multi-node Ray cluster on one machine.

    Each worker node is its own raylet (`ray start --address ...`) with its own CPU share, temp dir,
    the custom resource of its node group (`group_cpu` / `group_gpu`, as the KubeRay worker groups
    of k8s/) and one naming it (`shopgraph-<group>-<i>`).
    """

    model_config = ConfigDict(extra="forbid")

    head_num_cpus: int = Field(
        0,
        ge=0,
        description="CPUs of the head when worker nodes are started: 0, as the KubeRay head (tasks and replicas run on the workers). Without workers the head has cluster.ray.num_cpus.",
    )
    cpu_workers: LocalWorkersConfig = Field(
        default_factory=LocalWorkersConfig, description="Worker nodes of the CPU group (resource group_cpu)."
    )
    gpu_workers: LocalWorkersConfig = Field(
        default_factory=LocalWorkersConfig, description="Worker nodes of the GPU group (resource group_gpu)."
    )


class JobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    working_dir_excludes: list[str] = Field(
        [".venv", ".git", "models", "artifacts", "**/__pycache__", "*.egg-info"],
        description="Paths left out of the working_dir that `shopgraph cluster submit` uploads (gitignore syntax); models and artifacts come from ml.dir / artifacts.root instead.",
    )
    pip: list[str] = Field(
        [],
        description="Extra pip requirements installed into the job's runtime_env; [] = use the cluster's environment as is.",
    )
    image_uri: str | None = Field(
        None,
        description="Container image the job runs in (runtime_env `image_uri`, needs podman on the nodes); None = the node's own environment.",
    )
    entrypoint_num_cpus: float = Field(
        0,
        ge=0,
        description="CPUs reserved for the job's driver process; 0 so the driver never blocks its own tasks on a small node.",
    )


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ray: RayConfig = Field(default_factory=RayConfig, description="How to reach (or start) Ray.")
    local: LocalClusterConfig = Field(
        default_factory=LocalClusterConfig,
        description="Worker nodes that `shopgraph cluster up` starts beside the head on this machine (multi-node Ray).",
    )
    namespace: str = Field(
        "shopgraph",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kubernetes namespace and Ray namespace of the deployment.",
    )
    jobs: JobsConfig = Field(
        default_factory=JobsConfig, description="How `shopgraph cluster submit` packages batch stages as Ray jobs."
    )
    k8s: K8sConfig = Field(
        default_factory=K8sConfig, description="KubeRay manifests (k8s/) and `shopgraph cluster deploy`."
    )


class ShopgraphConfig(BaseModel):
    """A whole deployment. Defaults equal the `local` profile."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["local", "gpu-cluster"] = Field("local", description="Which environment this config describes.")
    artifacts: ArtifactsConfig = Field(
        default_factory=ArtifactsConfig, description="Where artifacts are written and read."
    )
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Embedded or local models.")
    data: DataConfig = Field(default_factory=DataConfig, description="Ray Data stages.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Ray Train recipes.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Ray Serve application.")
    online: OnlineConfig = Field(
        default_factory=OnlineConfig, description="The online database and the write API's keys."
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Ray and Kubernetes placement.")
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="Pseudonymous user ids (keys, rotation) and erasure."
    )


def profile_path(profile: str) -> Path:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    return CONFIG_DIR / f"{profile}.yaml"


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.seed=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e.problem})") from e
    return key.strip().split("."), value


def _apply_override(tree: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: '{'.'.join(path[: i + 1])}' is a value, not a section")
        node = child
    node[path[-1]] = value


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ShopgraphConfig
    for part in loc[:-1]:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _format_errors(err: ValidationError, source: str, overridden: set[str]) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        where = f"--set {key}=..." if key in overridden else f"'{key}' in {source}"
        if e["type"] == "extra_forbidden":
            parent = _model_for(e["loc"])
            valid = ", ".join(parent.model_fields) if parent else "see `shopgraph cluster show-config`"
            origin = f"--set {key}" if key in overridden else source
            lines.append(f"  {key}: unknown key (from {origin}); remove it or use one of: {valid}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{got_s}; change {where}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ShopgraphConfig:
    """Load YAML (default: the `local` profile), apply `--set` overrides, validate.

    Without `path`, configs/local.yaml is used when present (a source checkout); an installed
    wheel has no configs/ and starts from the model defaults, which equal that profile.
    """
    if path is None:
        default = profile_path("local")
        path = default if default.is_file() else None
        return _validate({}, "defaults", overrides) if path is None else load_config(path, overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config with a YAML file, e.g. configs/local.yaml")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path} must hold a mapping of sections (data, train, serve, ...), got {type(tree).__name__}"
        )
    return _validate(tree, str(path), overrides)


def _validate(tree: dict[str, Any], source: str, overrides: list[str] | None) -> ShopgraphConfig:
    overridden: set[str] = set()
    for item in overrides or []:
        keys, value = _parse_override(item)
        _apply_override(tree, keys, value, item)
        overridden.add(".".join(keys))
    try:
        config = ShopgraphConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, overridden)) from None
    return anchor_local_paths(config)


def _in_job_working_dir_copy() -> bool:
    """This process is a Ray job driver running in Ray's unpacked copy of the job's working_dir."""
    # The job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for the driver only (not its tasks).
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ and "runtime_resources" in Path.cwd().parts


def anchor_local_paths(config: ShopgraphConfig) -> ShopgraphConfig:
    """Resolve a relative artifacts.root / models.dir against $SHOPGRAPH_PATHS_BASE when it is set.

    Without it, relative paths stay relative to the working directory, except in a Ray job's
    working_dir copy, where they would be lost: that is a ConfigError naming the flags to pass.
    """
    relative = {}
    if "://" not in config.artifacts.root and not Path(config.artifacts.root).is_absolute():
        relative["artifacts.root"] = config.artifacts.root
    if not Path(config.models.dir).is_absolute():
        relative["models.dir"] = config.models.dir
    if not relative:
        return config
    base = os.environ.get(PATHS_BASE_ENV)
    if base:
        root = Path(base) / config.artifacts.root if "artifacts.root" in relative else None
        models = Path(base) / config.models.dir if "models.dir" in relative else None
        return config.model_copy(
            update={
                "artifacts": config.artifacts.model_copy(update={"root": str(root)}) if root else config.artifacts,
                "models": config.models.model_copy(update={"dir": str(models)}) if models else config.models,
            }
        )
    if _in_job_working_dir_copy():
        keys = " and ".join(f"{k}={v!r}" for k, v in relative.items())
        flags = " ".join(f"--set {k}=/absolute/path" for k in relative)
        raise ConfigError(
            f"{keys} {'are' if len(relative) > 1 else 'is'} relative, and this Ray job runs in an unpacked copy "
            f"of its working_dir ({Path.cwd()}), whose files are lost with the job; pass absolute paths ({flags}), "
            "submit with `shopgraph cluster submit` (it pins them on a local head), or start the head with "
            f"`shopgraph cluster up`, which sets {PATHS_BASE_ENV}"
        )
    return config


def dump_config(config: ShopgraphConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
