"""A stand-in for the Kubernetes API server: the subset `shopgraph cluster deploy` uses.

    with KubeStandin() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")

Bound to 127.0.0.1 on a free port, plain HTTP. It serves discovery of ray.io/v1, and
GET / POST / PATCH (JSON merge patch) of namespaces, configmaps, persistentvolumeclaims and
rayservices, with `dryRun=All` honoured (validated, not stored). A RayService turns Ready
after `ready_after` reads of it, the way KubeRay's controller reports it (condition `Ready`,
`observedGeneration`, Serve application statuses). Modes: "ok", "no-crds" (ray.io is not
served: KubeRay not installed) and "forbidden" (RBAC denies every namespaced ray.io call).
It is not a real API server: no admission, no schema validation, no watch.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

RAY_RESOURCES = [
    {
        "name": "rayservices",
        "singularName": "rayservice",
        "namespaced": True,
        "kind": "RayService",
        "verbs": ["get", "list", "create", "patch", "update", "delete", "watch"],
    },
    {
        "name": "rayservices/status",
        "singularName": "",
        "namespaced": True,
        "kind": "RayService",
        "verbs": ["get", "patch", "update"],
    },
    {
        "name": "rayclusters",
        "singularName": "raycluster",
        "namespaced": True,
        "kind": "RayCluster",
        "verbs": ["get", "list", "create", "patch"],
    },
    {
        "name": "rayjobs",
        "singularName": "rayjob",
        "namespaced": True,
        "kind": "RayJob",
        "verbs": ["get", "list", "create", "patch"],
    },
]
NAMESPACED = re.compile(r"^/(api/v1|apis/ray\.io/v1)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?$")
NAMESPACE = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?$")
GROUP_OF = {"configmaps": "", "persistentvolumeclaims": "", "rayservices": "ray.io"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KubeStandin:
    def __init__(self, mode: str = "ok", ready_after: int = 2) -> None:
        self.mode = mode
        self.ready_after = ready_after
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name)
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._reads_left: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KubeStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "shopgraph") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "dev", "user": {"token": "not-a-secret"}}],
                    "contexts": [
                        {"name": "standin", "context": {"cluster": "standin", "user": "dev", "namespace": namespace}}
                    ],
                    "current-context": "standin",
                }
            )
        )
        return path

    # --- request handling -------------------------------------------------------------

    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def _new_meta(self, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        meta.update(
            {
                "uid": str(uuid.uuid4()),
                "resourceVersion": "1",
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
        )
        return obj

    def _progress(self, key: tuple[str, str, str]) -> None:
        """Each read of a RayService moves it one step toward Ready, like KubeRay's reconcile loop."""
        obj = self.objects[key]
        left = self._reads_left.get(key, 0)
        generation = obj["metadata"]["generation"]
        if left > 0:
            self._reads_left[key] = left - 1
            obj["status"] = {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "Initializing",
                        "message": "waiting for the Ray cluster and Serve applications",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "observedGeneration": generation,
                "serviceStatus": "",
            }
            return
        apps = {}
        for app in yaml.safe_load(obj["spec"].get("serveConfigV2") or "{}").get("applications", []):
            apps[app["name"]] = {"status": "RUNNING", "serveDeploymentStatuses": {}}
        obj["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "NonZeroServeEndpoints",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:01Z",
                }
            ],
            "observedGeneration": generation,
            "serviceStatus": "Running",
            "numServeEndpoints": 2,
            "activeServiceStatus": {"applicationStatuses": apps, "rayClusterName": f"{obj['metadata']['name']}-abc12"},
        }

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, dict[str, Any]]:
        parsed = urlparse(raw_path)
        path, query = parsed.path.rstrip("/"), parse_qs(parsed.query)
        with self._lock:
            self.requests.append((method, path, query))
            dry = query.get("dryRun") == ["All"]
            if path == "/apis/ray.io/v1":
                if self.mode == "no-crds":
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                return 200, {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": "ray.io/v1",
                    "resources": RAY_RESOURCES,
                }
            if m := NAMESPACE.match(path):
                return self._namespace(method, m.group(1), body, dry)
            m = NAMESPACED.match(path)
            if not m:
                return self._status(404, "NotFound", "the server could not find the requested resource")
            api, namespace, plural, name = m.groups()
            if api.startswith("apis/ray.io"):
                if self.mode == "no-crds":
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                if self.mode == "forbidden":
                    verb = {"GET": "get", "POST": "create", "PATCH": "patch"}.get(method, method.lower())
                    return self._status(
                        403,
                        "Forbidden",
                        f'{plural}.ray.io "{name or ""}" is forbidden: User "dev" cannot {verb} resource "{plural}" in API group "ray.io" in the namespace "{namespace}"',
                    )
            return self._namespaced(method, namespace, plural, name, body, dry)

    def _namespace(self, method: str, name: str | None, body: Any, dry: bool) -> tuple[int, dict[str, Any]]:
        if method == "GET" and name:
            if name not in self.namespaces:
                return self._status(404, "NotFound", f'namespaces "{name}" not found')
            return 200, self.namespaces[name]
        if method == "POST" and not name:
            new = body["metadata"]["name"]
            if new in self.namespaces:
                return self._status(409, "AlreadyExists", f'namespaces "{new}" already exists')
            obj = self._new_meta(body, None)
            if not dry:
                self.namespaces[new] = obj
            return 201, obj
        return self._status(405, "MethodNotAllowed", f"{method} not supported by the stand-in")

    def _namespaced(
        self, method: str, namespace: str, plural: str, name: str | None, body: Any, dry: bool
    ) -> tuple[int, dict[str, Any]]:
        if plural not in GROUP_OF:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        qualified = f"{plural}.{GROUP_OF[plural]}".rstrip(".")
        if method == "POST" and name is None:
            key = (plural, namespace, body["metadata"]["name"])
            if key in self.objects:
                return self._status(409, "AlreadyExists", f'{qualified} "{key[2]}" already exists')
            obj = self._new_meta(body, namespace)
            if not dry:
                self.objects[key] = obj
                self._reads_left[key] = self.ready_after
            return 201, obj
        key = (plural, namespace, name or "")
        if key not in self.objects:
            return self._status(404, "NotFound", f'{qualified} "{name}" not found')
        if method == "GET":
            if plural == "rayservices":
                self._progress(key)
            return 200, self.objects[key]
        if method == "PATCH":
            current = self.objects[key]
            patched = merge_patch(current, body)
            if patched.get("spec") != current.get("spec") or patched.get("data") != current.get("data"):
                patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
                patched["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            if not dry:
                self.objects[key] = patched
                if plural == "rayservices" and patched["metadata"]["generation"] != current["metadata"]["generation"]:
                    self._reads_left[key] = self.ready_after
            return 200, patched
        return self._status(405, "MethodNotAllowed", f"{method} not supported by the stand-in")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if method == "PATCH" and "merge-patch" not in (self.headers.get("Content-Type") or ""):
                    code, payload = standin._status(
                        415,
                        "UnsupportedMediaType",
                        f"the stand-in only speaks merge-patch, got {self.headers.get('Content-Type')}",
                    )
                else:
                    code, payload = standin.handle(method, self.path, json.loads(raw) if raw else None)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        return Handler
