"""shopgraph training: Ray Train recipes for the recommender, ranker and generator LM, the
recommender's evaluation, checkpoint export and batch content generation. Reads `data/` outputs,
never raw files; model definitions it fits live in `ml/`."""
