"""Adversarial inputs at every public entry point, run in a child process by
tests/test_adversarial.py (a crash kills only the child, and its last line names the case).

Each entry point gets a valid call; then every argument in turn is replaced by every value of
a pool of bad ones (wrong types, non-finite and extreme numbers, wrong shapes, dtypes and
devices). A case is handled cleanly when the call either succeeds with a consistent result
or raises ValueError / TypeError / KeyError / IndexError with a message, and a refused call
changes nothing (the scheduler's views and statistics, the probe's state). Calls on the C++
scheduler must also get the same outcome from its Python twin (trail.sched_ref).

    python tests/adversarial.py GROUP      # prints "case ..." per case, then "summary {json}"
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from typing import Any, Callable

import numpy as np
import torch

CLEAN = (ValueError, TypeError, KeyError, IndexError)
BAD_SCALARS: list[Any] = [
    None, "1", b"1", 1.5, -1.5, math.nan, math.inf, -math.inf, 0, -1, 2**31, 2**32, 2**63 - 1,
    2**63, -(2**63) - 1, 2**64, 2**1100, True, False, np.int64(-1), np.float32(math.nan),
    np.float64(1e308), [], [1, 2], (1,), {}, object(), complex(1, 1), 1e-320]
BAD_ARRAYS: list[Any] = [
    None, 3, "abc", [], [1.5, 2.5], [math.nan], [2**63], [-1], [True], np.array([1.5]),
    np.zeros((2, 2)), np.array(["a"]), np.array([], np.int64), torch.tensor([1]),
    np.array([2**62, -(2**62)], np.int64), np.array([1], np.uint64), [object()]]


class Tally:
    """Counts cases and collects the unclean ones."""

    def __init__(self) -> None:
        self.tried = 0
        self.clean = 0
        self.refused = 0
        self.unclean: list[str] = []

    def case(self, name: str, run: Callable[[], str]) -> None:
        """run() returns '' when clean, else why not; it may raise only what it checks."""
        self.tried += 1
        print(f"case {self.tried} {name}", flush=True)
        try:
            why = run()
        except Exception as exc:  # noqa: BLE001 - an unexpected exception is the finding
            why = f"unexpected {type(exc).__name__}: {exc}"
        if why:
            self.unclean.append(f"{name}: {why}"[:300])
        else:
            self.clean += 1

    def summary(self) -> dict[str, Any]:
        return {"tried": self.tried, "clean": self.clean, "refused": self.refused,
                "unclean": self.unclean}


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def outcome(tally: Tally, fn: Callable[[], Any]) -> tuple[str, Any]:
    """('ok', result) or ('refused', exception type); unclean exceptions propagate."""
    try:
        return "ok", fn()
    except CLEAN as exc:
        if not str(exc).strip(" '\""):
            raise AssertionError(f"{type(exc).__name__} without a message") from exc
        tally.refused += 1
        return "refused", type(exc)


# ---------------------------------------------------------------------------- scheduler

def scheduler_group(tally: Tally) -> None:
    import trail_ext as te
    from trail import sched_ref as ref

    base = dict(policy="TRAIL", max_running=3, kv_capacity_tokens=64, block_size=4, c=0.8,
                preempt_mode="SWAP", swap_capacity_tokens=32, max_preemptions=-1,
                starvation_steps=2, starvation_period=1, default_predicted_len=16.0,
                mlfq_levels=3, mlfq_base_quantum=2, mlfq_prefill_ratio=4.0, prefill_weight=0.5,
                aging_rate=0.1, preempt_margin=1.0, kv_aware=False)

    def config(mod: Any, **over: Any) -> Any:
        kw = {**base, **over}
        if "policy" not in over:
            kw["policy"] = getattr(mod.Policy, kw["policy"])
        if "preempt_mode" not in over:
            kw["preempt_mode"] = getattr(mod.PreemptMode, kw["preempt_mode"])
        return mod.SchedulerConfig(**kw)

    # 1. every config field, given every bad value: constructing the config or the
    # scheduler must refuse it (or accept it alike in both twins).
    for field in base:
        for bad in BAD_SCALARS:
            def run(field: str = field, bad: Any = bad) -> str:
                res = []
                for mod in (te, ref):
                    res.append(outcome(tally, lambda: mod.Scheduler(config(mod, **{field: bad}))))
                if res[0][0] != res[1][0]:
                    return f"native {res[0]} vs reference {res[1]}"
                return ""
            tally.case(f"SchedulerConfig({field}={_short(bad)})", run)

    # 2. every argument of every method, on a scheduler with live requests.
    def fresh() -> tuple[Any, Any]:
        pair = (te.Scheduler(config(te)), ref.Scheduler(config(ref)))
        for s in pair:
            for rid in range(4):
                s.add(rid, 0.0, 3 + rid, 8, 5.0 + rid, 0.1 * rid)
            s.schedule(0.0)
        return pair

    def snapshot(s: Any) -> Any:
        views = []
        for rid in range(-2, 8):
            if rid in s:
                v = s.get(rid)
                views.append((rid, v.state.name, v.kv.name, v.generated, v.remaining,
                              v.score, v.preemptions, v.predicted_len))
        return repr((s.stats(), views))

    def running(s: Any) -> list[int]:
        return [r for r in range(8) if r in s and s.get(r).state.name == "RUNNING"]

    calls: dict[str, tuple[list[str], Callable[[Any], list[Any]]]] = {
        "add": (["rid", "arrival", "prompt_len", "max_new_tokens", "predicted_len", "score"],
                lambda s: [10, 0.5, 3, 8, 4.0, 0.5]),
        "schedule": (["now"], lambda s: [1.0]),
        "on_step": (["now", "rids", "new_tokens", "finished"],
                    lambda s: [1.0, running(s), [1] * len(running(s)),
                               [False] * len(running(s))]),
        "update_predictions": (["rids", "remaining"], lambda s: [[0, 1], [3.0, 2.0]]),
        "update_scores": (["rids", "scores"], lambda s: [[0, 1], [0.3, -0.2]]),
        "abort": (["rid"], lambda s: [2]),
        "get": (["rid"], lambda s: [1]),
        "set_prefill_weight": (["prefill_weight"], lambda s: [0.25]),
        "__contains__": (["rid"], lambda s: [1]),
    }
    for method, (names, valid) in calls.items():
        for i, name in enumerate(names):
            pool = BAD_ARRAYS if name in ("rids", "new_tokens", "finished", "remaining",
                                          "scores") else BAD_SCALARS
            for bad in pool:
                def run(method: str = method, i: int = i, bad: Any = bad) -> str:
                    res, snaps = [], []
                    for s in fresh():
                        args = valid(s)
                        args[i] = copy.copy(bad)
                        before = snapshot(s)
                        res.append(outcome(tally, lambda: getattr(s, method)(*args)))
                        if res[-1][0] == "refused" and snapshot(s) != before:
                            return f"{type(s).__module__}: a refused call changed the state"
                        snaps.append(snapshot(s))
                    if res[0][0] != res[1][0] or (res[0][0] == "refused"
                                                  and res[0][1] is not res[1][1]):
                        return f"native {res[0]} vs reference {res[1]}"
                    if snaps[0] != snaps[1]:
                        return "the twins' states differ after the call"
                    return ""
                tally.case(f"Scheduler.{method}({names[i]}={_short(bad)})", run)


# ---------------------------------------------------------------------------- probe op

def _bad_tensors(t: torch.Tensor) -> list[Any]:
    """Wrong shape, dtype, layout, device and values for a tensor argument like `t`."""
    out: list[Any] = [None, 1.0, "t", t.numpy() if t.device.type == "cpu" else None,
                      t.flatten()[:0], t.unsqueeze(0), torch.zeros(3, 5, 7),
                      t.to("meta")]
    for dtype in (torch.float64, torch.int64, torch.bool, torch.float16, torch.int32):
        if dtype != t.dtype:
            out.append(t.to(dtype))
    if t.dim() == 2 and t.shape[0] > 1 and t.shape[1] > 1:
        out.append(t.t())  # non-contiguous, transposed shape
        out.append(torch.cat([t, t], 1)[:, ::2])  # non-contiguous, same shape
    if t.dtype.is_floating_point and t.numel():
        for v in (math.nan, math.inf):
            x = t.clone()
            x.view(-1)[0] = v
            out.append(x)
    if t.dtype in (torch.int32, torch.int64) and t.numel():
        for v in (-1, 2**31 - 1, -(2**31), 1000):
            x = t.clone()
            x.view(-1)[0] = v
            out.append(x)
        if t.dtype == torch.int64:
            for v in (2**32, 2**63 - 1, -(2**63)):
                x = t.clone()
                x.view(-1)[0] = v
                out.append(x)
        if t.numel() > 1:
            x = t.clone()
            x.view(-1)[1] = x.view(-1)[0]
            out.append(x)  # a repeated slot
    return [x for x in out if x is not None] + [None]


def op_group(tally: Tally) -> None:
    import trail  # noqa: F401  (registers torch.ops.trail)
    from trail import Bins

    torch.manual_seed(0)
    b, d, h, k, s = 3, 8, 6, 5, 7
    bins = Bins.uniform(k, 40.0)
    names = ["hidden", "slots", "first", "w1", "b1", "w2", "b2", "transition", "centers",
             "cap", "state"]

    def valid(rank: bool) -> list[Any]:
        args = [torch.randn(b, d), torch.tensor([0, 3, 5]), torch.tensor([True, False, True]),
                torch.randn(h, d), torch.randn(h), torch.randn(k, h), torch.randn(k),
                bins.transition(1), bins.centers.clone(), torch.tensor([30.0, 20.0, 10.0]),
                torch.full((s, k), 1.0 / k)]
        if rank:
            args.insert(9, torch.tensor(bins.edges, dtype=torch.float32))
        return args

    for rank in (False, True):
        op = torch.ops.trail.probe_step_rank if rank else torch.ops.trail.probe_step
        arg_names = names[:9] + ["edges"] + names[9:] if rank else names
        template = valid(rank)
        for i, name in enumerate(arg_names):
            for bad in _bad_tensors(template[i]):
                def run(i: int = i, bad: Any = bad, rank: bool = rank, op: Any = op) -> str:
                    args = valid(rank)
                    args[i] = bad
                    state = args[-1] if isinstance(args[-1], torch.Tensor) else None
                    before = state.clone() if state is not None and state.device.type == "cpu" \
                        else None
                    try:
                        out = op(*args)
                    except CLEAN as exc:
                        tally.refused += 1
                        if before is not None and not torch.equal(before, state):
                            return "a refused call changed the state"
                        return "" if str(exc) else "no message"
                    except RuntimeError as exc:
                        # torch's dispatcher refuses arguments that do not match the op's
                        # schema (e.g. a str for a Tensor) before our code runs.
                        if "Expected a value of type" in str(exc) or "argument" in str(exc):
                            tally.refused += 1
                            return ""
                        return f"RuntimeError: {exc}"
                    outs = out if isinstance(out, tuple) else (out,)
                    for o in outs:
                        if o.shape != (args[0].shape[0],):
                            return f"accepted, output shape {tuple(o.shape)}"
                    return ""
                tag = "probe_step_rank" if rank else "probe_step"
                desc = (f"{tuple(bad.shape)} {bad.dtype} {bad.device}"
                        if isinstance(bad, torch.Tensor) else _short(bad))
                tally.case(f"{tag}({name}={desc})", run)


# ---------------------------------------------------------------------------- Probe, Bins

def probe_group(tally: Tally) -> None:
    from trail import Bins, Probe

    ctor = {"hidden_size": 8, "bins": Bins.uniform(5, 40.0), "hidden_dim": 6, "layer": 0,
            "num_slots": 4, "model_id": "m"}
    for name in ctor:
        for bad in BAD_SCALARS:
            def run(name: str = name, bad: Any = bad) -> str:
                res = outcome(tally, lambda: Probe(**{**ctor, name: bad}))
                if res[0] == "ok":
                    p = res[1]
                    if not (p.hidden_size >= 1 and p.num_slots >= 1 and p.layer >= 0):
                        return f"accepted an unusable probe: {p.config()}"
                return ""
            tally.case(f"Probe({name}={_short(bad)})", run)

    step_names = ["hidden", "slots", "first", "generated", "max_new_tokens", "tokens_since_last"]

    def valid_step() -> list[Any]:
        return [torch.randn(2, 8), [0, 2], [True, False], [0, 3], [10, 12], 1]

    for method in ("step", "step_rank"):
        for i, name in enumerate(step_names):
            pool = BAD_ARRAYS + BAD_SCALARS + _bad_tensors(torch.randn(2, 8) if i == 0
                                                           else torch.tensor([0, 2]))
            for bad in pool:
                def run(method: str = method, i: int = i, bad: Any = bad) -> str:
                    torch.manual_seed(0)
                    p = Probe(**ctor)
                    args = valid_step()
                    args[i] = bad
                    before = p.state.clone()
                    res = outcome(tally, lambda: getattr(p, method)(*args))
                    if res[0] == "refused":
                        return "" if torch.equal(before, p.state) else "a refused call " \
                            "changed the state"
                    outs = res[1] if isinstance(res[1], tuple) else (res[1],)
                    for o in outs:
                        if not bool(torch.isfinite(o).all()):
                            return f"accepted with non-finite output {o.tolist()}"
                    return ""
                desc = (f"{tuple(bad.shape)} {bad.dtype}" if isinstance(bad, torch.Tensor)
                        else _short(bad))
                tally.case(f"Probe.{method}({name}={desc})", run)
    for method in ("distribution", "reset", "grow_slots", "resize_slots", "transition"):
        for bad in BAD_SCALARS + BAD_ARRAYS:
            def run(method: str = method, bad: Any = bad) -> str:
                p = Probe(**ctor)
                outcome(tally, lambda: getattr(p, method)(copy.copy(bad)))
                return "" if p.state.shape[0] >= 1 else "state lost its rows"
            tally.case(f"Probe.{method}({_short(bad)})", run)
    for factory, names in ((Bins.uniform, ["k", "max_len"]),
                           (Bins.geometric, ["k", "first", "ratio"])):
        for i, name in enumerate(names):
            for bad in BAD_SCALARS:
                def run(factory: Any = factory, i: int = i, bad: Any = bad) -> str:
                    args: list[Any] = [5, 40.0] if factory is Bins.uniform else [5, 2.0, 2.0]
                    args[i] = bad
                    res = outcome(tally, lambda: factory(*args))
                    if res[0] == "ok":
                        e = res[1].edges
                        if not (all(math.isfinite(x) for x in e) and list(e) == sorted(set(e))):
                            return f"accepted bad edges {e}"
                    return ""
                tally.case(f"Bins.{factory.__name__}({name}={_short(bad)})", run)
    for bad in BAD_ARRAYS + BAD_SCALARS + [[0.0, 0.0, 1.0], [1.0, 0.5], [0.0, math.inf],
                                            [-1.0, 2.0], [0.0, 1e-46]]:
        def run(bad: Any = bad) -> str:
            res = outcome(tally, lambda: Bins(copy.copy(bad)))
            if res[0] == "ok":
                e = res[1].edges
                if not (all(math.isfinite(x) for x in e) and len(e) >= 2):
                    return f"accepted bad edges {e}"
                res[1].transition(3)
            return ""
        tally.case(f"Bins({_short(bad)})", run)


# ---------------------------------------------------------------------------- engine

def engine_group(tally: Tally) -> None:
    import transformers
    from trail import Bins, Probe
    from trail.engine import Engine, EngineConfig, SamplingParams

    import trail_ext as te

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval()
    sc = te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=2, kv_capacity_tokens=64,
                            block_size=4)
    engine = Engine(model, EngineConfig(scheduler=sc, probe=Probe(16, Bins.uniform(4, 32.0),
                                                                  hidden_dim=4)))
    expected = engine.add_request([1, 2, 3], SamplingParams(max_new_tokens=3))
    live = {expected}

    sp = {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 0,
          "stop_token_ids": ()}
    for name in sp:
        for bad in BAD_SCALARS + BAD_ARRAYS:
            tally.case(f"SamplingParams({name}={_short(bad)})",
                       lambda name=name, bad=bad: (outcome(tally, lambda: SamplingParams(
                           **{**sp, name: bad})), "")[1])
    add_names = ["prompt_ids", "params", "arrival", "predicted_len", "score"]
    for i, name in enumerate(add_names):
        for bad in BAD_SCALARS + BAD_ARRAYS + [torch.tensor([1.0, 2.0]), torch.tensor([[1, 2]]),
                                               torch.tensor([40]), [1] * 70, [0]]:
            def run(i: int = i, bad: Any = bad) -> str:
                args: list[Any] = [[4, 5, 6], SamplingParams(max_new_tokens=2), None, math.nan,
                                   math.nan]
                args[i] = bad
                before = (len(engine.scheduler), engine.kv.used_blocks)
                res = outcome(tally, lambda: engine.add_request(*args))
                if res[0] == "refused":
                    if (len(engine.scheduler), engine.kv.used_blocks) != before:
                        return "a refused request left a trace"
                else:
                    live.add(res[1])
                return ""
            tally.case(f"Engine.add_request({name}={_short(bad)})", run)
    for bad in BAD_SCALARS:
        if isinstance(bad, int) and bad in live:
            continue
        tally.case(f"Engine.abort({_short(bad)})",
                   lambda bad=bad: (outcome(tally, lambda: engine.abort(bad)), "")[1])
    cfg_fields = {"predict_every": 1, "probe_rank": "mean", "max_model_len": None,
                  "step_cost": None, "prefill_weight": None, "capture_layers": ()}
    for name in cfg_fields:
        for bad in BAD_SCALARS:
            def run(name: str = name, bad: Any = bad) -> str:
                kw = {**cfg_fields, name: bad}
                res = outcome(tally, lambda: Engine(model, EngineConfig(scheduler=sc, **kw)))
                if res[0] == "ok":
                    res[1].close()
                return ""
            tally.case(f"EngineConfig({name}={_short(bad)})", run)
    # Everything accepted above still serves: the engine is not poisoned by the refusals.
    outputs = []
    for _ in range(500):
        if not engine.has_unfinished():
            break
        outputs += engine.step()
    tally.case("engine serves every accepted request after the bad ones",
               lambda: "" if {o.rid for o in outputs} == live and not engine.has_unfinished()
               and engine.kv.used_blocks == 0 else f"served {[o.rid for o in outputs]} of {live}")
    engine.close()


GROUPS = {"scheduler": scheduler_group, "op": op_group, "probe": probe_group,
          "engine": engine_group}


def main(group: str) -> None:
    ext = os.environ.get("TRAIL_ADVERSARIAL_EXT")
    if ext:  # run against the parent's trail_ext (e.g. the sanitizer build in CI)
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not type(f).__name__.startswith("ScikitBuild")]
        sys.path[:0] = [ext, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                          "python")]
    tally = Tally()
    GROUPS[group](tally)
    import trail_ext

    print("summary " + json.dumps({**tally.summary(), "ext": trail_ext._C.__file__}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
