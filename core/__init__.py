"""shopgraph core: what every other package stands on.

The root config and its sections (`core.config`), the artifact layout and committed-directory
manifests, the Arrow data contracts and shard sets, product facts as every stage serializes
them, the Ray runtime (joining or starting Ray) and the options every command shares. It
imports no other shopgraph package: `ml`, `data`, `train`, `serve` and `cluster` build on it.
"""
