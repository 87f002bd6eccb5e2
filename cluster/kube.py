"""Apply the RayService to a Kubernetes cluster and follow its rollout.

    shopgraph cluster deploy [--config configs/gpu-cluster.yaml] [--kubeconfig PATH] [--dry-run]
    shopgraph cluster rollout-status [--wait --timeout 900]

`deploy` renders the same objects as `shopgraph cluster render` (Namespace, ConfigMap, PVC,
RayService) and applies them with the `kubernetes` client: create when absent, JSON merge
patch when present (the PVC is only created, its spec is immutable). `--dry-run` sends the
same requests with `dryRun=All`, so the API server validates them and changes nothing.
Readiness follows the KubeRay v1 RayService status: condition `Ready` = True, for the
current generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.manifests import core_objects, ray_service
from core.config import ShopgraphConfig

Echo = Callable[[str], None]
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
INSTALL_HINT = (
    "install the KubeRay operator (e.g. `helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0`)"
)


class DeployError(RuntimeError):
    """Kubernetes cannot be reached or refused the request; the message says what to change."""


def api_client(kubeconfig: Path | None = None, context: str | None = None):
    """An ApiClient for `kubeconfig` (default: $KUBECONFIG or ~/.kube/config, then in-cluster)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if kubeconfig is not None and not kubeconfig.is_file():
            raise DeployError(f"kubeconfig {kubeconfig} not found; pass --kubeconfig with an existing file")
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=configuration
        )
    except ConfigException as e:
        if kubeconfig is not None:
            raise DeployError(f"kubeconfig {kubeconfig} is not usable: {e}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            raise DeployError(
                f"no kubeconfig found ({e}); pass --kubeconfig PATH, set KUBECONFIG, or run inside a pod with a service account"
            ) from None
    configuration.retries = 1
    return client.ApiClient(configuration)


def _explain(e: Exception, what: str, namespace: str) -> DeployError:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(e, ApiException):
        reason = _api_message(e)
        if e.status == 403:
            return DeployError(
                f"forbidden (HTTP 403) to {what} in namespace {namespace}: {reason}; "
                "your kubeconfig user needs RBAC rights (get, create, patch) on rayservices.ray.io, configmaps and persistentvolumeclaims there"
            )
        if e.status == 401:
            return DeployError(
                f"unauthorized (HTTP 401) to {what}: {reason}; refresh the credentials in your kubeconfig"
            )
        return DeployError(f"the API server refused to {what} (HTTP {e.status}): {reason}")
    if isinstance(e, HTTPError):
        return DeployError(
            f"cannot reach the Kubernetes API server to {what}: {e}; check the server in your kubeconfig (--kubeconfig, --context)"
        )
    return DeployError(f"cannot {what}: {e}")


def _api_message(e: Any) -> str:
    import json

    try:
        return json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


def check_kuberay(api) -> None:
    """Fail clearly when the ray.io/v1 API group (KubeRay's CRDs) is not served."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    except ApiException as e:
        if e.status == 404:
            raise DeployError(
                f"KubeRay is not installed in this cluster: the API group {GROUP}/{VERSION} is not served (HTTP 404); {INSTALL_HINT}"
            ) from None
        raise _explain(e, f"discover {GROUP}/{VERSION}", "-") from None
    except Exception as e:
        raise _explain(e, f"discover {GROUP}/{VERSION}", "-") from None
    names = {r.name for r in resources.resources}
    if PLURAL not in names:
        raise DeployError(
            f"the {GROUP}/{VERSION} API has no {PLURAL} (found: {', '.join(sorted(names)) or 'none'}); {INSTALL_HINT}"
        )


def _apply(read: Callable, create: Callable, patch: Callable | None, body: dict[str, Any], dry_run: bool) -> str:
    from kubernetes.client.exceptions import ApiException

    kwargs = {"dry_run": "All"} if dry_run else {}
    try:
        read()
    except ApiException as e:
        if e.status != 404:
            raise
        create(body, **kwargs)
        return "created"
    if patch is None:
        return "unchanged (exists)"
    patch(body, **kwargs)
    return "configured"


def deploy(cfg: ShopgraphConfig, api, *, dry_run: bool = False, echo: Echo = print) -> None:
    """Apply Namespace, ConfigMap, PVC and RayService; raise DeployError with a clear message."""
    from kubernetes import client

    check_kuberay(api)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = cfg.cluster.namespace
    suffix = " (server dry run)" if dry_run else ""
    namespace, config_map, pvc = core_objects(cfg)
    service = ray_service(cfg)
    name = service["metadata"]["name"]
    steps = [
        (
            "namespace",
            ns,
            lambda: core.read_namespace(ns),
            lambda b, **k: core.create_namespace(b, **k),
            None,
            namespace,
        ),
        (
            "configmap",
            config_map["metadata"]["name"],
            lambda: core.read_namespaced_config_map(config_map["metadata"]["name"], ns),
            lambda b, **k: core.create_namespaced_config_map(ns, b, **k),
            lambda b, **k: core.patch_namespaced_config_map(config_map["metadata"]["name"], ns, b, **k),
            config_map,
        ),
        (
            "persistentvolumeclaim",
            pvc["metadata"]["name"],
            lambda: core.read_namespaced_persistent_volume_claim(pvc["metadata"]["name"], ns),
            lambda b, **k: core.create_namespaced_persistent_volume_claim(ns, b, **k),
            None,
            pvc,
        ),
        (
            "rayservice.ray.io",
            name,
            lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name),
            lambda b, **k: custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b, **k),
            lambda b, **k: custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, b, **k),
            service,
        ),
    ]
    for kind, obj_name, read, create, patch, body in steps:
        try:
            result = _apply(read, create, patch, body, dry_run)
        except DeployError:
            raise
        except Exception as e:
            raise _explain(e, f"apply {kind}/{obj_name}", ns) from None
        echo(f"{kind}/{obj_name} {result}{suffix}")
        if dry_run and kind == "namespace" and result == "created":
            echo(
                f"namespace {ns} does not exist yet: the namespaced objects are checked once it does (nothing was changed)"
            )
            return


def readiness(obj: dict[str, Any]) -> tuple[bool, str]:
    """(ready, one-line summary) from a RayService object (KubeRay v1 status)."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready_cond = conditions.get("Ready")
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    current = generation is None or observed is None or observed >= generation
    ready = bool(ready_cond and ready_cond.get("status") == "True" and current)
    parts = [
        f"Ready={ready_cond.get('status')} ({ready_cond.get('reason')}: {ready_cond.get('message') or '-'})"
        if ready_cond
        else "Ready=Unknown (no status yet)"
    ]
    upgrade = conditions.get("UpgradeInProgress")
    if upgrade and upgrade.get("status") == "True":
        parts.append(f"upgrade in progress ({upgrade.get('reason')})")
    if not current:
        parts.append(f"status is for generation {observed}, spec is generation {generation}")
    apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    if apps:
        parts.append("apps: " + ", ".join(f"{n}={a.get('status')}" for n, a in sorted(apps.items())))
    if status.get("numServeEndpoints") is not None:
        parts.append(f"serve endpoints: {status['numServeEndpoints']}")
    return ready, "; ".join(parts)


def rollout_status(
    cfg: ShopgraphConfig, api, *, wait: bool, timeout: float, poll: float = 5.0, echo: Echo = print
) -> bool:
    """Report the RayService's readiness; with `wait`, poll until ready or `timeout` seconds."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    ns, name = cfg.cluster.namespace, cfg.cluster.k8s.serve_app.name
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                check_kuberay(api)  # a missing CRD also answers 404: say which it is
                raise DeployError(
                    f"RayService {name} not found in namespace {ns}; run `shopgraph cluster deploy`"
                ) from None
            raise _explain(e, f"read rayservice/{name}", ns) from None
        except Exception as e:
            raise _explain(e, f"read rayservice/{name}", ns) from None
        ready, summary = readiness(obj)
        if summary != last:
            echo(f"rayservice/{name}: {summary}")
            last = summary
        if ready:
            echo(f"rayservice/{name} is ready")
            return True
        if not wait or time.monotonic() >= deadline:
            if wait:
                echo(
                    f"rayservice/{name} not ready after {timeout:.0f}s; see `kubectl -n {ns} describe rayservice {name}`"
                )
            return False
        time.sleep(poll)
