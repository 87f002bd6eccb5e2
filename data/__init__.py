"""shopgraph data platform: schemas, readers, validation, shards, embeddings, index (Ray Data).

This package is the base layer: `train/`, `serve/` and `cluster/` import from it, never the
other way round, and it knows nothing about Serve or HTTP.
"""
