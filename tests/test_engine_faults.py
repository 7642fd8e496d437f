"""Faults injected into every phase of Engine.step(), and a fuzz of random add/abort/step
sequences: every request ends exactly once, greedy outputs equal model.generate, sampled
outputs equal a run without faults, and no KV block, host copy or probe slot leaks."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from trail import Bins, Probe
from trail.engine import Engine, EngineConfig, SamplingParams
from trail.engine.clock import StepCost
from trail.engine.prefill_weight import PrefillWeightEstimator

import trail_ext as te

VOCAB = 64
PHASES = ("schedule", "kv_move", "kv_ensure", "forward", "forward_after", "sample", "on_step",
          "probe", "observer", "prefill_weight")
# Phases before the commit: step() raises and the retried step serves the same tokens.
RAISING = {"schedule", "kv_move", "kv_ensure", "forward", "forward_after", "sample", "on_step"}


class InjectedFault(RuntimeError):
    """A fault the test injected (never raised by the engine itself)."""


class Faults:
    """Raises InjectedFault in the enabled phases with probability `rate` per call."""

    def __init__(self, rng: np.random.Generator, phases: set[str], rate: float) -> None:
        self.rng, self.phases, self.rate = rng, phases, rate
        self.fired: Counter[str] = Counter()

    def maybe(self, phase: str) -> None:
        if phase in self.phases and self.rng.random() < self.rate:
            self.fired[phase] += 1
            raise InjectedFault(f"injected fault in {phase}")


class FaultyScheduler:
    """The engine's scheduler with faults before schedule, on_step and set_prefill_weight."""

    def __init__(self, real: te.Scheduler, faults: Faults) -> None:
        self._real, self._faults = real, faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __contains__(self, rid: int) -> bool:
        return rid in self._real

    def schedule(self, now: float) -> Any:
        self._faults.maybe("schedule")
        return self._real.schedule(now)

    def on_step(self, *args: Any) -> None:
        self._faults.maybe("on_step")
        self._real.on_step(*args)

    def set_prefill_weight(self, beta: float) -> None:
        self._faults.maybe("prefill_weight")
        self._real.set_prefill_weight(beta)


def wrap(obj: Any, name: str, phase: str, faults: Faults, after: bool = False) -> None:
    """Make obj.name raise before (or after) doing its work, sometimes."""
    real = getattr(obj, name)

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if not after:
            faults.maybe(phase)
        out = real(*args, **kwargs)
        if after:  # the work (e.g. KV writes of a forward) happened, then the failure
            faults.maybe(phase)
        return out

    setattr(obj, name, faulty)


def inject(engine: Engine, faults: Faults) -> None:
    """Put fault points into every phase of engine.step()."""
    engine.scheduler = FaultyScheduler(engine.scheduler, faults)
    # The copies can fail (memory); free is list bookkeeping that cannot.
    for name in ("swap_out", "swap_in"):
        wrap(engine.kv, name, "kv_move", faults)
    wrap(engine.kv, "ensure", "kv_ensure", faults)
    wrap(engine.runner, "forward", "forward", faults)
    wrap(engine.runner, "forward", "forward_after", faults, after=True)
    if engine.probe is not None:
        wrap(engine.probe, "step", "probe", faults)
    engine.observer = lambda record: faults.maybe("observer")


_MODEL: list[transformers.PreTrainedModel] = []
_EXPECTED: dict[tuple[tuple[int, ...], int], list[int]] = {}


def model() -> transformers.PreTrainedModel:
    if not _MODEL:
        torch.manual_seed(3)
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
            initializer_range=0.3)
        _MODEL.append(transformers.LlamaForCausalLM(cfg).eval())
    return copy.deepcopy(_MODEL[0])


def greedy(prompt: list[int], n: int) -> list[int]:
    key = (tuple(prompt), n)
    if key not in _EXPECTED:
        out = _MODEL[0].generate(torch.tensor([prompt]), attention_mask=torch.ones(
            1, len(prompt), dtype=torch.long), max_new_tokens=n, min_new_tokens=n,
            do_sample=False, eos_token_id=None, pad_token_id=0)
        _EXPECTED[key] = out[0, len(prompt):].tolist()
    return _EXPECTED[key]


def engine_for(rng: np.random.Generator, policy: str, mode: str) -> Engine:
    """A tight engine (preemption is constant) with a probe, on a virtual clock, β auto."""
    sc = te.SchedulerConfig(policy=getattr(te.Policy, policy), max_running=int(rng.integers(1, 4)),
                            kv_capacity_tokens=int(rng.choice([40, 64, 96])), block_size=4,
                            c=float(rng.choice([0.5, 1.0])),
                            preempt_mode=getattr(te.PreemptMode, mode),
                            swap_capacity_tokens=32, max_preemptions=-1, starvation_steps=3,
                            starvation_period=2, mlfq_base_quantum=2)
    probe = Probe(32, Bins.uniform(6, 32.0), hidden_dim=8, layer=int(rng.integers(0, 2)),
                  num_slots=1)
    cost = StepCost(1e-3, 1e-5, 1e-4, 1e-6, 1e-5, 1e-6)
    engine = Engine(model(), EngineConfig(
        scheduler=sc, probe=probe, predict_every=int(rng.integers(1, 3)),
        step_cost=cost, prefill_weight="auto"))
    engine._beta = PrefillWeightEstimator(known=cost, every=3, min_each=1)  # β moves often
    return engine


def serve(seed: int, policy: str, mode: str, phases: set[str], rate: float,
          aborts: bool = True) -> tuple[dict[int, tuple[list[int], str]], Faults, Engine]:
    """Random arrivals, aborts and steps; a step that raises is simply stepped again."""
    model()
    rng = np.random.default_rng(seed)
    engine = engine_for(rng, policy, mode)
    faults = Faults(np.random.default_rng(seed + 1000), phases, rate)
    inject(engine, faults)
    jobs = [(rng.integers(0, VOCAB, int(rng.integers(1, 12))).tolist(), int(rng.integers(1, 10)),
             float(rng.choice([0.0, 0.0, 1.0]))) for _ in range(int(rng.integers(3, 9)))]
    ended: dict[int, tuple[list[int], str]] = {}
    returned: Counter[int] = Counter()
    params: dict[int, tuple[list[int], int, float]] = {}
    pending, steps = list(jobs), 0
    while pending or engine.has_unfinished():
        for _ in range(int(rng.integers(0, 3))):
            if pending:
                prompt, n, temp = pending.pop(0)
                rid = engine.add_request(prompt, SamplingParams(max_new_tokens=n, temperature=temp,
                                                                seed=len(params)),
                                         predicted_len=float(rng.uniform(1, 20)))
                params[rid] = (prompt, n, temp)
                wrap(engine._reqs[rid].sampler, "sample", "sample", faults)
        if aborts and engine._reqs and rng.random() < 0.05:
            victim = int(rng.choice(sorted(engine._reqs)))
            out = engine.abort(victim)
            ended[out.rid] = (out.output_ids, out.finish_reason)
            returned[out.rid] += 1
        try:
            done = engine.step()
        except InjectedFault:
            assert phases & RAISING, "a fault after the commit must not escape step()"
            done = []
        for out in done:
            ended[out.rid] = (out.output_ids, out.finish_reason)
            returned[out.rid] += 1
        steps += 1
        assert steps < 3000, "the engine stopped making progress"
    # Every request ended exactly once, and nothing leaked.
    assert sorted(returned) == sorted(params) and set(returned.values()) == {1}
    assert engine.kv.used_blocks == 0 and not engine.kv.tables and not engine.kv.host
    assert not engine._kv_moves and len(engine.scheduler._real) == 0
    assert engine.scheduler.stats()["kv_reserved_blocks"] == 0
    assert sorted(engine.probe._free_slots) == list(range(engine.probe._slots_used))
    for rid, (tokens, reason) in ended.items():
        prompt, n, temp = params[rid]
        if reason != "aborted":
            assert reason == "length" and len(tokens) == n
        if temp == 0:
            assert tokens == greedy(prompt, n)[:len(tokens)], (rid, reason)
    return ended, faults, engine


POLICY_MODES = [("TRAIL", "KEEP"), ("TRAIL", "SWAP"), ("TRAIL", "RECOMPUTE"), ("SJF", "SWAP"),
                ("MLFQ", "RECOMPUTE"), ("FCFS", "KEEP")]


@pytest.mark.parametrize("phase", PHASES)
def test_a_fault_in_any_phase_loses_nothing_and_changes_no_token(phase: str) -> None:
    """Faults in one phase at a high rate: before the commit step() raises and the retried
    step serves the same tokens (sampled ones too); after it the step completes and the fault
    is in Engine.faults."""
    fired = 0
    for k, (policy, mode) in enumerate(POLICY_MODES):
        clean, _, _ = serve(k, policy, mode, set(), 0.0, aborts=False)
        faulty, faults, engine = serve(k, policy, mode, {phase}, 0.3, aborts=False)
        assert faulty == clean, (policy, mode)
        fired += faults.fired[phase]
        if phase not in RAISING:
            assert len(engine.faults) == faults.fired[phase]
            assert all(p == phase for _, p, _ in engine.faults)
    assert fired > 0, f"no fault fired in {phase}"


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_add_abort_step_with_faults_everywhere(seed: int) -> None:
    """Random workloads, aborts, policies, preemption modes and faults in every phase."""
    rng = np.random.default_rng(seed)
    policy = str(rng.choice(["FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ"]))
    mode = str(rng.choice(["KEEP", "SWAP", "RECOMPUTE"]))
    ended, faults, _ = serve(100 + seed, policy, mode, set(PHASES), 0.08)
    assert ended and sum(faults.fired.values()) > 0


def test_a_request_admitted_by_a_failed_step_is_prefilled_again() -> None:
    """The forward of an admission step fails after writing KV; the next step prefills the
    request again (its first token follows its prompt), and the probe starts it once."""
    model()
    eng = Engine(model(), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=2,
                                     kv_capacity_tokens=64, block_size=4),
        probe=Probe(32, Bins.uniform(6, 32.0), hidden_dim=8, layer=1)))
    faults = Faults(np.random.default_rng(0), {"forward_after"}, 1.0)
    wrap(eng.runner, "forward", "forward_after", faults, after=True)
    rid = eng.add_request([5, 6, 7], SamplingParams(max_new_tokens=4))
    with pytest.raises(InjectedFault):
        eng.step()
    assert eng._reqs[rid].output_ids == [] and eng._reqs[rid].computed == 0
    faults.rate = 0.0
    out: list[Any] = []
    while eng.has_unfinished():
        out += eng.step()
    assert out[0].output_ids == greedy([5, 6, 7], 4) and eng.probe._slots_used == 1
    assert len(out[0].predictions) == 3  # one per step that left it running



def test_a_kept_preemption_after_a_failed_step_frees_the_block_reserved_ahead() -> None:
    """A failed step has allocated a request's next block; the next step preempts it for
    rank with its KV kept. The scheduler then counts only the blocks of its tokens, and so
    must the pool (the engine checks the two agree every step)."""
    model()
    eng = Engine(model(), EngineConfig(scheduler=te.SchedulerConfig(
        policy=te.Policy.SRPT, max_running=1, kv_capacity_tokens=64, block_size=4)))
    a = eng.add_request([5, 6, 7], SamplingParams(max_new_tokens=6), predicted_len=100.0)
    eng.step()  # a: 3 prompt tokens + 1 generated = 4, one full block
    faults = Faults(np.random.default_rng(0), {"forward"}, 1.0)
    wrap(eng.runner, "forward", "forward", faults)
    with pytest.raises(InjectedFault):
        eng.step()  # allocated a's second block (for token 5), then failed
    assert len(eng.kv.tables[a]) == 2
    faults.rate = 0.0
    b = eng.add_request([1, 2], SamplingParams(max_new_tokens=3), predicted_len=1.0)
    eng.step()  # b outranks a: a is preempted, its KV kept
    assert eng.scheduler.get(a).state == te.RequestState.PREEMPTED
    assert len(eng.kv.tables[a]) == 1 and eng.kv.used_blocks == eng.scheduler.kv_reserved_blocks()
    out = {}
    while eng.has_unfinished():
        out.update({o.rid: o.output_ids for o in eng.step()})
    assert out[a] == greedy([5, 6, 7], 6) and out[b] == greedy([1, 2], 3)
    assert eng.kv.used_blocks == 0
