"""`trail demo`: a model served end to end under every policy, and the measurements around it.

- :mod:`trail.demo.end_to_end` — collect, train the predictors, serve under FCFS, SJF, LTR,
  TRAIL and TRAIL+, and write the table and plots (`trail demo`)
- :func:`measure_lengths` — serve prompts through the engine and summarise answer lengths

The demo model itself (language, tokenizer, training, cache) is :mod:`trail.models.demo`.
"""


from trail.demo.measure import measure_lengths

__all__ = ["measure_lengths"]
