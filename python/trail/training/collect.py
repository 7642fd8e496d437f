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
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

import trail_ext as te
from trail.engine import Engine, EngineConfig, SamplingParams, StepRecord
from trail.fileio import atomic_path, json_field, read_json_object
from trail.models import encode_prompt, has_chat_template, stop_token_ids
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
    # Format each prompt as a user turn with the tokenizer's chat template (None: when it has
    # one, as an instruction-tuned model is served); the manifest records what was used.
    chat_template: bool | None = None
    # Also store, with each sampled decode state, the mean of the request's last `window`
    # decode states (0: off): the windowed probe input (last state + recent mean).
    window: int = 0
    shard_bytes: int = 128 << 20         # a shard is written once the buffer holds this much
    checkpoint_every: int = 64           # ... or once this many requests have finished

    def __post_init__(self) -> None:
        if min(self.samples_per_request, self.max_new_tokens, self.max_running,
               self.checkpoint_every) < 1:
            raise ValueError(f"CollectConfig: samples_per_request, max_new_tokens, "
                             f"max_running and checkpoint_every must be >= 1, got {asdict(self)}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"CollectConfig: window must be an int >= 0, got {self.window!r}")
        if self.chat_template is not None and not isinstance(self.chat_template, bool):
            raise TypeError(f"CollectConfig: chat_template must be True, False or None, got "
                            f"{self.chat_template!r}")


def read_prompts(path: str | pathlib.Path) -> list[str]:
    """Prompts from JSONL, or from one JSON array of objects (the form Alpaca's data is
    distributed in): a `prompt` field, or Alpaca's `instruction` (+ `input`).

    ValueError naming the file (and line or item) for a file that is not UTF-8, a row that is
    not a JSON object with a string `prompt` or `instruction`, a blank prompt, or a file with
    no prompts at all."""
    p = pathlib.Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a JSONL prompt file (not UTF-8 text: {exc.reason} at "
                         f"byte {exc.start})") from None
    rows: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not a JSON array ({exc.msg} at line {exc.lineno}, column "
                             f"{exc.colno})") from None
        rows = [(f"{p}[{i}]", row) for i, row in enumerate(items)]
    else:
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{p}:{n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{n}: not a JSON line ({exc.msg} at column {exc.colno})"
                                 ) from None
    prompts = [_prompt_of(row, where) for where, row in rows]
    if not prompts:
        raise ValueError(f"{p}: no prompts in the file (it is empty or blank)")
    return prompts


def _prompt_of(row: Any, where: str) -> str:
    """The prompt of one JSON object (see read_prompts); ValueError naming `where`."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'prompt' or "
                         f"'instruction' field, got {type(row).__name__}")
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string, got {prompt!r:.60}")
    elif "instruction" in row:
        instruction, extra = row["instruction"], row.get("input")
        if not isinstance(instruction, str) or not isinstance(extra, (str, type(None))):
            raise ValueError(f"{where}: 'instruction' (and 'input') must be strings, got "
                             f"{instruction!r:.40}, {extra!r:.40}")
        extra = (extra or "").strip()
        prompt = instruction + (f"\n\n{extra}" if extra else "")
    else:
        raise ValueError(f"{where}: a line needs a 'prompt' or 'instruction' field, "
                         f"got keys {sorted(row)}")
    if not prompt.strip():
        raise ValueError(f"{where}: the prompt is blank")
    return prompt


@dataclass
class _Live:
    """Samples of one request while it generates."""

    index: int
    rng: np.random.Generator
    prefill: dict[int, torch.Tensor] | None = None
    seen: int = 0
    ages: list[int] = field(default_factory=list)
    states: list[dict[int, torch.Tensor]] = field(default_factory=list)
    windows: list[dict[int, torch.Tensor]] = field(default_factory=list)
    recent: deque[dict[int, torch.Tensor]] = field(default_factory=deque)


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
        self.row_bytes = 4 * hidden_size * len(layers) * (2 if cfg.window else 1)

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
            if self.cfg.window:
                live.recent.append(state)
                if len(live.recent) > self.cfg.window:
                    live.recent.popleft()
            j = len(live.ages) if len(live.ages) < k else int(live.rng.integers(0, live.seen))
            if j < k:
                window = ({layer: torch.stack([r[layer] for r in live.recent]).mean(0)
                           for layer in self.layers} if self.cfg.window else {})
                if j == len(live.ages):
                    live.ages.append(step.generated[i])
                    live.states.append(state)
                    live.windows.append(window)
                else:
                    live.ages[j], live.states[j] = step.generated[i], state
                    live.windows[j] = window

    def finish(self, rid: int, total: int) -> None:
        """Label the finished request's samples and buffer them; write a checkpoint when
        `checkpoint_every` requests or `shard_bytes` are buffered."""
        live = self.live.pop(rid)
        ages = ([1] if live.prefill is not None else []) + live.ages
        states = ([live.prefill] if live.prefill is not None else []) + live.states
        # The prompt-mean sample's window is the prompt mean itself (no decode state yet).
        windows = ([live.prefill] if live.prefill is not None else []) + live.windows
        n = len(ages)
        cols = {"request": np.full(n, live.index, np.int64),
                "age": np.asarray(ages, np.int64),
                "remaining": total - np.asarray(ages, np.int64),
                "total": np.full(n, total, np.int64),
                "prefill": np.asarray([live.prefill is not None and j == 0 for j in range(n)])}
        for layer in self.layers:
            cols[f"layer_{layer}"] = torch.stack([s[layer] for s in states]).numpy()
            if self.cfg.window:
                cols[f"window_{layer}"] = torch.stack([w[layer] for w in windows]).numpy()
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
    # Checked before the manifest is written: a refused call leaves nothing to resume from.
    chat = has_chat_template(tokenizer) if cfg.chat_template is None else cfg.chat_template
    if chat and not has_chat_template(tokenizer):
        raise ValueError("chat_template=True, but the tokenizer has no chat template")
    manifest = _open_manifest(out, layers, int(model.config.hidden_size), cfg, model_id, prompts)
    todo = sorted(set(range(len(prompts))) - set(manifest["done"])
                  - {s["index"] for s in manifest["skipped"]})
    manifest["chat_template_used"] = chat
    encoded = {i: encode_prompt(tokenizer, prompts[i], chat) for i in todo}
    longest = max((len(v) for v in encoded.values()), default=1)
    per_request = longest + cfg.max_new_tokens + 1
    block = 16
    sched = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=cfg.max_running, block_size=block,
                               kv_capacity_tokens=block * (-(-per_request // block) + 1)
                               * cfg.max_running)
    engine = Engine(model, EngineConfig(scheduler=sched, capture_layers=tuple(layers)))
    collector = Collector(out, layers, int(model.config.hidden_size), cfg, manifest)
    engine.observer = collector.observe
    stop = stop_token_ids(model, tokenizer)
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
    return check_resume(out, layers, hidden, cfg, len(prompts))


def check_resume(out: str | pathlib.Path, layers: list[int], hidden: int, cfg: CollectConfig,
                 num_prompts: int) -> dict[str, Any]:
    """The manifest a collection into `out` would resume from, checked to match these
    settings (ValueError naming the manifest otherwise), or {} if `out` holds none yet."""
    out = pathlib.Path(out)
    if not (out / MANIFEST).exists():
        return {}
    old = read_manifest(out)
    path = out / MANIFEST
    fresh = {"layers": sorted(set(layers)), "hidden_size": hidden, "num_prompts": num_prompts}
    for key in ("layers", "hidden_size", "num_prompts"):
        if old.get(key) != fresh[key]:
            raise ValueError(f"{path}: cannot resume, {key} was {old.get(key)!r} and is now "
                             f"{fresh[key]!r} (use a new output directory)")
    now = asdict(cfg)
    changed = [f"{k} was {old['config'].get(k)!r} and is now {now.get(k)!r}"
               for k in sorted(set(old["config"]) | set(now))
               if k not in STORAGE_SETTINGS and old["config"].get(k) != now.get(k)]
    if changed:
        raise ValueError(f"{path}: cannot resume with different settings: "
                         f"{'; '.join(changed)} (use a new output directory)")
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
    xw: np.ndarray | None = None  # [N, D] mean of the last `window` states (if collected)

    def windowed(self) -> "Samples":
        """The same samples with the windowed input [last state, recent mean] ([N, 2D])."""
        if self.xw is None:
            raise ValueError("this collection stored no window (collect with window > 0)")
        return Samples(np.concatenate([self.x, self.xw], axis=1), self.request, self.age,
                       self.remaining, self.total, self.prefill)


SAMPLE_KEYS = ("request", "age", "remaining", "total", "prefill")


def load_samples(collection: str | pathlib.Path, layer: int) -> Samples:
    """All samples of `layer` from a collection directory."""
    d = pathlib.Path(collection)
    manifest = read_manifest(d)
    if layer not in manifest["layers"]:
        raise ValueError(f"{d} holds layers {manifest['layers']}, not {layer}")
    parts: dict[str, list[np.ndarray]] = {}
    window = (f"window_{layer}",) if int(manifest["config"].get("window", 0) or 0) else ()
    for name in manifest["shards"]:
        shard = _read_shard(d / name, SAMPLE_KEYS + (f"layer_{layer}",) + window)
        for key, value in shard.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise ValueError(f"{d} holds no samples yet")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Samples(cat[f"layer_{layer}"].astype(np.float32), cat["request"], cat["age"],
                   cat["remaining"], cat["total"], cat["prefill"].astype(bool),
                   cat[window[0]].astype(np.float32) if window else None)


def _read_shard(path: pathlib.Path, keys: Sequence[str],
                header_only: bool = False) -> dict[str, np.ndarray]:
    """The arrays `keys` of one shard (with `header_only`, none: the file's header and size
    are checked, nothing is read); ValueError naming the shard if it is missing, truncated or
    lacks a key, or if the arrays' lengths disagree."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ValueError(f"{path}: a shard the manifest lists does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            missing = sorted(set(keys) - set(f.keys()))
            if missing:
                raise ValueError(f"{path}: shard lacks {', '.join(missing)}")
            rows = {k: f.get_slice(k).get_shape()[:1] for k in keys}
            if len(set(map(tuple, rows.values()))) > 1:
                raise ValueError(f"{path}: shard arrays of different lengths {rows}")
            return {} if header_only else {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors shard ({exc})") from None


def read_manifest(collection: str | pathlib.Path) -> dict[str, Any]:
    """The manifest of a collection directory, checked (FileNotFoundError if there is none,
    ValueError naming the file and the field if it is not a trail collection manifest)."""
    path = pathlib.Path(collection) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `trail collect` first")
    manifest = read_json_object(path, "trail collection manifest")
    if manifest.get("format") != "trail-collection":
        raise ValueError(f"{path} is not a trail collection manifest "
                         f"(format={manifest.get('format')!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: version {manifest.get('version')!r}, this trail reads "
                         f"version {FORMAT_VERSION}")
    json_field(manifest, "layers", "ints", path, minimum=0)
    json_field(manifest, "hidden_size", "int", path, minimum=1)
    json_field(manifest, "num_prompts", "int", path, minimum=0)
    json_field(json_field(manifest, "config", "dict", path), "max_new_tokens", "int",
               f"{path}: field 'config'", minimum=1)
    json_field(manifest, "shards", "strs", path)
    json_field(manifest, "done", "ints", path, minimum=0)
    json_field(manifest, "skipped", "list", path)
    json_field(manifest, "model_id", "str", path, default="")
    if not all(isinstance(s, dict) and _is_index(s.get("index")) for s in manifest["skipped"]):
        raise ValueError(f"{path}: field 'skipped' must hold objects with an integer 'index'")
    bad = [s for s in manifest["shards"] if pathlib.PurePath(s).name != s]
    if bad:
        raise ValueError(f"{path}: field 'shards' must hold file names, got {bad[:3]}")
    return manifest


def _is_index(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_collection(collection: str | pathlib.Path, layers: Sequence[int] | None = None,
                     prompts: bool = False) -> dict[str, Any]:
    """What `load_samples` and `read_collected_prompts` would refuse, found before any work:
    the manifest (read_manifest), `layers` among its layers, at least one shard, every shard's
    header and keys, and with `prompts` the prompts file. Returns the manifest."""
    d = pathlib.Path(collection)
    manifest = read_manifest(d)
    for layer in layers or ():
        if layer not in manifest["layers"]:
            raise ValueError(f"{d} holds layers {manifest['layers']}, not {layer}")
    if not manifest["shards"]:
        raise ValueError(f"{d} holds no samples yet (no shards in {d / MANIFEST})")
    keys = SAMPLE_KEYS + tuple(f"layer_{k}" for k in (layers or manifest["layers"]))
    for name in manifest["shards"]:
        _read_shard(d / name, keys, header_only=True)
    if prompts:
        read_collected_prompts(d)
    return manifest


def read_collected_prompts(collection: str | pathlib.Path) -> list[str]:
    """The prompt texts of a collection, by index (ValueError naming prompts.jsonl and the
    line if it is not the file `trail collect` wrote)."""
    path = pathlib.Path(collection) / "prompts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a `trail collect` directory")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
        if not (isinstance(row, dict) and _is_index(row.get("index"))
                and isinstance(row.get("prompt"), str)):
            raise ValueError(f"{path}:{n}: expected {{\"index\": N, \"prompt\": \"...\"}}, "
                             f"got {line[:60]!r}")
        rows.append(row)
    indices = sorted(r["index"] for r in rows)
    if indices != list(range(len(rows))):
        raise ValueError(f"{path}: the indices are not 0..{len(rows) - 1} once each")
    return [r["prompt"] for r in sorted(rows, key=lambda r: r["index"])]
