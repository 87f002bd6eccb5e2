"""shopgraph training: Ray Train recipes for the recommender, ranker and generator LM,
evaluation metrics and checkpoint export. Reads `data/` outputs, never raw files."""
