"""Faults on a local multi-node cluster (`shopgraph cluster up --workers N`), for bench/failures.py and tests.

    from cluster.faults import kill_worker_node, kill_gcs, restart_head, gcs_ft_env

- `kill_worker_node(ray_cfg, "shopgraph-cpu-2")`: SIGKILL every process of that worker node, as a
  node (or pod) that vanishes: its `ray start --block` process group (raylet, dashboard agent, the
  Ray workers that run its replicas), plus any descendant that left the group.
- `kill_gcs(ray_cfg)`: SIGKILL the head's `gcs_server`. Ray 2.60's `ray start --head --block` then
  kills the rest of the head within a second ("Some Ray subprocesses exited unexpectedly ...
  Remaining processes will be killed"), as the head container of a KubeRay pod exits. So GCS cannot
  be restarted in place here: what comes back is the whole head, which `restart_head` starts again
  with the same command line and environment (read from /proc before the kill), as the kubelet
  restarts the container.
- `gcs_ft_env(redis_address, namespace)`: the environment KubeRay gives the head and the worker
  nodes of a cluster with `gcsFaultToleranceOptions` (what `cluster.k8s.gcs_ft` renders): the
  GCS keeps its tables in that Redis, so the restarted head finds the cluster (nodes, actors,
  Serve's checkpoint) where it left it, and the worker nodes wait for it instead of exiting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from core.config import RayConfig

from .local import (
    LocalClusterError,
    _current_cluster_file,
    _group_processes,
    _jobs_api_ready,
    _read_text,
    read_state,
    state_path,
)

# How long the worker nodes' raylets (and every Ray process) wait for a lost GCS before exiting.
# Ray's default is 60 s; a head restart on a busy 2-core box takes longer, and KubeRay sets 600 s.
RECONNECT_TIMEOUT_S = 600


def gcs_ft_env(redis_address: str, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    """(head-only environment, environment of every node) for GCS fault tolerance with Redis at `redis_address`
    (host:port): `RAY_REDIS_ADDRESS` and `RAY_external_storage_namespace` on the head, the reconnect
    timeout everywhere, as KubeRay renders them."""
    head = {"RAY_REDIS_ADDRESS": redis_address, "RAY_external_storage_namespace": namespace}
    every = {"RAY_gcs_rpc_server_reconnect_timeout_s": str(RECONNECT_TIMEOUT_S)}
    return head, every


def _state(ray: RayConfig) -> dict:
    state = read_state(ray)
    if state is None:
        raise LocalClusterError(f"no cluster started by `shopgraph cluster up` on GCS port {ray.gcs_port}")
    return state


@dataclass(frozen=True)
class Killed:
    name: str
    pids: list[int]
    at: float  # time.time() of the SIGKILL


def kill_worker_node(ray: RayConfig, name: str) -> Killed:
    """SIGKILL every process of worker node `name` (as recorded in the cluster's state file)."""
    state = _state(ray)
    workers = {w["name"]: w for w in state.get("workers") or []}
    if name not in workers:
        raise LocalClusterError(
            f"no worker node {name!r} in this cluster; it has {', '.join(sorted(workers)) or 'none'}"
        )
    procs = _group_processes(int(workers[name]["pid"]))
    if not procs:
        raise LocalClusterError(f"worker node {name} has no live process (process group {workers[name]['pid']})")
    at = time.time()
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    return Killed(name, sorted(p.pid for p in procs), at)


@dataclass(frozen=True)
class HeadProcess:
    pid: int  # the `ray start --head --block` process (leader of the head's process group)
    cmdline: list[str]
    environ: dict[str, str]
    gcs_pid: int
    gcs_cmdline: list[str]


def head_process(ray: RayConfig) -> HeadProcess:
    """The head's `ray start` and `gcs_server` processes with their command lines (from /proc)."""
    state = _state(ray)
    leader = psutil.Process(int(state["pid"]))
    gcs = [p for p in _group_processes(leader.pid) if p.name() == "gcs_server"]
    if not gcs:
        raise LocalClusterError(f"the head (process group {leader.pid}) has no gcs_server process")
    return HeadProcess(leader.pid, leader.cmdline(), leader.environ(), gcs[0].pid, gcs[0].cmdline())


def kill_gcs(ray: RayConfig) -> tuple[HeadProcess, Killed]:
    """SIGKILL the head's gcs_server; returns what `restart_head` needs and what was killed."""
    head = head_process(ray)
    at = time.time()
    os.kill(head.gcs_pid, signal.SIGKILL)
    return head, Killed("gcs_server", [head.gcs_pid], at)


def wait_head_gone(head: HeadProcess, timeout: float = 60.0) -> float:
    """Seconds until the head's `ray start --block` has exited (it does once GCS is gone); then what
    is left of its process group (Ray workers waiting for their raylet) is SIGKILLed, as the container
    runtime does to every process of a container whose main process exited."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            done, _ = os.waitpid(head.pid, os.WNOHANG)  # reap the leader when it is our child
        except ChildProcessError:
            done = 0 if _live_pid(head.pid) else head.pid
        if done == head.pid:
            break
        time.sleep(0.2)
    else:
        raise LocalClusterError(
            f"the head's `ray start` ({head.pid}) still runs {timeout:.0f} s after its GCS was killed"
        )
    exited = time.monotonic() - t
    _reap_group(head.pid)
    return exited


def _live_pid(pid: int) -> bool:
    try:
        return _live(psutil.Process(pid))
    except psutil.Error:
        return False


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def restart_head(ray: RayConfig, head: HeadProcess, timeout: float = 180.0, attempts: int = 4) -> tuple[float, int]:
    """Start the head again with the command line and environment it had, as the kubelet restarts a
    container: a start that fails is tried again after a back-off (10 s, then 20 s, 40 s), up to
    `attempts` starts. (Under load a restarted head can miss `ray start`'s fixed 30 s wait for its
    node to register, and exits.) The state file then names the new process group, so `cluster down`
    stops it. Returns (seconds until its dashboard answered, starts it took)."""
    t = time.monotonic()
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            _start_head_again(ray, head, timeout - (time.monotonic() - t))
            return time.monotonic() - t, attempt
        except LocalClusterError as e:
            failures.append(str(e)[-600:])
            if attempt == attempts or time.monotonic() - t >= timeout:
                break
            time.sleep(min(10.0 * 2 ** (attempt - 1), 40.0))
    raise LocalClusterError(f"the head did not come back in {len(failures)} start(s); the last: {failures[-1]}")


def _start_head_again(ray: RayConfig, head: HeadProcess, timeout: float) -> None:
    state = _state(ray)
    path = state_path(ray)
    # `ray start --head` refuses a port whose address is both in the temp dir's "latest cluster" file
    # and on a local raylet's command line (the worker nodes' `--gcs-address`, all on this host). A
    # restarted head container starts from a fresh file system: so does this head, without that file.
    current = _current_cluster_file(Path(state["temp_dir"]))
    if (_read_text(current) or "").strip().rsplit(":", 1)[-1] == state["gcs_address"].rsplit(":", 1)[-1]:
        current.unlink(missing_ok=True)
    t = time.monotonic()
    with Path(state["log_path"]).open("ab") as log:
        proc = subprocess.Popen(
            head.cmdline, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=head.environ, start_new_session=True,
        )  # fmt: skip
    state["pid"] = proc.pid
    state.setdefault("restarts", []).append(proc.pid)
    path.write_text(json.dumps(state))
    while time.monotonic() - t < timeout:
        if proc.poll() is not None:
            _reap_group(proc.pid)  # what a failed start left (its GCS, dashboard) goes with it, as with a container
            tail = Path(state["log_path"]).read_text(errors="replace")[-1500:]
            raise LocalClusterError(
                f"the restarted head exited with code {proc.returncode}; its log ends with:\n{tail}"
            )
        if _jobs_api_ready(state["dashboard_url"]):
            return
        time.sleep(0.5)
    _reap_group(proc.pid)
    raise LocalClusterError(f"the restarted head did not answer at {state['dashboard_url']} within {timeout:.0f} s")


def _reap_group(pgid: int) -> None:
    """SIGKILL every live process of process group `pgid` and its descendants."""
    for _ in range(50):
        live = [p for p in _group_processes(pgid) if _live(p)]
        if not live:
            return
        for proc in live:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        time.sleep(0.2)
