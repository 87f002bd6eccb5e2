"""shopgraph serving: the Ray Serve application (ingress, retriever, ranker, generator)."""
