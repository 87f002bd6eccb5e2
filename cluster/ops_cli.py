"""`shopgraph cluster ...`: local Ray head, job submission, KubeRay manifests and deploys.

    shopgraph cluster up --set cluster.ray.num_cpus=2
    shopgraph cluster up --workers 2 [--gpu-workers 1]
    shopgraph cluster submit smoke
    shopgraph cluster status
    shopgraph cluster down
    shopgraph cluster render [--check]
    shopgraph cluster deploy [--dry-run]
    shopgraph cluster rollout-status [--wait]

Exit codes: 0 done; 1 the cluster or job failed (message says why); 2 bad input (config
key, unknown stage, stage not in this checkout), nothing was started or submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.cli import ConfigOpt, SetOpt, load_or_exit
from core.config import CONFIG_DIR, ConfigError

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Dashboard / job API of the Ray cluster (default: http://<cluster.ray.dashboard_host>:<cluster.ray.dashboard_port>).",
        show_default=False,
    ),
]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
        show_default=False,
    ),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: its current-context).", show_default=False)
]
K8S_CONFIG = CONFIG_DIR / "gpu-cluster.yaml"


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _address(cfg, address: str | None) -> str:
    from cluster.local import dashboard_url

    return (address or dashboard_url(cfg.cluster.ray)).rstrip("/")


def register(app: typer.Typer) -> None:
    """Mount the operator commands on the `shopgraph cluster` group."""

    @app.command("up")
    def up(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                help="Worker nodes of the CPU group to start beside the head (default: cluster.local.cpu_workers.workers).",
                show_default=False,
            ),
        ] = None,
        gpu_workers: Annotated[
            int | None,
            typer.Option(
                "--gpu-workers",
                help="Worker nodes of the GPU group (default: cluster.local.gpu_workers.workers).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Start a Ray head here (dashboard on; ports and resources from cluster.ray), and worker nodes with --workers."""
        from cluster.local import LOOPBACK_HOSTS, LocalClusterError, start_cluster

        overrides = list(set_ or [])
        for flag, key, value in (
            ("--workers", "cpu_workers", workers),
            ("--gpu-workers", "gpu_workers", gpu_workers),
        ):
            if value is not None:
                if value < 0 or value > 16:
                    raise _fail(f"{flag} must be between 0 and 16, got {value}", 2)
                overrides.append(f"cluster.local.{key}.workers={value}")
        cfg = load_or_exit(config, overrides)
        try:
            info, nodes = start_cluster(cfg.cluster.ray, cfg.cluster.local, env=cfg.serve.http.ray_env())
        except LocalClusterError as e:
            raise _fail(str(e)) from None
        typer.echo(f"Ray head started (process group {info.pid}, log {info.log_path})")
        for node in nodes:
            typer.echo(
                f"  worker node: {node.name} (group {node.group}, process group {node.pid}, log {node.log_path})"
            )
        typer.echo(f"  dashboard:   {info.dashboard_url}")
        smoke = "python -m cluster.smoke_job --config configs/local.yaml"
        typer.echo(f"  submit jobs: ray job submit --address {info.dashboard_url} --working-dir . -- {smoke}")
        typer.echo(f"               shopgraph cluster submit smoke --address {info.dashboard_url}")
        if info.auth_mode == "token":
            typer.echo("  auth:        token (RAY_AUTH_MODE=token); for Ray's CLI: export RAY_AUTH_MODE=token")
        else:
            typer.echo("  auth:        none (RAY_AUTH_MODE=disabled); for tokens: export RAY_AUTH_MODE=token, then up")
            if cfg.cluster.ray.dashboard_host not in LOOPBACK_HOSTS:
                host = cfg.cluster.ray.dashboard_host
                typer.echo(f"  warning:     the job API listens on {host} without auth: whoever reaches it runs code")
        typer.echo(f"  paths:       jobs resolve a relative artifacts.root / models.dir against {info.paths_base}")
        typer.echo(f"  join:        ray.init(address='{info.gcs_address}')  or  ray start --address={info.gcs_address}")
        typer.echo(f"  Ray client:  {info.client_address}")
        typer.echo("  stop:        shopgraph cluster down (with the same --config/--set)")

    @app.command("down")
    def down(config: ConfigOpt = None, set_: SetOpt = None) -> None:
        """Stop the Ray head (and its worker nodes) that `shopgraph cluster up` started with this config, and only those."""
        from cluster.local import LocalClusterError, stop_head

        cfg = load_or_exit(config, set_)
        try:
            typer.echo(stop_head(cfg.cluster.ray))
        except LocalClusterError as e:
            raise _fail(str(e)) from None

    @app.command("status")
    def status(config: ConfigOpt = None, set_: SetOpt = None, address: AddressOpt = None) -> None:
        """Nodes and their resources, Serve applications and unfinished jobs of a running Ray cluster."""
        from cluster.jobs import JobError, cluster_status

        cfg = load_or_exit(config, set_)
        url = _address(cfg, address)
        try:
            info = cluster_status(url)
        except JobError as e:
            raise _fail(str(e)) from None
        except Exception as e:  # the state API raises several types when nothing answers
            raise _fail(
                f"no Ray cluster answers at {url} ({type(e).__name__}: {e}); start one with `shopgraph cluster up` or pass --address"
            ) from None
        typer.echo(f"Ray cluster at {url}")
        typer.echo(f"nodes ({len(info['nodes'])}):")
        for n in info["nodes"]:
            res = ", ".join(_resource(k, v) for k, v in sorted(n["resources"].items()) if not k.startswith("node:"))
            role = "head" if n["head"] else "worker"
            where = f" group={n['group']}" + (f" name={n['name']}" if n["name"] else "") if n["group"] else ""
            typer.echo(f"  {n['node_id']} {n['ip']} {role}{where} {n['state']}: {res}")
        if info["usage"]:
            typer.echo("usage:\n  " + "\n  ".join(info["usage"].strip().splitlines()))
        apps = info["serve_applications"]
        typer.echo("serve applications: " + (", ".join(f"{k}={v}" for k, v in apps.items()) if apps else "none"))
        typer.echo(f"unfinished jobs ({len(info['jobs'])}):")
        for j in info["jobs"]:
            typer.echo(f"  {j['id']} {j['status']}: {j['entrypoint']}")

    @app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def submit(
        ctx: typer.Context,
        stage: Annotated[
            str,
            typer.Argument(
                help="Batch stage to run (see cluster/stages.py): prepare, splits, corpus, embed, index, train-recommender, train-ranker, train-generator, evaluate, generate-content, refresh, smoke."
            ),
        ],
        config: ConfigOpt = None,
        set_: SetOpt = None,
        address: AddressOpt = None,
        wait: Annotated[
            bool,
            typer.Option(
                help="Stream the job's logs and exit with its status (--no-wait: print the job id and return)."
            ),
        ] = True,
    ) -> None:
        """Submit a batch stage as a Ray job (working_dir = this checkout); stream logs; exit 0 if it succeeded.

        Arguments after `--` go to the stage module, e.g. `shopgraph cluster submit smoke -- --fail`.
        """
        from cluster.jobs import JobError, config_in_working_dir, submit_stage
        from cluster.stages import StageError, get_stage

        try:
            found = get_stage(stage)
        except StageError as e:
            raise _fail(str(e), 2) from None
        cfg = load_or_exit(config, set_)
        try:
            rel = config_in_working_dir(config)
        except JobError as e:
            raise _fail(str(e), 2) from None
        try:
            code = submit_stage(
                cfg,
                found,
                address=_address(cfg, address),
                config_path=rel,
                overrides=set_,
                extra_args=list(ctx.args),
                wait=wait,
                echo=typer.echo,
            )
        except JobError as e:
            raise _fail(str(e)) from None
        raise typer.Exit(code)

    @app.command("render")
    def render(
        config: Annotated[
            Path, typer.Option("--config", "-c", help="YAML config the manifests describe.")
        ] = K8S_CONFIG,
        set_: SetOpt = None,
        out: Annotated[Path, typer.Option(help="Directory the manifests are written to.")] = Path("k8s"),
        check: Annotated[
            bool,
            typer.Option(
                "--check", help="Write nothing; exit 1 if the files in --out differ from what the config renders."
            ),
        ] = False,
    ) -> None:
        """Render the KubeRay manifests (RayService, RayJobs, dev RayCluster, ConfigMap, PVC) into k8s/."""
        from cluster import manifests

        cfg = load_or_exit(config, set_)
        source = _display(config)
        try:
            texts = manifests.render_texts(cfg, source)
        except ConfigError as e:
            raise _fail(str(e), 2) from None
        out = out if out.is_absolute() else manifests.REPO_ROOT / out
        if check:
            differ = manifests.diff(texts, out)
            if differ:
                raise _fail(
                    f"{len(differ)} manifest(s) in {out.name}/ differ from {source}: {', '.join(differ)}; run `shopgraph cluster render --config {source}`"
                )
            typer.echo(f"{len(texts)} manifests in {out.name}/ match {source}")
            return
        changed = manifests.write(texts, out)
        typer.echo(
            f"wrote {len(texts)} manifests to {out} ({len(changed)} changed{': ' + ', '.join(changed) if changed else ''})"
        )

    @app.command("deploy")
    def deploy(
        config: Annotated[Path, typer.Option("--config", "-c", help="YAML config of the deployment.")] = K8S_CONFIG,
        set_: SetOpt = None,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Server-side dry run (dryRun=All): validate, change nothing.")
        ] = False,
        wait: Annotated[bool, typer.Option(help="Wait until the RayService reports Ready.")] = True,
        timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for Ready.")] = 900,
        poll: Annotated[float, typer.Option(min=0.05, help="Seconds between status checks.")] = 5,
    ) -> None:
        """Apply Namespace, ConfigMap, PVC and the RayService to Kubernetes; wait until it is Ready."""
        from cluster import kube, manifests

        cfg = load_or_exit(config, set_)
        try:
            manifests.check_renderable(cfg)
        except ConfigError as e:
            raise _fail(str(e), 2) from None
        try:
            api = kube.api_client(kubeconfig, context)
            kube.deploy(cfg, api, dry_run=dry_run, echo=typer.echo)
            if dry_run or not wait:
                return
            ready = kube.rollout_status(cfg, api, wait=True, timeout=timeout, poll=poll, echo=typer.echo)
        except kube.DeployError as e:
            raise _fail(str(e)) from None
        raise typer.Exit(0 if ready else 1)

    @app.command("rollout-status")
    def rollout_status(
        config: Annotated[Path, typer.Option("--config", "-c", help="YAML config of the deployment.")] = K8S_CONFIG,
        set_: SetOpt = None,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        wait: Annotated[bool, typer.Option(help="Poll until Ready or --timeout.")] = False,
        timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait with --wait.")] = 900,
        poll: Annotated[float, typer.Option(min=0.05, help="Seconds between status checks.")] = 5,
    ) -> None:
        """Report the RayService's rollout (Ready condition, upgrade, Serve app statuses); exit 0 when Ready."""
        from cluster import kube

        cfg = load_or_exit(config, set_)
        try:
            ready = kube.rollout_status(
                cfg, kube.api_client(kubeconfig, context), wait=wait, timeout=timeout, poll=poll, echo=typer.echo
            )
        except kube.DeployError as e:
            raise _fail(str(e)) from None
        raise typer.Exit(0 if ready else 1)


def _resource(name: str, value: float) -> str:
    """`CPU=2`, and the byte-valued resources in GiB: `memory=13.4GiB` (Ray reports bytes)."""
    if name in ("memory", "object_store_memory"):
        return f"{name}={value / 2**30:.1f}GiB"
    return f"{name}={value:g}"


def _display(path: Path) -> str:
    from cluster.stages import REPO_ROOT

    resolved = path.resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else path.name
