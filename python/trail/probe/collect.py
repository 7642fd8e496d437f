"""`trail collect`: hidden states of a causal LM's generations, with their true remaining lengths.

The model generates answers for a prompt file through the TRAIL engine. For every request
the collector keeps the prefill sample (mean of the prompt's hidden states) and a uniform
random sample of its decode steps (reservoir sampling: `samples_per_request` of them, the
official code kept 16), for the chosen layers (all layers with `layers=None`, the profiling
mode). When the request finishes its samples get labels:

    age       = tokens generated once the step's token is sampled (1 at prefill)
    remaining = total - age   (tokens still to come: what the engine's probe predicts)

Samples go to safetensors shards (`shard_00000.safetensors`, …) every `checkpoint_every`
finished requests (or sooner, once the buffer holds `shard_bytes`); `manifest.json` lists the
shards and the finished prompts, so a rerun into the same directory resumes where the last
checkpoint left off. A hard kill loses at most the requests finished since that checkpoint;
an exception (Ctrl-C included) first writes those too, losing only the requests still being
generated. Shards and manifest are written to a temporary file and renamed into place, so
a crash never leaves a half-written one. Prompts the engine refuses (too long,
out-of-vocabulary ids) are recorded in the manifest with the reason, not silently dropped.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

import trail_ext as te
from trail.engine import Engine, EngineConfig, SamplingParams, StepRecord
from trail.fileio import atomic_path
from trail.progress import progress_bar

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# Settings that only decide how the data is stored: a run may resume with other values.
STORAGE_SETTINGS = ("shard_bytes", "checkpoint_every")


@dataclass
class CollectConfig:
    """What to record and how to generate."""

    layers: list[int] | None = None      # None: every layer (profiling)
    samples_per_request: int = 16
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_running: int = 32
    shard_bytes: int = 128 << 20         # a shard is written once the buffer holds this much
    checkpoint_every: int = 64           # ... or once this many requests have finished

    def __post_init__(self) -> None:
        if min(self.samples_per_request, self.max_new_tokens, self.max_running,
               self.checkpoint_every) < 1:
            raise ValueError(f"CollectConfig: samples_per_request, max_new_tokens, "
                             f"max_running and checkpoint_every must be >= 1, got {asdict(self)}")


def read_prompts(path: str | pathlib.Path) -> list[str]:
    """Prompts from JSONL: a `prompt` field, or Alpaca's `instruction` (+ `input`)."""
    prompts = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" in row:
                prompts.append(str(row["prompt"]))
            elif "instruction" in row:
                extra = str(row.get("input") or "").strip()
                prompts.append(str(row["instruction"]) + (f"\n\n{extra}" if extra else ""))
            else:
                raise ValueError(f"{path}:{n}: a line needs a 'prompt' or 'instruction' field, "
                                 f"got keys {sorted(row)}")
    return prompts


@dataclass
class _Live:
    """Samples of one request while it generates."""

    index: int
    rng: np.random.Generator
    prefill: dict[int, torch.Tensor] | None = None
    seen: int = 0
    ages: list[int] = field(default_factory=list)
    states: list[dict[int, torch.Tensor]] = field(default_factory=list)


class Collector:
    """Observes engine steps and writes labelled samples to shards."""

    def __init__(self, out_dir: pathlib.Path, layers: list[int], hidden_size: int,
                 cfg: CollectConfig, manifest: dict[str, Any]) -> None:
        self.out, self.layers, self.cfg, self.manifest = out_dir, layers, cfg, manifest
        self.live: dict[int, _Live] = {}
        # One (prompt index, columns) entry per finished request, added by a single append:
        # an interrupt at any point leaves whole requests here, never a part of one.
        self.pending: list[tuple[int, dict[str, np.ndarray]]] = []
        self.bytes = 0
        self.row_bytes = 4 * hidden_size * len(layers)

    def start(self, rid: int, index: int) -> None:
        self.live[rid] = _Live(index, np.random.default_rng([self.cfg.seed, index]))

    def observe(self, step: StepRecord) -> None:
        """Reservoir-sample each row's hidden states (engine observer)."""
        k = self.cfg.samples_per_request
        for i, rid in enumerate(step.rids):
            live = self.live[rid]
            state = {layer: step.hidden[layer][i].float().cpu().clone() for layer in self.layers}
            if step.first[i]:
                live.prefill = state
                continue
            live.seen += 1
            if len(live.ages) < k:
                live.ages.append(step.generated[i])
                live.states.append(state)
            else:
                j = int(live.rng.integers(0, live.seen))
                if j < k:
                    live.ages[j], live.states[j] = step.generated[i], state

    def finish(self, rid: int, total: int) -> None:
        """Label the finished request's samples and buffer them; write a checkpoint when
        `checkpoint_every` requests or `shard_bytes` are buffered."""
        live = self.live.pop(rid)
        ages = ([1] if live.prefill is not None else []) + live.ages
        states = ([live.prefill] if live.prefill is not None else []) + live.states
        n = len(ages)
        cols = {"request": np.full(n, live.index, np.int64),
                "age": np.asarray(ages, np.int64),
                "remaining": total - np.asarray(ages, np.int64),
                "total": np.full(n, total, np.int64),
                "prefill": np.asarray([live.prefill is not None and j == 0 for j in range(n)])}
        for layer in self.layers:
            cols[f"layer_{layer}"] = torch.stack([s[layer] for s in states]).numpy()
        self.pending.append((live.index, cols))
        self.bytes += n * self.row_bytes
        if len(self.pending) >= self.cfg.checkpoint_every or self.bytes >= self.cfg.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered requests as the next shard and record them as done.

        Safe to call again after an interrupt anywhere inside it: requests the manifest
        already lists are not written twice, and an unlisted shard is overwritten.
        """
        done = set(self.manifest["done"])
        pending = [(i, cols) for i, cols in self.pending if i not in done]
        if pending:
            from safetensors.numpy import save_file

            name = f"shard_{len(self.manifest['shards']):05d}.safetensors"
            arrays = {k: np.ascontiguousarray(np.concatenate([cols[k] for _, cols in pending]))
                      for k in pending[0][1]}
            arrays["prefill"] = arrays["prefill"].astype(np.uint8)
            with atomic_path(self.out / name) as tmp:
                save_file(arrays, str(tmp))
            updated = {**self.manifest, "shards": self.manifest["shards"] + [name],
                       "done": self.manifest["done"] + [i for i, _ in pending]}
            # The file first: interrupted before the in-memory update, a second flush
            # rewrites the same shard and manifest instead of losing them.
            write_manifest(self.out, updated)
            self.manifest.update(updated)
        self.pending, self.bytes = [], 0


def write_manifest(out: pathlib.Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically (a crash leaves the old one)."""
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


def collect(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
            out_dir: str | pathlib.Path, cfg: CollectConfig | None = None,
            model_id: str = "", progress: bool = True) -> dict[str, Any]:
    """Generate answers for `prompts` and store labelled hidden-state samples in `out_dir`."""
    cfg = cfg or CollectConfig()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = int(model.config.num_hidden_layers)
    layers = list(range(n_layers)) if cfg.layers is None else sorted(set(cfg.layers))
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is not one of the model's {n_layers} layers")
    manifest = _open_manifest(out, layers, int(model.config.hidden_size), cfg, model_id, prompts)
    todo = sorted(set(range(len(prompts))) - set(manifest["done"])
                  - {s["index"] for s in manifest["skipped"]})

    encoded = {i: tokenizer(prompts[i])["input_ids"] for i in todo}
    longest = max((len(v) for v in encoded.values()), default=1)
    per_request = longest + cfg.max_new_tokens + 1
    block = 16
    sched = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=cfg.max_running, block_size=block,
                               kv_capacity_tokens=block * (-(-per_request // block) + 1)
                               * cfg.max_running)
    engine = Engine(model, EngineConfig(scheduler=sched, capture_layers=tuple(layers)))
    collector = Collector(out, layers, int(model.config.hidden_size), cfg, manifest)
    engine.observer = collector.observe
    stop = [t for t in (getattr(tokenizer, "eos_token_id", None),
                        getattr(model.config, "eos_token_id", None)) if isinstance(t, int)]
    for i in todo:
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + i,
                                stop_token_ids=tuple(stop))
        try:
            collector.start(engine.add_request(encoded[i], params), i)
        except ValueError as exc:
            manifest["skipped"].append({"index": i, "reason": str(exc)})
    bar = progress_bar(len(todo), "collecting hidden states", "req", progress)
    try:
        while engine.has_unfinished():
            for o in engine.step():
                collector.finish(o.rid, len(o.output_ids))
                bar.update(1)
    except BaseException:
        # Ctrl-C or a failure: keep the requests that did finish, so a rerun skips them.
        collector.flush()
        raise
    finally:
        bar.close()
        engine.close()  # the hooks and attention go; the caller's model is as it came
    collector.flush()
    write_manifest(out, manifest)
    return manifest


def _open_manifest(out: pathlib.Path, layers: list[int], hidden: int, cfg: CollectConfig,
                   model_id: str, prompts: Sequence[str]) -> dict[str, Any]:
    """The existing manifest (resume: settings must match) or a new one."""
    path = out / MANIFEST
    fresh = {"format": "trail-collection", "version": FORMAT_VERSION, "model_id": model_id,
             "layers": layers, "hidden_size": hidden, "config": asdict(cfg),
             "num_prompts": len(prompts), "shards": [], "done": [], "skipped": []}
    if not path.exists():
        with open(out / "prompts.jsonl", "w") as f:
            for i, p in enumerate(prompts):
                f.write(json.dumps({"index": i, "prompt": p}) + "\n")
        write_manifest(out, fresh)
        return fresh
    old = json.loads(path.read_text())
    for key in ("layers", "hidden_size", "num_prompts"):
        if old.get(key) != fresh[key]:
            raise ValueError(f"{path}: cannot resume, {key} was {old.get(key)!r} and is now "
                             f"{fresh[key]!r} (use a new output directory)")
    if {k: v for k, v in old["config"].items() if k not in STORAGE_SETTINGS} != \
            {k: v for k, v in fresh["config"].items() if k not in STORAGE_SETTINGS}:
        raise ValueError(f"{path}: cannot resume with different settings "
                         f"({old['config']} vs {fresh['config']})")
    return old


@dataclass
class Samples:
    """Labelled samples of one layer, concatenated over shards."""

    x: np.ndarray          # [N, D] float32 hidden states
    request: np.ndarray    # [N] prompt index
    age: np.ndarray        # [N]
    remaining: np.ndarray  # [N] true remaining tokens (label)
    total: np.ndarray      # [N] the request's output length
    prefill: np.ndarray    # [N] bool: the prompt-mean sample


def load_samples(collection: str | pathlib.Path, layer: int) -> Samples:
    """All samples of `layer` from a collection directory."""
    from safetensors.numpy import load_file

    d = pathlib.Path(collection)
    manifest = read_manifest(d)
    if layer not in manifest["layers"]:
        raise ValueError(f"{d} holds layers {manifest['layers']}, not {layer}")
    parts: dict[str, list[np.ndarray]] = {}
    for name in manifest["shards"]:
        shard = load_file(str(d / name))
        for key in ("request", "age", "remaining", "total", "prefill", f"layer_{layer}"):
            parts.setdefault(key, []).append(shard[key])
    if not parts:
        raise ValueError(f"{d} holds no samples yet")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Samples(cat[f"layer_{layer}"].astype(np.float32), cat["request"], cat["age"],
                   cat["remaining"], cat["total"], cat["prefill"].astype(bool))


def read_manifest(collection: str | pathlib.Path) -> dict[str, Any]:
    """The manifest of a collection directory (clear error if it is not one)."""
    path = pathlib.Path(collection) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `trail collect` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "trail-collection":
        raise ValueError(f"{path} is not a trail collection manifest")
    return manifest


def read_collected_prompts(collection: str | pathlib.Path) -> list[str]:
    """The prompt texts of a collection, by index."""
    rows = [json.loads(line) for line in
            (pathlib.Path(collection) / "prompts.jsonl").read_text().splitlines() if line]
    return [r["prompt"] for r in sorted(rows, key=lambda r: r["index"])]


def iter_layers(collection: str | pathlib.Path) -> Iterable[int]:
    """Layers stored in a collection."""
    return list(read_manifest(collection)["layers"])
