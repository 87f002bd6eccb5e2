"""Submit batch stages as Ray jobs and report on a running cluster.

    shopgraph cluster submit smoke [--address http://127.0.0.1:8265] [--no-wait]
    shopgraph cluster status

`submit` uploads this checkout as the job's `working_dir` (excluding `.venv`, models,
artifacts, `.git`: see `cluster.jobs.working_dir_excludes`), runs the stage's entry point from
`cluster.stages.STAGES`, streams its logs and returns its exit status: 0 when the job
succeeded, 1 when it failed or was stopped (with Ray's error message).
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cluster.local import LocalClusterError, auth_headers, get_json
from cluster.stages import REPO_ROOT, Stage
from core.config import ShopgraphConfig

Echo = Callable[[str], None]


class JobError(RuntimeError):
    """The cluster cannot be reached or refused the job; the message says what to do."""


def runtime_env(cfg: ShopgraphConfig, root: Path = REPO_ROOT) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(root), "excludes": list(cfg.cluster.jobs.working_dir_excludes)}
    if cfg.cluster.jobs.pip:
        env["pip"] = list(cfg.cluster.jobs.pip)
    if cfg.cluster.jobs.image_uri:
        env["image_uri"] = cfg.cluster.jobs.image_uri
    return env


def config_in_working_dir(config: Path | None, root: Path = REPO_ROOT) -> str:
    """The config path as the job sees it: relative to the uploaded working_dir."""
    if config is None:
        return "configs/local.yaml"
    resolved = config.resolve()
    if not resolved.is_relative_to(root):
        raise JobError(
            f"--config {config} is outside the working_dir that is uploaded ({root}); put the file under configs/ and pass that path"
        )
    return resolved.relative_to(root).as_posix()


def pin_local_paths(cfg: ShopgraphConfig, address: str, root: Path = REPO_ROOT) -> list[str]:
    """`--set` overrides that make relative artifacts.root / models.dir absolute for a head on this machine.

    A job runs inside its unpacked working_dir copy: a relative `artifacts` there would be
    written into Ray's session directory and lost. On a remote cluster nothing is pinned
    (use the gpu-cluster profile's mounted paths or a URI).
    """
    host = urlparse(address).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return []
    pins = []
    if "://" not in cfg.artifacts.root and not Path(cfg.artifacts.root).is_absolute():
        pins.append(f"artifacts.root={root / cfg.artifacts.root}")
    if not Path(cfg.models.dir).is_absolute():
        pins.append(f"models.dir={root / cfg.models.dir}")
    return pins


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        auth_headers(address)  # switch Ray's clients in this process to token auth when that cluster uses it
        return JobSubmissionClient(address)
    except LocalClusterError as e:  # it answers, but with token auth and no token here
        raise JobError(str(e)) from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(
            f"no Ray job server answers at {address} ({e}); start one with `shopgraph cluster up` or pass --address"
        ) from None


def submit_stage(
    cfg: ShopgraphConfig,
    stage: Stage,
    *,
    address: str,
    config_path: str,
    overrides: list[str] | None = None,
    extra_args: list[str] | None = None,
    wait: bool = True,
    echo: Echo = print,
    root: Path = REPO_ROOT,
) -> int:
    """Submit `stage`, stream its logs until it ends and return 0 (succeeded) or 1."""
    from ray.job_submission import JobStatus

    client = _client(address)
    overrides = [*pin_local_paths(cfg, address, root), *(overrides or [])]
    entrypoint = " ".join(shlex.quote(a) for a in [*stage.entrypoint(config_path, overrides), *(extra_args or [])])
    submission_id = f"shopgraph-{stage.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env=runtime_env(cfg, root),
            entrypoint_num_cpus=cfg.cluster.jobs.entrypoint_num_cpus,
            metadata={"shopgraph_stage": stage.name},
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise JobError(f"the Ray cluster at {address} did not accept the job: {e}") from None
    echo(f"submitted {job_id}: {entrypoint}")
    echo(f"  logs: ray job logs --address {address} {job_id} --follow")
    if not wait:
        return 0

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            echo(chunk.rstrip("\n"))

    asyncio.run(_tail())
    info = client.get_job_info(job_id)
    # Logs can end a moment before the status turns terminal.
    deadline = time.monotonic() + 30
    while not info.status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
        info = client.get_job_info(job_id)
    if info.status == JobStatus.SUCCEEDED:
        echo(f"job {job_id} succeeded")
        return 0
    echo(f"job {job_id} {info.status.value}: {info.message or 'no message'}")
    return 1


def node_group(resources: dict[str, float]) -> dict[str, str | None]:
    """{"group": "cpu", "name": "shopgraph-cpu-1"} from a node's resources (`shopgraph cluster up --workers`,
    the KubeRay groups), None where the node has none."""
    groups = sorted(k.removeprefix("group_") for k in resources if k.startswith("group_"))
    names = sorted(k for k in resources if k.startswith("shopgraph-"))
    return {"group": ",".join(groups) or None, "name": ",".join(names) or None}


def cluster_status(address: str) -> dict[str, Any]:
    """Nodes with their resources, Serve applications and unfinished jobs of the cluster at `address`."""
    from ray.util.state import list_nodes

    client = _client(address)
    nodes = list_nodes(address=address, detail=True, raise_on_missing_output=False)
    try:
        usage = get_json(f"{address}/api/cluster_status?format=1").get("data", {}).get("clusterStatus", "")
    except (OSError, ValueError):
        usage = ""
    try:  # the first call after a head starts can take a few seconds (Serve's REST module warms up)
        serve = {
            name: app.get("status")
            for name, app in (
                get_json(f"{address}/api/serve/applications/", timeout=15).get("applications") or {}
            ).items()
        }
    except (OSError, ValueError) as e:
        serve = {"<unknown>": f"Serve REST API did not answer ({e})"}
    jobs = [j for j in client.list_jobs() if not j.status.is_terminal()]
    return {
        "nodes": [
            {
                "node_id": n.node_id[:12],
                "ip": n.node_ip,
                "head": n.is_head_node,
                "state": n.state,
                "resources": n.resources_total,
                **node_group(n.resources_total),
            }
            for n in nodes
        ],
        "usage": usage,
        "serve_applications": serve,
        "jobs": [
            {"id": j.submission_id or j.job_id, "status": j.status.value, "entrypoint": j.entrypoint} for j in jobs
        ],
    }
