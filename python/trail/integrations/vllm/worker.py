"""`TrailWorkerExtension`: runs TRAIL's probe inside vLLM's model runner.

Mixed into vLLM's worker with `worker_extension_cls=...`; `install_probe(llm, path)` (or
`llm.collective_rpc("trail_install_probe", args=(path,))`) loads a `trail.Probe` checkpoint
and hooks decoder layer `probe.layer`. After each real forward, every request that samples a
token this step gets one probe step (`torch.ops.trail.probe_step` for the whole batch): its
first prediction from the mean of its prompt's states (as TRAIL's engine does), the later
ones from its newest token's state, each a Bayesian refinement of the last. The predicted
remaining lengths ride back to `TrailScheduler` on the model-runner output
(`trail_predictions`), which crosses process boundaries with it.

With vLLM's prefix caching (on by default) a prompt whose prefix was cached is computed only
from the first uncached token, so its first prediction averages only those rows (counted in
`trail_probe_stats()["partial_prompts"]`); `enable_prefix_caching=False` gives the probe the
whole prompt, as in training.

Limits: vLLM's V1 model runner (the CPU build's; on GPUs set VLLM_USE_V2_MODEL_RUNNER=0),
eager mode (`enforce_eager=True`: forward hooks do not run inside CUDA graphs or
torch.compile), a Llama-style model whose layers return `(hidden, residual)` or a tensor.
"""

from __future__ import annotations

import time
from typing import Any

import torch

PREDICTIONS_ATTR = "trail_predictions"


class TrailWorkerExtension:
    """Methods vLLM adds to its worker (all prefixed `trail_`, as vLLM requires)."""

    def trail_install_probe(self, path: str, num_slots: int = 256, record: bool = False
                            ) -> dict[str, Any]:
        """Load the probe at `path` and hook its layer; `record` keeps its inputs for tests."""
        from trail.probe.probe import Probe

        runner = self.model_runner  # type: ignore[attr-defined]
        if hasattr(runner, "req_states"):
            raise RuntimeError("TRAIL's probe hook supports vLLM's V1 model runner only: set "
                               "VLLM_USE_V2_MODEL_RUNNER=0")
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        layers = model.model.layers
        hidden = int(model.config.hidden_size)
        device = next(model.parameters()).device
        probe = Probe.load(path, num_slots=num_slots, device=device, hidden_size=hidden)
        if not 0 <= probe.layer < len(layers):
            raise ValueError(f"probe layer {probe.layer} is not one of the model's "
                             f"{len(layers)} layers")
        self.trail_uninstall_probe()
        st = _ProbeState(probe, record)
        self._trail_state = st
        if not getattr(runner, "_trail_prepare_wrapped", False):
            # Dummy and profiling forwards skip _prepare_inputs: a flag marks real batches.
            original = runner._prepare_inputs

            def prepare(*a: Any, **k: Any) -> Any:
                out = original(*a, **k)
                runner._trail_real_batch = True
                return out

            runner._prepare_inputs = prepare
            runner._trail_prepare_wrapped = True
        runner._trail_real_batch = False
        if "sample_tokens" not in self.__dict__:
            # vLLM refuses extension methods named like the worker's: wrap on the instance.
            original_sample = self.sample_tokens

            def sample_tokens(*a: Any, **k: Any) -> Any:
                out = original_sample(*a, **k)
                state = getattr(self, "_trail_state", None)
                if state is not None:
                    _attach_predictions(out, state)
                return out

            self.sample_tokens = sample_tokens
        st.handle = layers[probe.layer].register_forward_hook(
            lambda mod, args, out: self._trail_guarded(runner, out))
        return {"layer": probe.layer, "hidden_size": hidden, "bins": probe.num_bins,
                "device": str(device)}

    def trail_uninstall_probe(self) -> None:
        """Remove the hook (predictions stop; the scheduler keeps its last ones)."""
        st = getattr(self, "_trail_state", None)
        if st is not None and st.handle is not None:
            st.handle.remove()
        self._trail_state = None

    def trail_probe_stats(self) -> dict[str, Any]:
        """Probe steps, rows, seconds spent in the hook and its failures since install."""
        st = getattr(self, "_trail_state", None)
        return {} if st is None else {"steps": st.steps, "rows": st.rows, "seconds": st.seconds,
                                      "partial_prompts": st.partial_prompts,
                                      "faults": list(st.faults)}

    def trail_take_records(self) -> list[dict[str, Any]]:
        """The probe inputs recorded since the last call (install with record=True)."""
        st = getattr(self, "_trail_state", None)
        if st is None:
            return []
        out, st.records = st.records, []
        return out

    # ------------------------------------------------------------------ internals

    def _trail_guarded(self, runner: Any, out: Any) -> None:
        """The hook: a probe failure is recorded, never raised into vLLM's forward."""
        try:
            self._trail_on_layer(runner, out)
        except Exception as exc:  # noqa: BLE001 - serving goes on without this step's predictions
            st = self._trail_state
            if st is not None:
                st.faults.append(f"{type(exc).__name__}: {exc}")
                del st.faults[:-100]

    def _trail_on_layer(self, runner: Any, out: Any) -> None:
        st = self._trail_state
        if st is None or not getattr(runner, "_trail_real_batch", False):
            return
        runner._trail_real_batch = False
        t = time.perf_counter()
        x = (out[0] + out[1]) if isinstance(out, tuple) else out  # the residual stream
        ib = runner.input_batch
        n = ib.num_reqs
        req_ids = list(ib.req_ids[:n])
        qsl = runner.query_start_loc.np[: n + 1].tolist()
        if x.shape[0] < qsl[-1]:
            return
        computed = ib.num_computed_tokens_cpu[:n].tolist()
        known = ib.num_tokens_no_spec[:n].tolist()
        prompt = ib.num_prompt_tokens[:n].tolist()
        st.forget_except(runner.requests)
        rows, ids, hidden_rows, first, generated, limit, since, pos = ([] for _ in range(8))
        for i, req_id in enumerate(req_ids):
            s, e = qsl[i], qsl[i + 1]
            if e <= s:
                continue
            slot = st.slot(req_id)
            if computed[i] < prompt[i]:  # prompt rows in this chunk: sum them for the mean
                upto = min(e, s + prompt[i] - computed[i])
                if computed[i] > 0 and req_id not in st.prompt_rows \
                        and req_id not in st.predicted_at:
                    st.partial_prompts += 1  # a cached prefix: the mean misses its rows
                st.add_prompt_rows(req_id, x[s:upto])
            if computed[i] + (e - s) < known[i]:
                continue  # a prefill chunk that is not the last: no token sampled
            gen = known[i] - prompt[i] + 1  # counting the token sampled now
            req = runner.requests.get(req_id)
            cap = getattr(getattr(req, "sampling_params", None), "max_tokens", None) or gen
            is_first = req_id not in st.predicted_at
            # float32 either way: a bf16 model's rows stack with the float32 prompt means.
            h = (st.prompt_mean(req_id) if is_first and req_id in st.prompt_sum
                 else x[e - 1].float())
            ids.append(req_id)
            rows.append(slot)
            hidden_rows.append(h)
            first.append(is_first)
            generated.append(min(gen, cap))
            limit.append(cap)
            since.append(max(0, gen - st.predicted_at.get(req_id, gen)))
            pos.append(computed[i] + e - s - 1)  # the token position of row e - 1
        if ids:
            hid = torch.stack(hidden_rows)
            pred = st.probe.step(hid, rows, first, generated, limit, since).cpu().tolist()
            for req_id, g, p in zip(ids, generated, pred):
                st.predicted_at[req_id] = g
                st.pending[req_id] = p
                st.prompt_sum.pop(req_id, None)
                st.prompt_rows.pop(req_id, None)
            if st.recording:
                st.records.append({"req_ids": ids, "first": first, "generated": generated,
                                   "hidden": hid.cpu(), "predicted": pred,
                                   "positions": pos})
            st.rows += len(ids)
        st.steps += 1
        st.seconds += time.perf_counter() - t


def _attach_predictions(out: Any, st: "_ProbeState") -> None:
    """Put the pending predictions on the model-runner output (async wrappers unwrapped)."""
    if not st.pending or out is None:
        return
    target = out
    for name in ("_model_runner_output", "model_runner_output"):
        target = getattr(target, name, target)
    try:
        setattr(target, PREDICTIONS_ATTR, st.pending)
    except AttributeError:  # an immutable output: they go with the next one
        return
    st.pending = {}


class _ProbeState:
    """Per-worker probe state: request -> probe slot, prompt sums, last prediction point."""

    def __init__(self, probe: Any, record: bool) -> None:
        self.probe = probe
        self.handle: Any = None
        self.slots: dict[str, int] = {}  # request -> its slot of the probe's pool
        self.prompt_sum: dict[str, torch.Tensor] = {}
        self.prompt_rows: dict[str, int] = {}
        self.predicted_at: dict[str, int] = {}
        self.pending: dict[str, float] = {}
        self.recording, self.records = record, []  # type: ignore[var-annotated]
        self.steps = self.rows = 0
        self.seconds = 0.0
        self.faults: list[str] = []  # the newest 100 hook failures
        self.partial_prompts = 0  # first predictions from a prompt partly in the prefix cache

    def slot(self, req_id: str) -> int:
        if req_id not in self.slots:
            self.slots[req_id] = self.probe.acquire_slot()
        return self.slots[req_id]

    def forget_except(self, live: dict[str, Any]) -> None:
        """Free the slots of requests the runner no longer holds (finished or aborted)."""
        for req_id in [r for r in self.slots if r not in live]:
            self.probe.release_slot(self.slots.pop(req_id))
            for d in (self.prompt_sum, self.prompt_rows, self.predicted_at, self.pending):
                d.pop(req_id, None)

    def add_prompt_rows(self, req_id: str, rows: torch.Tensor) -> None:
        if req_id in self.predicted_at:
            return  # a recompute after preemption: the prediction continues, no new mean
        s = rows.detach().float().sum(0)
        self.prompt_sum[req_id] = self.prompt_sum.get(req_id, 0) + s
        self.prompt_rows[req_id] = self.prompt_rows.get(req_id, 0) + rows.shape[0]

    def prompt_mean(self, req_id: str) -> torch.Tensor:
        # Read only: the sums go once the probe step has succeeded, so a failed step leaves
        # them whole for the next one.
        return self.prompt_sum[req_id] / self.prompt_rows[req_id]

