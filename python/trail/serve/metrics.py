"""The server's metrics in Prometheus' text format (`GET /metrics`), named after vLLM's where
one exists (`vllm:num_requests_waiting` is `trail_requests_waiting` here).

Latencies are what the client sees: from the HTTP request's arrival at the engine loop to
its first token (TTFT), between its tokens (TPOT: decode time over tokens after the first),
and to its end. The probe's running MAE scores each finished request's refreshed
predictions against the lengths that followed (`trail.policies.PredictionErrors`).
"""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

from trail.engine import RequestOutput
from trail.policies import PredictionErrors

# seconds: from a fast step on a GPU to minutes of queueing on a CPU
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
                   160.0, 320.0, 640.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
                5.0)


class ServerMetrics:
    """Every metric the server exports, in a registry of its own (one per server)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.waiting = Gauge("trail_requests_waiting", "Requests waiting to be scheduled.",
                             registry=r)
        self.running = Gauge("trail_requests_running", "Requests in the running batch.",
                             registry=r)
        self.preempted = Gauge("trail_requests_preempted", "Requests preempted, not resumed.",
                               registry=r)
        self.kv_blocks = Gauge("trail_kv_blocks_used", "KV cache blocks held by requests.",
                               registry=r)
        self.probe_slots = Gauge("trail_probe_slots_used",
                                 "Probe serving slots held by requests.", registry=r)
        self.preemptions = Counter("trail_preemptions", "Preemptions of running requests.",
                                   registry=r)
        self.prompt_tokens = Counter("trail_prompt_tokens", "Prompt tokens admitted.",
                                     registry=r)
        self.generation_tokens = Counter("trail_generation_tokens", "Tokens generated.",
                                         registry=r)
        self.finished = Counter("trail_requests_finished",
                                "Requests ended, by finish reason (stop, length, abort, error).",
                                ["finish_reason"], registry=r)
        self.rejected = Counter("trail_requests_rejected",
                                "Requests refused before queueing, by reason.", ["reason"],
                                registry=r)
        self.step_failures = Counter("trail_engine_step_failures",
                                     "Engine steps that raised (each is retried).", registry=r)
        self.engine_faults = Counter("trail_engine_faults",
                                     "Probe or bookkeeping failures the engine served through.",
                                     registry=r)
        self.ttft = Histogram("trail_time_to_first_token_seconds", "Time to first token.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("trail_time_per_output_token_seconds",
                              "Time per output token after the first.", buckets=TPOT_BUCKETS,
                              registry=r)
        self.e2e = Histogram("trail_e2e_request_latency_seconds", "End-to-end request latency.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.probe_mae = Gauge("trail_probe_mae_tokens",
                               "Mean absolute error of the probe's remaining-length predictions "
                               "on recently finished requests (NaN until one is scored).",
                               registry=r)
        self.probe_mae.set(float("nan"))
        self._errors = PredictionErrors()
        self._preemptions_seen = 0
        self._faults_seen = 0

    def step(self, stats: dict[str, int], faults: int, kv_blocks: int, probe_slots: int
             ) -> None:
        """After an engine step (or requests joined or left): the scheduler's counts, the
        engine's fault count, and the KV blocks and probe slots held."""
        self.kv_blocks.set(kv_blocks)
        self.probe_slots.set(probe_slots)
        self.waiting.set(stats["waiting"])
        self.running.set(stats["running"])
        self.preempted.set(stats["preempted"])
        self.preemptions.inc(max(0, stats["preemptions"] - self._preemptions_seen))
        self._preemptions_seen = stats["preemptions"]
        self.engine_faults.inc(max(0, faults - self._faults_seen))
        self._faults_seen = faults

    def request_done(self, out: RequestOutput | None, reason: str, e2e_s: float,
                     decode_s: float) -> None:
        """A request ended with `reason` after `e2e_s` seconds, `decode_s` of them after its
        first token."""
        self.finished.labels(reason).inc()
        self.e2e.observe(e2e_s)
        if out is None:
            return
        n = len(out.output_ids)
        if n > 1:
            self.tpot.observe(decode_s / (n - 1))
        if out.predictions:
            for g, p in zip(out.prediction_tokens, out.predictions):
                self._errors.refreshed(out.rid, g, p)
            self._errors.finished(out.rid, n)
            mae = self._errors.maes(min_requests=1)[1]
            if mae is not None:
                self.probe_mae.set(mae)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
