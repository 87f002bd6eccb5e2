"""A Ray head on this machine, alone or with worker nodes, for development and `shopgraph cluster submit`.

    shopgraph cluster up [--set cluster.ray.num_cpus=2]
    shopgraph cluster up --workers 2 [--gpu-workers 1]     # a multi-node Ray cluster on one machine
    shopgraph cluster status
    shopgraph cluster down

With `--workers N` (cluster.local), each worker node is its own raylet joined to the head
(`ray start --address ... --block`, in its own process group and temp dir) with its own CPU
share and two custom resources: its node group's (`group_cpu` / `group_gpu`, as the KubeRay
worker groups in k8s/, which `serve.deployments.*.node_group` asks for) and one naming it
(`shopgraph-cpu-1`). To Ray, Serve and Ray Train that is a multi-node cluster. The state file
records every process group; `down` ends the workers', then the head's.

`up` runs `ray start --head --block` in its own process group, detached, with the ports and
resources of `cluster.ray`, and records the group in a small state file next to Ray's session
directory. `down` ends exactly that process group. It does not call `ray stop`, which kills
every Ray process of the user on the machine, including other people's `ray.init()` sessions.

What `up` changes besides starting processes, `down` puts back: Ray's "latest cluster" file
(`<temp dir>/ray_current_cluster`, which a bare `ray.init()` or `ray job submit` without an
address joins), its `session_latest` link and the dashboard's Prometheus targets file get
their previous contents; the head's session directory, log and state file are removed, and
the temp dir too when `up` created it and nothing else uses it.

The head's environment fixes two things that plain `ray job submit` rows depend on:
`RAY_AUTH_MODE` (the caller's value, else `disabled`; Ray would otherwise turn token auth on
whenever `~/.ray/auth_token` exists, which any earlier `ray.init()` creates) and
`SHOPGRAPH_PATHS_BASE` (the directory `up` ran in; jobs resolve a relative `artifacts.root` /
`models.dir` against it instead of their unpacked working_dir copy, see `core.config`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import PATHS_BASE_ENV, LocalClusterConfig, LocalWorkersConfig, RayConfig
from core.config.k8s import GROUP_CAPACITY, group_resource
from core.runtime import user_environ

AUTH_MODE_ENV = "RAY_AUTH_MODE"
PROMETHEUS_TARGETS = "prom_metrics_service_discovery.json"  # written into the temp dir by the head's dashboard
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
REPO_ROOT = Path(__file__).resolve().parent.parent


class LocalClusterError(RuntimeError):
    """The local head cannot be started, reached or stopped; the message says what to do."""


@dataclass(frozen=True)
class HeadInfo:
    dashboard_url: str
    gcs_address: str
    client_address: str
    pid: int
    log_path: str
    auth_mode: str  # RAY_AUTH_MODE of the head: what a client's shell needs for plain `ray job submit`
    paths_base: str  # what jobs resolve a relative artifacts.root / models.dir against


def dashboard_url(ray: RayConfig) -> str:
    host = "127.0.0.1" if ray.dashboard_host in ("0.0.0.0", "::") else ray.dashboard_host
    return f"http://{host}:{ray.dashboard_port}"


def _temp_dir(ray: RayConfig) -> Path:
    """Where `ray start` puts sessions and its "latest cluster" file: Ray's own default when unset
    (it honours RAY_TMPDIR and TMPDIR)."""
    if ray.temp_dir:
        return Path(ray.temp_dir)
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def _current_cluster_file(temp_dir: Path) -> Path:
    return temp_dir / "ray_current_cluster"  # ray._common.utils.get_ray_address_file


def state_path(ray: RayConfig) -> Path:
    return _temp_dir(ray) / f"shopgraph-head-{ray.gcs_port}.json"


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (bound all at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def auth_mode_at(url: str, timeout: float = 2.0) -> str | None:
    """'token' or 'disabled' as the dashboard at `url` reports it, or None when nothing answers.

    Ray 2.60 serves `/api/authentication_mode` without authentication, so a client can ask
    before it sends anything else.
    """
    try:
        with urllib.request.urlopen(f"{_origin(url)}/api/authentication_mode", timeout=timeout) as resp:
            return str(json.loads(resp.read().decode()).get("authentication_mode"))
    except (OSError, ValueError, AttributeError, urllib.error.URLError):
        return None


def auth_headers(url: str) -> dict[str, str]:
    """The bearer token header for the Ray cluster at `url`: {} unless it uses token authentication.

    The mode comes from the server, not from this process's environment, so a client works
    against any head whatever RAY_AUTH_MODE its shell has. For a token head this turns the
    mode on in this process too (as `RAY_AUTH_MODE=token` would), so that Ray's own clients
    (JobSubmissionClient, the state API) send the token read from RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    """
    if auth_mode_at(url) != "token":
        return {}
    from ray._private.authentication import authentication_token_setup as setup
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        setup._enable_token_auth()  # what RAY_AUTH_MODE=token does for a process (env + Ray's cached config)
    headers = dict(get_auth_headers_if_auth_enabled({}))
    if not headers:
        raise LocalClusterError(
            f"the Ray cluster at {_origin(url)} uses token authentication and this machine has no token; "
            "copy the head's ~/.ray/auth_token here or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"
        )
    return headers


def get_json(url: str, timeout: float = 3.0) -> Any:
    request = urllib.request.Request(url, headers=auth_headers(url))
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # a local dashboard URL from config
        return json.loads(resp.read().decode())


def ray_version_at(url: str) -> str | None:
    """Ray version reported by the dashboard at `url`, or None when nothing answers there."""
    try:
        return str(get_json(f"{url}/api/version", timeout=2.0).get("ray_version"))
    except urllib.error.HTTPError as e:
        return f"unknown: HTTP {e.code} from {url}/api/version"
    except (OSError, ValueError, urllib.error.URLError):
        return None


def check_ports_free(ray: RayConfig) -> None:
    """Refuse to start when a Ray cluster (or anything) already holds one of the configured ports."""
    url = dashboard_url(ray)
    version = ray_version_at(url)
    if version is not None:
        raise LocalClusterError(
            f"a Ray cluster (Ray {version}) is already running with its dashboard at {url}; "
            f"use it (`shopgraph cluster status`, `shopgraph cluster submit`), stop it with `shopgraph cluster down`, "
            "or start another on free ports with --set cluster.ray.dashboard_port=... --set cluster.ray.gcs_port=..."
        )
    ports = {
        "cluster.ray.gcs_port": ray.gcs_port,
        "cluster.ray.dashboard_port": ray.dashboard_port,
        "cluster.ray.client_server_port": ray.client_server_port,
        "cluster.ray.dashboard_agent_listen_port": ray.dashboard_agent_listen_port,
    }
    if len(set(ports.values())) != len(ports):
        raise LocalClusterError(f"the ports in cluster.ray must differ, got {ports}")
    busy = [f"{key}={port}" for key, port in ports.items() if _port_in_use(port)]
    if busy:
        hint = " ".join(f"--set {b.split('=')[0]}=<free port>" for b in busy)
        raise LocalClusterError(
            f"port(s) already in use on this machine ({', '.join(busy)}), maybe by another Ray cluster; "
            f"stop that one or pick free ports: {hint}"
        )


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise LocalClusterError(
            "the `ray` command is not installed beside this Python; install shopgraph with scripts/setup.sh"
        )
    return found


def start_command(ray: RayConfig) -> list[str]:
    cmd = [
        _ray_executable(), "start", "--head", "--block", "--disable-usage-stats",
        f"--port={ray.gcs_port}",
        "--include-dashboard=true",
        f"--dashboard-host={ray.dashboard_host}",
        f"--dashboard-port={ray.dashboard_port}",
        f"--ray-client-server-port={ray.client_server_port}",
        f"--dashboard-agent-listen-port={ray.dashboard_agent_listen_port}",
    ]  # fmt: skip
    if ray.num_cpus is not None:
        cmd.append(f"--num-cpus={ray.num_cpus}")
    if ray.num_gpus is not None:
        cmd.append(f"--num-gpus={ray.num_gpus}")
    if ray.object_store_memory_mb is not None:
        cmd.append(f"--object-store-memory={ray.object_store_memory_mb * 2**20}")
    if ray.temp_dir:
        cmd.append(f"--temp-dir={ray.temp_dir}")
    return cmd


def head_auth_mode() -> str:
    """The RAY_AUTH_MODE the head starts with: the caller's, else 'disabled'.

    Left unset, Ray 2.60 decides at `ray start` time: token auth if ~/.ray/auth_token exists
    (any earlier local `ray.init()` creates it), none otherwise; plain `ray job submit` sends a
    token only when its own shell has RAY_AUTH_MODE=token. Pinning the mode makes the head
    behave the same on every machine, and the shell that ran `up` can submit to it as is.
    """
    mode = os.environ.get(AUTH_MODE_ENV, "").strip().lower() or "disabled"
    if mode not in ("disabled", "token"):
        raise LocalClusterError(
            f"{AUTH_MODE_ENV}={os.environ[AUTH_MODE_ENV]!r} is not a Ray auth mode; "
            "set it to token or disabled, or unset it"
        )
    if mode == "token":
        from ray._raylet import AuthenticationTokenLoader

        if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
            raise LocalClusterError(
                f"{AUTH_MODE_ENV}=token but there is no token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                f"~/.ray/auth_token); create one with `ray get-auth-token --generate`, or unset {AUTH_MODE_ENV} "
                "for a head without token auth"
            )
    return mode


def head_env(extra: dict[str, str] | None, auth_mode: str, paths_base: Path) -> dict[str, str]:
    """Environment of the head's processes (and so of every job driver and worker it starts).

    `extra` (e.g. `serve.http.ray_env()`) comes first: the caller's own environment wins, but
    not the Serve settings an earlier start in this process put there from another config
    (`core.runtime.user_environ`).
    """
    return {
        **(extra or {}),
        **user_environ(),
        # The job driver runs `python -m ...` through the head's PATH: put this venv's python first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # Serve replicas and tasks import shopgraph's packages: from this checkout, as the pods do from app_dir.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        AUTH_MODE_ENV: auth_mode,
        PATHS_BASE_ENV: str(paths_base),
    }


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except (FileNotFoundError, OSError):
        return None


def start_head(
    ray: RayConfig, timeout: float = 90.0, env: dict[str, str] | None = None, paths_base: Path | None = None
) -> HeadInfo:
    """Start the head and wait until its dashboard answers; raise LocalClusterError otherwise.

    `env`: extra environment of the Ray processes (e.g. `serve.http.ray_env()`); the caller's wins.
    `paths_base`: what jobs resolve a relative artifacts.root / models.dir against (default: cwd).
    """
    check_ports_free(ray)
    auth_mode = head_auth_mode()
    base = (paths_base or Path.cwd()).resolve()
    temp = _temp_dir(ray)
    created_temp = not temp.exists()
    current_file = _current_cluster_file(temp)
    before = {
        "current_cluster": _read_text(current_file),
        "session_latest": _read_link(temp / "session_latest"),
        "prometheus_targets": _read_text(temp / PROMETHEUS_TARGETS),
    }
    state = state_path(ray)
    state.parent.mkdir(parents=True, exist_ok=True)
    log_path = state.with_suffix(".log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            start_command(ray), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=head_env(env, auth_mode, base), start_new_session=True,
        )  # fmt: skip
    url = dashboard_url(ray)
    info = HeadInfo(
        url, f"127.0.0.1:{ray.gcs_port}", f"ray://127.0.0.1:{ray.client_server_port}", proc.pid, str(log_path),
        auth_mode, str(base),
    )  # fmt: skip
    record = {**info.__dict__, "temp_dir": str(temp), "created_temp_dir": created_temp, "before": before}
    state.write_text(json.dumps(record))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            state.unlink(missing_ok=True)
            _restore(record)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LocalClusterError(
                f"`ray start` exited with code {proc.returncode}; its log ({log_path}) ends with:\n{tail}"
            )
        if _jobs_api_ready(url):
            # `ray start` writes its "latest cluster" file once the node is up, which under load can be
            # after the dashboard answers: wait for it (briefly), so what `down` restores is known.
            _wait_for_current_cluster(current_file, ray.gcs_port, before.get("current_cluster"), deadline)
            sessions = sorted(temp.glob(f"session_*_{proc.pid}"))
            record["created"] = {
                "current_cluster": _read_text(current_file),
                "session_latest": _read_link(temp / "session_latest"),
                "session_dir": str(sessions[-1]) if sessions else None,
            }
            state.write_text(json.dumps(record))
            return info
        time.sleep(0.5)
    _kill_group(proc.pid)
    state.unlink(missing_ok=True)
    _restore(record)
    raise LocalClusterError(f"the Ray head did not answer at {url} within {timeout:.0f}s; see {log_path}")


def _wait_for_current_cluster(path: Path, gcs_port: int, before: str | None, deadline: float) -> None:
    """Until `path` names a GCS on `gcs_port` (and is not what it held before `up`), at most ~20 s."""
    until = min(deadline, time.monotonic() + 20)
    while time.monotonic() < until:
        current = _read_text(path)
        if current is not None and current != before and current.strip().rsplit(":", 1)[-1] == str(gcs_port):
            return
        time.sleep(0.25)


def _jobs_api_ready(url: str) -> bool:
    """The job API answers and the head node has registered (the dashboard comes up a bit earlier)."""
    try:
        get_json(f"{url}/api/jobs/", timeout=2.0)
        nodes = get_json(f"{url}/api/v0/nodes?limit=10", timeout=5.0)["data"]["result"]["result"]
        return any(n.get("state") == "ALIVE" for n in nodes)
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the head's process group (ray start --block, GCS, raylet, dashboard), then SIGKILL.

    Like `ray stop` (SIGTERM, grace period, SIGKILL) with a shorter grace: the raylet would
    otherwise drain for up to 30 s, and a local head holds nothing that outlives it.
    Workers run in their own sessions and exit when their raylet is gone.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _alive(pgid)  # reaps the leader when it is our child
        if not _group_alive(pgid):
            return
        time.sleep(0.3)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_groups(pgids: list[int], grace: float = 5.0) -> None:
    """`_kill_group` for several process groups at once: SIGTERM all, one grace period, SIGKILL the rest."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pgid in pgids:
            _alive(pgid)  # reaps a leader that is our child
        if not any(_group_alive(p) for p in pgids):
            return
        time.sleep(0.3)
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    until = time.monotonic() + 10  # SIGKILLed processes go at once; `down` returns when they are gone
    while time.monotonic() < until:
        for pgid in pgids:
            _alive(pgid)
        if not any(_group_alive(p) for p in pgids):
            return
        time.sleep(0.2)


def read_state(ray: RayConfig) -> dict[str, Any] | None:
    path = state_path(ray)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        path.unlink(missing_ok=True)
        return None


def _restore(record: dict[str, Any]) -> list[str]:
    """Put back what `ray start` changed in the temp dir, where it still names this head; return what was done.

    Ray's "latest cluster" file is what a bare `ray.init()` and `ray job submit` without an
    address join: left pointing at a stopped head, they wait for its GCS for minutes.
    """
    temp = Path(record["temp_dir"])
    before = record.get("before", {})
    created = record.get("created") or {}
    done = []
    current_file = _current_cluster_file(temp)
    current = _read_text(current_file)
    # Ours when it is what `up` saw after start, or names this head's GCS port: under load `ray start`
    # can write the file after the dashboard answers, so `created` may not have seen it.
    gcs_port = str(record.get("gcs_address", "")).rsplit(":", 1)[-1]
    ours = current if current is not None and current.strip().rsplit(":", 1)[-1] == gcs_port else None
    ours = ours or created.get("current_cluster")
    if ours is not None and ours != before.get("current_cluster") and current == ours:
        if before.get("current_cluster") is None:
            current_file.unlink(missing_ok=True)
            done.append(f"removed {current_file}")
        else:
            current_file.write_text(before["current_cluster"])
            done.append(f"restored {current_file} ({before['current_cluster']})")
    link = temp / "session_latest"
    ours = created.get("session_latest")
    if ours is not None and ours != before.get("session_latest") and _read_link(link) == ours:
        link.unlink(missing_ok=True)
        if before.get("session_latest") is not None:
            link.symlink_to(before["session_latest"])
    if created.get("session_dir"):
        shutil.rmtree(created["session_dir"], ignore_errors=True)
    # The dashboard rewrites this list of metrics targets every few seconds (so would a live head sharing the temp dir).
    targets = temp / PROMETHEUS_TARGETS
    if "prometheus_targets" in before:
        if before["prometheus_targets"] is None:
            targets.unlink(missing_ok=True)
        elif _read_text(targets) != before["prometheus_targets"]:
            targets.write_text(before["prometheus_targets"])
    if record.get("created_temp_dir"):
        try:  # only when nothing else (another Ray instance) has put files there since
            temp.rmdir()
        except OSError:
            pass
    return done


def stop_head(ray: RayConfig) -> str:
    """Stop the head that `start_head` started with this config, put back what it changed; return what was done."""
    state = read_state(ray)
    url = dashboard_url(ray)
    if state is None:
        if ray_version_at(url) is not None:
            raise LocalClusterError(
                f"the Ray cluster at {url} was not started by `shopgraph cluster up` with this config; "
                "stop it the way it was started (`ray stop` stops every Ray process of your user on this machine)"
            )
        return f"no Ray head started by shopgraph on these ports (dashboard {url}); nothing to stop"
    workers = state.get("workers") or []
    # Serve's HAProxy is a child of a Ray worker, outside the node's process group: once its parent is
    # killed it lives on (holding its ports), so it is found now, while it is still a descendant.
    proxies = _haproxy_descendants([int(w["pid"]) for w in workers] + [int(state["pid"])])
    _kill_groups([int(w["pid"]) for w in workers])
    for w in workers:
        shutil.rmtree(w["temp_dir"], ignore_errors=True)
        Path(w["log_path"]).unlink(missing_ok=True)
    _kill_group(int(state["pid"]))
    _kill_all(proxies)
    state_path(ray).unlink(missing_ok=True)
    Path(state["log_path"]).unlink(missing_ok=True)
    done = _restore(state) if "temp_dir" in state else []
    stopped = f"stopped the Ray head at {state['dashboard_url']} (process group {state['pid']})"
    if workers:
        listed = ", ".join(f"{w['name']}: {w['pid']}" for w in workers)
        stopped += f" and {len(workers)} worker node(s) (process groups {listed})"
    return stopped + "".join(f"; {d}" for d in done)


def _group_processes(pgid: int) -> list:
    """Live members of process group `pgid` and all their descendants (psutil.Process objects)."""
    import psutil

    members: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members[proc.pid] = proc
                for child in proc.children(recursive=True):
                    members[child.pid] = child
        except (ProcessLookupError, psutil.Error):
            continue
    return list(members.values())


def _haproxy_descendants(pgids: list[int]) -> list:
    """HAProxy processes descended from members of these process groups."""
    import psutil

    found = []
    for pgid in pgids:
        for proc in _group_processes(pgid):
            try:
                if proc.name() == "haproxy":
                    found.append(proc)
            except psutil.Error:
                continue
    return found


def _kill_all(procs: list) -> None:
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


# ----------------------------------------------------------------------------- worker nodes


@dataclass(frozen=True)
class WorkerNode:
    name: str  # also a custom resource of the node (1 of it): `{"shopgraph-cpu-1": 0.01}` pins a task to it
    group: str  # node group (cpu, gpu): the node offers GROUP_CAPACITY of `group_<group>`
    pid: int  # process group of its `ray start --block`
    temp_dir: str
    log_path: str


def worker_plan(local: LocalClusterConfig) -> list[tuple[str, str, LocalWorkersConfig]]:
    """(name, group, settings) of every worker node the config asks for, CPU group first."""
    return [
        (f"shopgraph-{group}-{i}", group, spec)
        for group, spec in (("cpu", local.cpu_workers), ("gpu", local.gpu_workers))
        for i in range(1, spec.workers + 1)
    ]


def worker_command(
    gcs_address: str, name: str, group: str, spec: LocalWorkersConfig, temp_dir: Path, agent_port: int
) -> list[str]:
    resources = {group_resource(group): GROUP_CAPACITY, name: 1}
    return [
        _ray_executable(), "start", f"--address={gcs_address}", "--block", "--disable-usage-stats",
        f"--num-cpus={spec.num_cpus}",
        f"--num-gpus={spec.num_gpus}",
        f"--resources={json.dumps(resources)}",
        f"--object-store-memory={spec.object_store_memory_mb * 2**20}",
        # Ray 2.60 takes --temp-dir per node: each worker keeps its session files apart from the head's.
        f"--temp-dir={temp_dir}",
        # Every raylet's dashboard agent listens on 52365 unless told otherwise: one port each here.
        f"--dashboard-agent-listen-port={agent_port}",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(url: str) -> list[dict[str, Any]]:
    try:
        nodes = get_json(f"{url}/api/v0/nodes?limit=1000&detail=1", timeout=5.0)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return []
    return [n for n in nodes if n.get("state") == "ALIVE"]


def start_cluster(
    ray: RayConfig,
    local: LocalClusterConfig,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    paths_base: Path | None = None,
    head_only_env: dict[str, str] | None = None,
) -> tuple[HeadInfo, list[WorkerNode]]:
    """Start the head, then the worker nodes `local` asks for, and wait until every node is ALIVE.

    Without worker nodes this is `start_head`. With them the head gets `local.head_num_cpus`
    (0: it schedules, the workers run tasks and replicas, as on KubeRay). Every worker's process
    group goes into the head's state file before it is waited for, so `stop_head` (`cluster down`)
    stops exactly these processes, also after a failed start. `head_only_env`: environment of the
    head alone (GCS fault tolerance: `cluster.faults.gcs_ft_env`).
    """
    plan = worker_plan(local)
    head_cfg = ray.model_copy(update={"num_cpus": local.head_num_cpus}) if plan else ray
    head_env_ = {**(env or {}), **(head_only_env or {})}
    info = start_head(head_cfg, timeout=timeout, env=head_env_, paths_base=paths_base)
    if not plan:
        return info, []
    try:
        return info, _start_workers(ray, info, plan, env, timeout)
    except BaseException:
        stop_head(ray)
        raise


def _start_workers(
    ray: RayConfig,
    info: HeadInfo,
    plan: list[tuple[str, str, LocalWorkersConfig]],
    env: dict[str, str] | None,
    timeout: float,
) -> list[WorkerNode]:
    state = state_path(ray)
    record = json.loads(state.read_text())
    temp = Path(record["temp_dir"])
    node_env = head_env(env, info.auth_mode, Path(info.paths_base))
    workers: list[WorkerNode] = []
    procs = []
    for i, (name, group, spec) in enumerate(plan, start=1):
        # short: Ray puts unix sockets under it (sun_path is 107 bytes)
        node_temp = temp / f"n{ray.gcs_port}-{group[0]}{name.rsplit('-', 1)[1]}"
        log_path = state.with_name(f"{state.stem}-{name}.log")
        cmd = worker_command(info.gcs_address, name, group, spec, node_temp, _free_port())
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=node_env, start_new_session=True
            )  # fmt: skip
        procs.append(proc)
        workers.append(WorkerNode(name, group, proc.pid, str(node_temp), str(log_path)))
        record["workers"] = [w.__dict__ for w in workers]
        state.write_text(json.dumps(record))
    deadline = time.monotonic() + timeout
    names = {w.name for w in workers}
    while time.monotonic() < deadline:
        for w, proc in zip(workers, procs, strict=True):
            if proc.poll() is not None:
                tail = Path(w.log_path).read_text(errors="replace")[-2000:]
                raise LocalClusterError(
                    f"worker node {w.name}: `ray start --address` exited with code {proc.returncode}; its log ends with:\n{tail}"
                )
        up = {k for n in _alive_nodes(info.dashboard_url) for k in (n.get("resources_total") or {}) if k in names}
        if up == names:
            return workers
        time.sleep(0.5)
    raise LocalClusterError(
        f"worker node(s) {', '.join(sorted(names))} did not join the head within {timeout:.0f}s; see {', '.join(w.log_path for w in workers)}"
    )
