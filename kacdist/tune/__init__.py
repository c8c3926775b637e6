"""The (a, c, g) search of stage=tune, apart from its execution: the search space (space.py), the
data-driven proposal (proposal.py) and the results table, heat map and best setting (results.py).
Ray Tune itself is driven by kacdist.cluster.tune."""
