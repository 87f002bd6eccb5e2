"""What a pipeline stage was built from, and why a committed output is stale.

    shopgraph demo --set data.sample.num_products=2000
    # prints "data prepare  rebuilding: data.sample.num_products changed", then reruns the rest

A stage's build record has three parts, kept apart so that a message can name what changed:
the config values it reads (`{"data.sample": {...}, "data.seed": 0}`), the content digests of
the committed directories it reads (`{"data/events": "<sha256>"}`, from their manifests), and
the shopgraph version. Its fingerprint is one sha256 over a canonical JSON of the three. The
pipeline (cluster/pipeline.py) stores the record in the output's manifest after the stage has
run and compares it on the next run. Plain functions over dicts: no Ray, no config classes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

MAX_NAMED = 8  # changed keys or inputs named in one reason before "and N more"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_parts(config: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The values at dotted `paths` of a dumped config (`model_dump(mode="json")`)."""
    parts: dict[str, Any] = {}
    for path in paths:
        node: Any = config
        for key in path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(f"config has no key {path!r}; fix the stage table in cluster/pipeline.py")
            node = node[key]
        parts[path] = node
    return parts


def build_record(config: Mapping[str, Any], inputs: Mapping[str, str], version: str) -> dict[str, Any]:
    """The record stored with a stage's output: its parts and their fingerprint."""
    parts = {"config": dict(config), "inputs": dict(inputs), "version": version}
    return {"fingerprint": hashlib.sha256(canonical_json(parts).encode()).hexdigest(), **parts}


def changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted paths of the leaves that differ; lists count as one value (e.g. `data.sources`)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new))
        return [path for k in keys for path in changed_keys(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if canonical_json(old) == canonical_json(new) else [prefix]


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def stale_reasons(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Why an output built as `recorded` is not what `current` would build; [] when up to date."""
    if not recorded or "fingerprint" not in recorded:
        return ["no build record (built by an older shopgraph or a single-stage command)"]
    if recorded["fingerprint"] == current["fingerprint"]:
        return []
    reasons = []
    old_config, new_config = recorded.get("config", {}), current["config"]
    keys = [
        k
        for path in sorted(set(old_config) | set(new_config))
        for k in changed_keys(old_config.get(path), new_config.get(path), path)
    ]
    if keys:
        reasons.append(f"{_named(keys)} changed")
    old_inputs, new_inputs = recorded.get("inputs", {}), current["inputs"]
    names = sorted(set(old_inputs) | set(new_inputs))
    inputs = [name for name in names if old_inputs.get(name) != new_inputs.get(name)]
    if inputs:
        reasons.append(f"input {_named(inputs)} changed")
    if recorded.get("version") != current["version"]:
        reasons.append(f"shopgraph {recorded.get('version')} -> {current['version']}")
    return reasons or ["build record differs"]
