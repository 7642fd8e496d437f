"""`trail demo`: a model served end to end under every policy, and the measurements around it.

- :mod:`trail.demo.end_to_end` — collect, train the predictors, serve under FCFS, SJF, LTR,
  TRAIL and TRAIL+, and write the table and plots (`trail demo`)
- :func:`measure_lengths` — serve prompts through the engine and summarise answer lengths

The demo model itself (language, tokenizer, training, cache) is :mod:`trail.models.demo`.
"""


def __getattr__(name: str) -> object:  # PEP 562
    # measure.py is imported on first use: it pulls in the engine, and importing it here
    # would make `python -m trail.demo.measure` run a module that is already imported.
    if name == "measure_lengths":
        from trail.demo.measure import measure_lengths

        return measure_lengths
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["measure_lengths"]
