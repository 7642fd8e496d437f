"""Simulation and queueing theory for choosing policies on real traces (work in progress).

Modules so far: `cost_model` (iteration time from a roofline of model and GPU), `traces`
(Azure LLM traces 2023 and a generic CSV format), `theory` (M/G/1 mean response time of
limited-preemption SRPT, derived with SOAP).
"""
