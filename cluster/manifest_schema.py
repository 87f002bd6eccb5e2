"""Validate rendered manifests: KubeRay objects against the CRDs' openAPIV3Schema, core
objects against the Kubernetes schemas that `kubernetes-validate` ships.

    SHOPGRAPH_KUBERAY_CRDS=path/to/kuberay-crds .venv/bin/python -m pytest tests/cluster/test_manifests.py

The CRDs are not vendored into this repository; callers pass the directory that holds
ray.io_rayclusters.yaml, ray.io_rayjobs.yaml and ray.io_rayservices.yaml.

A structural CRD schema differs from plain JSON Schema in ways that matter here:
- the API server *prunes* unknown fields silently, so a misspelt key would vanish without an
  error. We make that an error instead: every object schema that lists `properties` and
  neither allows `additionalProperties` nor says `x-kubernetes-preserve-unknown-fields`
  gets `additionalProperties: false`;
- `x-kubernetes-int-or-string` fields accept an integer or a string;
- `x-kubernetes-embedded-resource` objects must carry apiVersion and kind;
- CEL rules (`x-kubernetes-validations`) run only in the API server and are not checked.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
SERVED_VERSION = "v1"


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("x-kubernetes-embedded-resource"):
        out.setdefault("required", [])
        out["required"] = sorted({*out["required"], "apiVersion", "kind"})
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(crd_dir: Path, kind: str) -> dict[str, Any]:
    path = crd_dir / CRD_FILES[kind]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large: the C loader is ~10x faster
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (a safe loader)
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    version = versions.get(SERVED_VERSION)
    if version is None or not version.get("served"):
        raise ValueError(f"{path} does not serve {SERVED_VERSION}; KubeRay >= 1.0 is needed")
    schema = _structural(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # metadata is validated by the API server's ObjectMeta rules, not by the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


@cache
def _validator(crd_dir: Path, kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(crd_dir, kind))


def validate_kuberay(obj: dict[str, Any], crd_dir: Path) -> list[str]:
    """Every schema violation of a KubeRay object, as 'path: message' lines (empty = valid)."""
    if obj.get("apiVersion") != f"ray.io/{SERVED_VERSION}":
        return [f"apiVersion: expected ray.io/{SERVED_VERSION}, got {obj.get('apiVersion')!r}"]
    validator = _validator(crd_dir, obj["kind"])
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=str)
    ]


def validate_core(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Validate a core object with kubernetes-validate (strict: unknown fields are errors)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}"]
    return []


_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
# The part of the Prometheus Operator's PodMonitor CRD (monitoring.coreos.com/v1) the manifests use,
# with its types and patterns; unknown keys are errors, as for the KubeRay CRDs above. The CRD
# itself is not vendored here (no Prometheus Operator in ../kuberay-crds).
POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": _SELECTOR,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                                        },
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "replacement": {"type": "string"},
                                        "action": {
                                            "enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_pod_monitor(obj: dict[str, Any]) -> list[str]:
    """Schema violations of a PodMonitor (POD_MONITOR_SCHEMA), as 'path: message' lines."""
    validator = jsonschema.Draft7Validator(POD_MONITOR_SCHEMA)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=str)
    ]


def validate(obj: dict[str, Any], crd_dir: Path, kubernetes_version: str) -> list[str]:
    if obj.get("kind") in CRD_FILES:
        return validate_kuberay(obj, crd_dir)
    if obj.get("kind") == "PodMonitor":
        return validate_pod_monitor(obj)
    return validate_core(obj, kubernetes_version)
