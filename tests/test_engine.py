"""The engine, token for token against model.generate, under forced preemption (float32, CPU)."""

from __future__ import annotations

import copy
import math
import pathlib
from typing import Any, Callable

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from trail import Bins, Probe
from trail.engine import Engine, EngineConfig, SamplingParams

import trail_ext as te

VOCAB = 96


def tiny(kind: str) -> transformers.PreTrainedModel:
    """A tiny random model with varied outputs (initializer_range 0.3), float32, eval."""
    torch.manual_seed({"llama": 0, "qwen2": 1, "gpt2": 2}[kind])
    if kind == "llama":
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            initializer_range=0.3)
        return transformers.LlamaForCausalLM(cfg).eval()
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
            initializer_range=0.3)
        return transformers.Qwen2ForCausalLM(cfg).eval()
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                  n_positions=128, initializer_range=0.3, bos_token_id=1,
                                  eos_token_id=1)
    return transformers.GPT2LMHeadModel(cfg).eval()


MODELS: dict[str, transformers.PreTrainedModel] = {}
EXPECTED: dict[tuple[str, tuple[int, ...], int], list[int]] = {}


def model_for(kind: str) -> transformers.PreTrainedModel:
    """A fresh copy per test (the engine sets its attention implementation on the model)."""
    if kind not in MODELS:
        MODELS[kind] = tiny(kind)
    return copy.deepcopy(MODELS[kind])


def greedy(kind: str, prompt: list[int], n: int) -> list[int]:
    """What model.generate gives for this prompt alone (cached)."""
    key = (kind, tuple(prompt), n)
    if key not in EXPECTED:
        m = model_for(kind)
        # An explicit mask: otherwise generate() takes prompt tokens equal to pad_token_id
        # for padding and masks them out.
        out = m.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                           dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
        EXPECTED[key] = out[0, len(prompt):].tolist()
    return EXPECTED[key]


def workload(seed: int, n: int = 7) -> list[tuple[list[int], int]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, VOCAB, int(rng.integers(1, 14))).tolist(), int(rng.integers(2, 12)))
            for _ in range(n)]


def drive(engine: Engine, jobs: list[tuple[list[int], int]], params: Callable[[int], SamplingParams],
          adversary: np.random.Generator | None = None, stagger: int = 2) -> dict[int, Any]:
    """Add jobs a few per step; optionally scramble predictions every step to force preemption."""
    outputs: dict[int, Any] = {}
    pending = list(enumerate(jobs))
    rid_of: dict[int, int] = {}
    steps = 0
    while pending or engine.has_unfinished():
        for _ in range(min(stagger, len(pending))):
            i, (prompt, n) = pending.pop(0)
            rid_of[engine.add_request(prompt, params(n), predicted_len=float(20 - i),
                                      score=float(i % 3))] = i
        for o in engine.step():
            outputs[rid_of[o.rid]] = o
        if adversary is not None:
            live = [r for r in rid_of if r in engine.scheduler]
            if live:
                engine.scheduler.update_predictions(live, adversary.uniform(0, 30, len(live)))
                engine.scheduler.update_scores(live, adversary.normal(size=len(live)))
        steps += 1
        assert steps < 2000, "the engine stopped making progress"
    return outputs


POLICIES = ["FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ"]
MODES = ["KEEP", "SWAP", "RECOMPUTE"]
PREEMPTIVE = ("SRPT", "TRAIL", "LTR", "MLFQ")  # preempt for rank: tight_config makes them churn


def tight_config(policy: str, mode: str) -> te.SchedulerConfig:
    """Two running at most and KV for about three short requests: preemption is constant."""
    return te.SchedulerConfig(policy=getattr(te.Policy, policy), max_running=2,
                              kv_capacity_tokens=48, block_size=4, c=1.0,
                              preempt_mode=getattr(te.PreemptMode, mode),
                              swap_capacity_tokens=24, max_preemptions=-1,
                              starvation_steps=3, starvation_period=2, mlfq_base_quantum=2,
                              mlfq_prefill_ratio=4.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_outputs_equal_generate_under_preemption(kind: str, policy: str, mode: str) -> None:
    engine = Engine(model_for(kind), EngineConfig(scheduler=tight_config(policy, mode)))
    jobs = workload(seed=len(kind) * 7 + POLICIES.index(policy))
    out = drive(engine, jobs, lambda n: SamplingParams(max_new_tokens=n),
                adversary=np.random.default_rng(1))
    for i, (prompt, n) in enumerate(jobs):
        assert out[i].output_ids == greedy(kind, prompt, n), f"request {i}"
        assert out[i].finish_reason == "length" and out[i].prompt_ids == prompt
    # Each run on its own proves its preemptions happened (13 or more in every preemptive
    # run when written), so the test means the same under -k, -x or any order.
    if policy in PREEMPTIVE:
        assert sum(o.preemptions for o in out.values()) > 0
    assert engine.kv.used_blocks == 0 and not engine.kv.host


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["SJF", "TRAIL"])
def test_kv_aware_filling_serves_the_same_tokens(policy: str, mode: str) -> None:
    """kv_aware holds memory back for predicted growth: the engine's KV accounting stays
    exact (the engine checks it every step) and every request still gets generate()'s tokens."""
    cfg = tight_config(policy, mode)
    cfg.kv_aware = True
    engine = Engine(model_for("llama"), EngineConfig(scheduler=cfg))
    jobs = workload(seed=11 + POLICIES.index(policy))
    out = drive(engine, jobs, lambda n: SamplingParams(max_new_tokens=n),
                adversary=np.random.default_rng(2))
    for i, (prompt, n) in enumerate(jobs):
        assert out[i].output_ids == greedy("llama", prompt, n), f"request {i}"
    assert engine.kv.used_blocks == 0 and not engine.kv.host


@pytest.mark.parametrize("mode", MODES)
def test_seeded_sampling_is_unchanged_by_preemption(mode: str) -> None:
    jobs = workload(seed=5)

    def sampled(cfg: te.SchedulerConfig, adversary: np.random.Generator | None) -> list[list[int]]:
        eng = Engine(model_for("llama"), EngineConfig(scheduler=cfg))
        out = drive(eng, jobs, lambda n: SamplingParams(max_new_tokens=n, temperature=1.0,
                                                        top_p=0.9, seed=1234 + n),
                    adversary=adversary)
        preempted = sum(o.preemptions for o in out.values())
        return [out[i].output_ids for i in range(len(jobs))], preempted

    calm, p0 = sampled(te.SchedulerConfig(policy=te.Policy.FCFS, max_running=8,
                                          kv_capacity_tokens=1024, block_size=4), None)
    stormy, p1 = sampled(tight_config("SRPT", mode), np.random.default_rng(3))
    assert p0 == 0 and p1 > 0
    assert calm == stormy
    assert calm != [greedy("llama", p, n) for p, n in jobs]  # it really sampled


def test_stop_tokens_and_max_model_len() -> None:
    kind = "llama"
    prompt = [3, 14, 15, 92, 65]
    ref = greedy(kind, prompt, 10)
    eng = Engine(model_for(kind), EngineConfig(
        scheduler=te.SchedulerConfig(max_running=4, kv_capacity_tokens=256, block_size=4),
        max_model_len=len(prompt) + 4))
    a = eng.add_request(prompt, SamplingParams(max_new_tokens=10, stop_token_ids=[ref[2]]))
    b = eng.add_request(prompt, SamplingParams(max_new_tokens=10))
    outs = {}
    while eng.has_unfinished():
        outs.update({o.rid: o for o in eng.step()})
    stop_at = ref.index(ref[2]) + 1
    assert outs[a].output_ids == ref[:stop_at] and outs[a].finish_reason == "stop"
    assert outs[b].output_ids == ref[:4] and outs[b].finish_reason == "length"


def test_bad_requests_raise_and_others_continue() -> None:
    eng = Engine(model_for("gpt2"), EngineConfig(
        scheduler=te.SchedulerConfig(max_running=4, kv_capacity_tokens=32, block_size=4),
        max_model_len=40))
    good = eng.add_request([1, 2, 3], SamplingParams(max_new_tokens=5))
    bad_calls: list[tuple[Callable[[], Any], type, str]] = [
        (lambda: eng.add_request([], SamplingParams(max_new_tokens=5)), ValueError, "empty"),
        (lambda: eng.add_request(list(range(40)), SamplingParams()), ValueError, "max_model_len"),
        (lambda: SamplingParams(max_new_tokens=0), ValueError, "max_new_tokens"),
        (lambda: SamplingParams(max_new_tokens=-3), ValueError, "max_new_tokens"),
        (lambda: eng.add_request([1, VOCAB], SamplingParams()), ValueError, "vocabulary"),
        (lambda: eng.add_request([-1], SamplingParams()), ValueError, "vocabulary"),
        (lambda: eng.add_request([1] * 30, SamplingParams(max_new_tokens=9)), ValueError,
         "never fit"),
        (lambda: SamplingParams(temperature=-1.0), ValueError, "temperature"),
        (lambda: SamplingParams(top_p=0.0), ValueError, "top_p"),
        (lambda: eng.add_request([1, 2], "greedy"), TypeError, "SamplingParams"),
        (lambda: eng.add_request([1.7, 2], SamplingParams()), TypeError, "ints"),
        (lambda: eng.add_request(torch.tensor([1.0, 2.0]), SamplingParams()), TypeError,
         "integer tensor"),
        (lambda: eng.add_request([1, 2], SamplingParams(), arrival=math.nan), ValueError,
         "arrival"),
        (lambda: SamplingParams(seed=2**64), ValueError, "seed"),
        (lambda: SamplingParams(seed=-1), ValueError, "seed"),
    ]
    for call, exc, words in bad_calls:
        with pytest.raises(exc, match=words):
            call()
    # Nothing of a refused request reached the scheduler: it holds only the good one.
    assert eng.scheduler.stats()["live"] == 1 and eng.scheduler.get(good).rid == good
    outs = {}
    while eng.has_unfinished():
        outs.update({o.rid: o for o in eng.step()})
    assert list(outs) == [good] and outs[good].output_ids == greedy("gpt2", [1, 2, 3], 5)


def test_model_without_hookable_layers_is_refused() -> None:
    class NoLayers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=8,
                                                   num_hidden_layers=2, num_attention_heads=2,
                                                   max_position_embeddings=64)
            self.proj = torch.nn.Linear(8, 8)

        def set_attn_implementation(self, name: str) -> None:
            pass

    probe = Probe(8, Bins.uniform(4, 64.0), hidden_dim=4, layer=1)
    with pytest.raises(ValueError, match="decoder layers"):
        Engine(NoLayers(), EngineConfig(scheduler=te.SchedulerConfig(), probe=probe))


def test_abort_frees_memory() -> None:
    eng = Engine(model_for("llama"), EngineConfig(
        scheduler=te.SchedulerConfig(max_running=2, kv_capacity_tokens=64, block_size=4)))
    a = eng.add_request([1, 2, 3], SamplingParams(max_new_tokens=8))
    b = eng.add_request([4, 5], SamplingParams(max_new_tokens=8))
    eng.step()
    rec = eng.abort(a)
    assert rec.finish_reason == "aborted" and len(rec.output_ids) == 1
    with pytest.raises(KeyError):
        eng.abort(a)
    while eng.has_unfinished():
        eng.step()
    assert eng.kv.used_blocks == 0 and b not in eng.scheduler


def test_output_ids_stream_and_abort_at_a_caller_stop() -> None:
    """A server reads each live request's tokens after a step, and ends one at a stop
    condition of its own (a stop string): "stop" counts as finished, "aborted" does not."""
    eng = Engine(model_for("llama"), EngineConfig(
        scheduler=te.SchedulerConfig(max_running=2, kv_capacity_tokens=64, block_size=4),
        preempt_margin="auto"))
    a = eng.add_request([1, 2, 3], SamplingParams(max_new_tokens=8))
    b = eng.add_request([4, 5], SamplingParams(max_new_tokens=8))
    eng.step()
    eng.step()
    assert len(eng.output_ids(a)) == 2 and eng.output_ids(a, 1) == eng.output_ids(a)[1:]
    with pytest.raises(ValueError, match="reason"):
        eng.abort(a, reason="done")
    assert eng.abort(a, reason="stop").finish_reason == "stop"
    assert eng.abort(b).finish_reason == "aborted"
    assert eng.prediction_errors.finished_count == 1  # only the stopped one was scored
    with pytest.raises(KeyError):
        eng.output_ids(a)
    assert eng.kv.used_blocks == 0 and not eng.has_unfinished()


def test_probe_sees_prompt_mean_then_last_token() -> None:
    """Hidden-state capture: prefill = mean over the prompt of hidden_states[L+1]; decode = last."""
    kind, layer = "llama", 1
    model = model_for(kind)
    reference = copy.deepcopy(model)
    probe = Probe(32, Bins.uniform(6, 64.0), hidden_dim=16, layer=layer, num_slots=2)
    shadow = copy.deepcopy(probe)
    eng = Engine(model, EngineConfig(
        scheduler=te.SchedulerConfig(max_running=2, kv_capacity_tokens=128, block_size=4),
        probe=probe, predict_every=2))
    prompt = [5, 17, 33, 2, 60, 9]
    rid = eng.add_request(prompt, SamplingParams(max_new_tokens=6))
    outs = {}
    while eng.has_unfinished():
        outs.update({o.rid: o for o in eng.step()})
    out = outs[rid]
    tokens = prompt + out.output_ids
    with torch.no_grad():
        hs = reference(torch.tensor([tokens]), output_hidden_states=True).hidden_states[layer + 1][0]
    expect = [float(shadow.step(hs[:len(prompt)].mean(0, keepdim=True), [0], True, 1, 6))]
    # predict_every=2: after the 3rd and 5th generated tokens, from the token fed at that step
    for g in (3, 5):
        pos = len(prompt) + g - 2  # the last fed token when the g-th token is sampled
        expect.append(float(shadow.step(hs[pos:pos + 1], [0], False, g, 6,
                                        tokens_since_last=2)))
    assert len(out.predictions) == 3 and out.prediction_tokens == [1, 3, 5]
    np.testing.assert_allclose(out.predictions, expect, rtol=1e-4, atol=1e-3)


def test_probe_predictions_reach_the_scheduler() -> None:
    probe = Probe(32, Bins.uniform(6, 64.0), hidden_dim=16, layer=0, num_slots=1)
    eng = Engine(model_for("qwen2"), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=3,
                                     kv_capacity_tokens=128, block_size=4),
        probe=probe))
    rids = [eng.add_request([i + 1, i + 2], SamplingParams(max_new_tokens=4)) for i in range(3)]
    eng.step()
    for rid in rids:
        v = eng.scheduler.get(rid)
        assert not math.isnan(v.predicted_len) and v.remaining <= 3
    while eng.has_unfinished():
        eng.step()
    assert probe.num_slots >= 3  # grew from 1 as requests were admitted


def test_gittins_rank_reaches_the_scheduler_and_mean_is_recorded() -> None:
    """probe_rank='gittins': the scheduler ranks by the rank, the outputs keep the mean; the
    tokens are those of probe_rank='mean' (ranking changes order, never what is generated)."""
    outs = {}
    for how in ("mean", "gittins"):
        torch.manual_seed(0)
        probe = Probe(32, Bins.uniform(6, 64.0), hidden_dim=16, layer=0, num_slots=4)
        eng = Engine(model_for("qwen2"), EngineConfig(
            scheduler=te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=3,
                                         kv_capacity_tokens=128, block_size=4),
            probe=probe, probe_rank=how))
        rids = [eng.add_request([i + 1, i + 2], SamplingParams(max_new_tokens=5))
                for i in range(3)]
        eng.step()
        keys = [eng.scheduler.get(r).predicted_len for r in rids]
        means = probe.distribution([eng._reqs[r].probe_slot for r in rids]).double() @ \
            probe.centers.double()
        if how == "gittins":
            assert all(k <= m + 1e-3 for k, m in zip(keys, means.tolist()))
            assert any(k < m - 1e-3 for k, m in zip(keys, means.tolist()))
        done = []
        while eng.has_unfinished():
            done += eng.step()
        outs[how] = sorted((o.rid, tuple(o.output_ids), len(o.predictions)) for o in done)
        for o in done:
            assert all(0 <= p <= 5 for p in o.predictions)
    assert outs["mean"] == outs["gittins"]
    with pytest.raises(ValueError, match="probe_rank"):
        Engine(model_for("qwen2"), EngineConfig(scheduler=te.SchedulerConfig(),
                                                probe_rank="median"))


def test_run_replays_a_workload_and_reports(tmp_path: pathlib.Path) -> None:
    eng = Engine(model_for("llama"), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.SRPT, max_running=3,
                                     kv_capacity_tokens=128, block_size=4)))
    jobs = workload(seed=9, n=6)
    arrivals = [(0.01 * i, p, SamplingParams(max_new_tokens=n)) for i, (p, n) in enumerate(jobs)]
    report = eng.run(arrivals, progress=False)
    agg = report.aggregates
    assert agg["submitted"] == agg["finished"] == 6
    assert agg["output_tokens"] == sum(n for _, n in jobs)
    for key in ("latency_s", "ttft_s", "tpot_s"):
        for stat in ("mean", "median", "p90", "p99"):
            assert math.isfinite(agg[f"{key}_{stat}"]) and agg[f"{key}_{stat}"] >= 0
    assert agg["throughput_tok_s"] > 0
    for o in report.outputs:
        assert o.arrival <= o.first_token_time <= o.finish_time
    path = report.save(tmp_path)
    assert path.exists() and (tmp_path / "report_requests.csv").read_text().count("\n") == 7


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_paged_kernel_and_gather_reference_agree(kind: str) -> None:
    """The C++ decode kernel and the gather + SDPA path produce the same tokens."""
    jobs = workload(seed=11)
    outs = []
    for use_kernel in (True, False):
        eng = Engine(model_for(kind), EngineConfig(scheduler=tight_config("TRAIL", "SWAP")))
        eng.runner.use_kernel = use_kernel
        out = drive(eng, jobs, lambda n: SamplingParams(max_new_tokens=n),
                    adversary=np.random.default_rng(2))
        outs.append([out[i].output_ids for i in range(len(jobs))])
    assert outs[0] == outs[1] == [greedy(kind, p, n) for p, n in jobs]



def test_run_passes_predictions_at_arrival_to_the_scheduler() -> None:
    eng = Engine(model_for("llama"), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.SJF, max_running=1,
                                     kv_capacity_tokens=128, block_size=4)))
    jobs = workload(seed=3, n=3)
    # All arrive at once; SJF must serve them in the order of the predictions given.
    arrivals = [(0.0, p, SamplingParams(max_new_tokens=n), pred)
                for (p, n), pred in zip(jobs, (30.0, 10.0, 20.0))]
    report = eng.run(arrivals, progress=False)
    order = [o.rid for o in sorted(report.outputs, key=lambda o: o.first_token_time)]
    assert order == [1, 2, 0]
    # Malformed arrivals are rejected one by one; the others are served.
    report = eng.run([(0.0, jobs[0][0]), (math.nan, jobs[0][0], SamplingParams()),
                      (-1.0, jobs[0][0], SamplingParams()),
                      (0.0, jobs[1][0], SamplingParams(max_new_tokens=3)),
                      (0.0, [1.5, 2.0], SamplingParams()),
                      (0.0, jobs[2][0], SamplingParams(max_new_tokens=2))], progress=False)
    assert [k for k, _ in report.rejected] == [0, 1, 2, 4]
    assert "arrival" in report.rejected[0][1] and "finite" in report.rejected[1][1]
    assert "ints" in report.rejected[3][1]
    assert sorted(len(o.output_ids) for o in report.outputs) == [2, 3]


def test_a_failing_sampler_changes_nothing_and_the_step_can_be_retried() -> None:
    """Sampling is all or nothing: a row that raises leaves every request, the scheduler, the
    KV pool and every random stream as they were; retrying gives the same tokens as a run
    that never failed."""
    def serve(fail_at: int | None) -> dict[int, list[int]]:
        eng = Engine(model_for("llama"), EngineConfig(
            scheduler=tight_config("TRAIL", "KEEP")))
        rids = [eng.add_request([i + 1, i + 2, i + 3], SamplingParams(
            max_new_tokens=6, temperature=1.0, seed=i)) for i in range(3)]
        outs, step = {}, 0
        while eng.has_unfinished():
            if step == fail_at:
                victim = eng._reqs[rids[1]] if rids[1] in eng._reqs else None
                original = victim.sampler.sample if victim else None
                if victim is not None:
                    victim.sampler.sample = lambda logits: (_ for _ in ()).throw(
                        RuntimeError("injected sampling fault"))
                before = {r: list(q.output_ids) for r, q in eng._reqs.items()}
                stats = eng.scheduler.stats()
                with pytest.raises(RuntimeError, match="injected"):
                    eng.step()
                assert {r: list(q.output_ids) for r, q in eng._reqs.items()} == before
                assert eng.scheduler.stats()["finished"] == stats["finished"]
                if victim is not None:
                    victim.sampler.sample = original
            outs.update({o.rid: o.output_ids for o in eng.step()})
            step += 1
        assert eng.kv.used_blocks == 0
        return outs

    assert serve(fail_at=2) == serve(fail_at=None)


def test_a_failing_probe_or_observer_degrades_the_step_but_loses_nothing() -> None:
    probe = Probe(32, Bins.uniform(6, 64.0), hidden_dim=16, layer=0, num_slots=4)
    eng = Engine(model_for("qwen2"), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=3,
                                     kv_capacity_tokens=128, block_size=4),
        probe=probe))
    calls = {"n": 0}
    real_step = probe.step

    def flaky(*a: Any, **k: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("injected probe fault")
        return real_step(*a, **k)

    probe.step = flaky
    eng.observer = lambda record: (_ for _ in ()).throw(ValueError("injected observer fault"))
    rids = [eng.add_request([i + 1, i + 2], SamplingParams(max_new_tokens=4)) for i in range(3)]
    outs = {}
    while eng.has_unfinished():
        outs.update({o.rid: o for o in eng.step()})
    assert sorted(outs) == rids  # every request finished and was returned once
    assert all(o.output_ids == greedy("qwen2", [r + 1, r + 2], 4) for r, o in outs.items())
    phases = {phase for _, phase, _ in eng.faults}
    assert phases == {"probe", "observer"} and eng.kv.used_blocks == 0
    assert any(o.predictions for o in outs.values())  # the probe's good calls still counted


def generate_on(model: Any, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                           dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_engine_lends_itself_to_the_model(attn: str) -> None:
    """The user's model.generate() gives the same tokens before, during and after an engine's
    life; close() (or leaving `with`) restores its attention and removes the hooks; a closed
    engine refuses to serve; a second engine on the same model keeps working when the first
    closes."""
    model = model_for("llama")
    model.set_attn_implementation(attn)
    prompt = [3, 1, 4, 1, 5]
    before = generate_on(model, prompt, 6)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    cfg = EngineConfig(scheduler=te.SchedulerConfig(max_running=2, kv_capacity_tokens=128,
                                                    block_size=4),
                       probe=Probe(32, Bins.uniform(6, 64.0), hidden_dim=8, layer=1))
    with Engine(model, cfg) as eng:
        assert generate_on(model, prompt, 6) == before       # during, outside its forward
        other = Engine(model, cfg)
        rid = eng.add_request(prompt, SamplingParams(max_new_tokens=6))
        out = {}
        while eng.has_unfinished():
            out.update({o.rid: o.output_ids for o in eng.step()})
        assert out[rid] == before                            # and the engine still serves
    assert model.config._attn_implementation == attn
    assert generate_on(model, prompt, 6) == before           # after
    rid = other.add_request(prompt, SamplingParams(max_new_tokens=6))
    while other.has_unfinished():
        done = other.step()
    assert done[0].output_ids == before                      # the second engine still serves
    other.close()
    other.close()                                            # idempotent
    assert model.config._attn_implementation == attn
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    with pytest.raises(RuntimeError, match="closed"):
        other.add_request(prompt, SamplingParams(max_new_tokens=2))
        other.step()


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([0.0, 0.7, 1.0]), st.sampled_from([1.0, 0.9]),
                               st.integers(0, 2**16)), min_size=1, max_size=6),
       vocab=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_batched_sampling_draws_what_each_row_draws_alone(rows: list[tuple[float, float, int]],
                                                          vocab: int, seed: int) -> None:
    """sample_batch (one argmax, one host copy) against Sampler.sample row by row."""
    from trail.engine.sampling import Sampler, sample_batch

    logits = torch.randn(len(rows), vocab, generator=torch.Generator().manual_seed(seed))
    logits[0, :] = 0.0  # ties: the first index, batched or not
    params = [SamplingParams(temperature=t, top_p=p, seed=s) for t, p, s in rows]
    alone = [Sampler(p).sample(logits[i]) for i, p in enumerate(params)]
    assert sample_batch([Sampler(p) for p in params], logits) == alone
