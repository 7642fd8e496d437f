"""The offline pipeline that drives the engine: collect hidden states, train and evaluate the
probe, and fit the prompt-only and learning-to-rank baselines it is compared with.

Nothing in the serving path (`trail.engine`, `trail.probe`) imports this package.
"""
