"""Simulation and queueing theory for choosing policies on real traces.

`traces` (Azure LLM traces 2023, a generic CSV format, Poisson traces, rate scaling),
`cost_model` (iteration time from a roofline of model and GPU, with presets),
`predictors` (oracle, prompt-only, embedding probe, LTR), `simulator` (an iteration loop that
drives the real `trail_ext.Scheduler`), `theory` (M/G/1 mean response time of
limited-preemption SRPT, derived with SOAP in docs/theory.md).
"""
