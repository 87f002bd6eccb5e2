"""shopgraph data platform: readers, validation, quarantine, shards, splits, corpora,
embeddings and the index job (Ray Data).

It builds on `core` and `ml` only: `train/` and `cluster/` import from it, never the other
way round, and it knows nothing about Serve or HTTP.
"""
