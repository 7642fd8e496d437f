"""`trail.Probe`: the remaining-length probe with its per-slot bin distributions.

A Probe is a small MLP (hidden → H → ReLU → K bins, torch.nn.Linear layers) over one
layer's hidden state, plus a state buffer [num_slots, K] holding each serving slot's current
distribution over remaining-length bins. `step()` runs `torch.ops.trail.probe_step` for a
batch: the probe's output refines each slot's distribution by a Bayesian update with the
transition Tᵏ for the k tokens generated since that slot's last prediction. `step_rank()`
runs `torch.ops.trail.probe_step_rank`, which also returns each distribution's Gittins rank.

Checkpoints are a directory with `probe.safetensors` (weights) and `probe.json` (layer,
bin edges, sizes, model identity); never pickle.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from trail.checks import as_integer
from trail.fileio import atomic_path
from trail.probe.bins import Bins
from trail.probe.checkpoint import open_checkpoint

FORMAT_VERSION = 1
WEIGHTS_FILE = "probe.safetensors"
CONFIG_FILE = "probe.json"

IntLike = int | Sequence[int] | Tensor


class Probe(nn.Module):
    """MLP remaining-length probe over one layer's hidden state, with per-slot distributions."""

    def __init__(self, hidden_size: int, bins: Bins | None = None, hidden_dim: int = 512,
                 layer: int = 0, num_slots: int = 256, model_id: str = "",
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        bins = bins if bins is not None else Bins.uniform()
        if not isinstance(bins, Bins):
            raise TypeError(f"Probe: bins must be a Bins, got {bins!r}")
        hidden_size = _size(hidden_size, "hidden_size", 1)
        hidden_dim = _size(hidden_dim, "hidden_dim", 1)
        num_slots = _size(num_slots, "num_slots", 1)
        layer = _size(layer, "layer", 0)
        _within_memory("hidden_size * hidden_dim", hidden_size * hidden_dim)
        _within_memory("num_slots * bins", num_slots * bins.k)
        if not isinstance(model_id, str):
            raise TypeError(f"Probe: model_id must be a str, got {model_id!r}")
        self.bins = bins
        self.layer = layer
        self.model_id = model_id
        self.fc1 = nn.Linear(hidden_size, hidden_dim, device=device)
        self.fc2 = nn.Linear(hidden_dim, bins.k, device=device)
        self.register_buffer("centers", bins.centers.to(device), persistent=False)
        self.register_buffer("edges", torch.tensor(bins.edges, dtype=torch.float32,
                                                   device=device), persistent=False)
        self.register_buffer("state", torch.full((num_slots, bins.k), 1.0 / bins.k,
                                                 device=device), persistent=False)
        self._transitions: dict[tuple[int, torch.device], Tensor] = {}
        self._slots_used = 0              # slots ever handed out: 0 .. _slots_used - 1
        self._free_slots: set[int] = set()  # handed out and given back

    # ------------------------------------------------------------------ shape

    @property
    def hidden_size(self) -> int:
        """Width D of the hidden states the probe reads."""
        return self.fc1.in_features

    @property
    def hidden_dim(self) -> int:
        """Width H of the probe's hidden layer."""
        return self.fc1.out_features

    @property
    def num_bins(self) -> int:
        """Number K of remaining-length bins."""
        return self.bins.k

    @property
    def num_slots(self) -> int:
        """Number S of serving slots with a distribution in `state`."""
        return self.state.shape[0]

    def forward(self, hidden: Tensor) -> Tensor:
        """Bin logits [B, K] for hidden states [B, D] (used for training)."""
        return self.fc2(torch.relu(self.fc1(hidden.to(self.fc1.weight.dtype))))

    # ------------------------------------------------------------------ serving

    def transition(self, tokens: int = 1) -> Tensor:
        """Tᵏ for k = `tokens` on the probe's device (cached)."""
        key = (tokens, self.state.device)
        t = self._transitions.get(key)
        if t is None:
            t = self.bins.transition(tokens).to(self.state.device)
            self._transitions[key] = t
        return t

    @torch.no_grad()
    def step(self, hidden: Tensor, slots: IntLike, first: bool | Sequence[bool] | Tensor,
             generated: IntLike, max_new_tokens: IntLike, tokens_since_last: IntLike = 1
             ) -> Tensor:
        """Refine the slots' distributions with new hidden states; return predicted remaining.

        hidden [B, D]; slots, first, generated, max_new_tokens and tokens_since_last are one
        value per row (or one for all). The prediction is capped at max_new_tokens - generated.
        """
        return self._step(hidden, slots, first, generated, max_new_tokens, tokens_since_last,
                          rank=False)[0]

    @torch.no_grad()
    def step_rank(self, hidden: Tensor, slots: IntLike, first: bool | Sequence[bool] | Tensor,
                  generated: IntLike, max_new_tokens: IntLike, tokens_since_last: IntLike = 1
                  ) -> tuple[Tensor, Tensor]:
        """As `step`, also returning each slot's Gittins rank: (mean, gittins), both capped.

        The Gittins rank (trail.kernels.reference.gittins_rank_reference) ranks by the whole
        distribution, not its mean: a request likely to finish soon ranks early even if its
        mean is inflated by a small chance of running long.
        """
        pred, rank = self._step(hidden, slots, first, generated, max_new_tokens,
                                tokens_since_last, rank=True)
        assert rank is not None
        return pred, rank

    def _step(self, hidden: Tensor, slots: IntLike, first: bool | Sequence[bool] | Tensor,
              generated: IntLike, max_new_tokens: IntLike, tokens_since_last: IntLike,
              rank: bool) -> tuple[Tensor, Tensor | None]:
        if not isinstance(hidden, Tensor):
            raise TypeError(f"Probe.step: hidden must be a Tensor, got {type(hidden).__name__}")
        if hidden.dim() != 2 or hidden.shape[1] != self.hidden_size:
            raise ValueError(f"Probe.step: hidden must be [B, {self.hidden_size}], "
                             f"got {tuple(hidden.shape)}")
        b = hidden.shape[0]
        device = self.state.device
        slot_t = self._host_slots(slots, b)
        first_t = _per_row(first, b, torch.bool, "first")
        # float64: token counts are exact there up to 2**53 (float32 would round 2**24 + 1);
        # only the cap itself goes to the kernels in float32.
        gen = _per_row(generated, b, torch.float64, "generated")
        limit = _per_row(max_new_tokens, b, torch.float64, "max_new_tokens")
        cap = torch.clamp(limit - gen, min=0.0).float()
        since = _per_row(tokens_since_last, b, torch.int64, "tokens_since_last")
        if bool((since < 0).any()):
            raise ValueError(f"Probe.step: tokens_since_last must be >= 0, got {since.tolist()}")
        w = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if b == 0:
            empty = torch.empty(0, dtype=torch.float32, device=device)
            return empty, (empty.clone() if rank else None)

        def launch(rows: Tensor | None, tokens: int) -> tuple[Tensor, Tensor | None]:
            h, sl, fi, ca = ((hidden, slot_t, first_t, cap) if rows is None else
                             (hidden[rows.to(hidden.device)], slot_t[rows], first_t[rows],
                              cap[rows]))
            args = (h, sl.to(device), fi.to(device), *w, self.transition(tokens), self.centers)
            if rank:
                return torch.ops.trail.probe_step_rank(*args, self.edges, ca.to(device),
                                                       self.state)
            return torch.ops.trail.probe_step(*args, ca.to(device), self.state), None

        lo, hi = int(since.min()), int(since.max())
        if lo == hi:  # the usual case: one launch for the whole batch
            return launch(None, lo)
        pred = torch.empty(b, dtype=torch.float32, device=device)
        ranks = torch.empty_like(pred) if rank else None
        for k in torch.unique(since).tolist():  # rows skipped different numbers of tokens
            rows = (since == k).nonzero().flatten()
            p, r = launch(rows, k)
            pred[rows.to(device)] = p
            if ranks is not None:
                ranks[rows.to(device)] = r
        return pred, ranks

    def _host_slots(self, slots: IntLike, b: int) -> Tensor:
        """Slots as int32 on the host, checked: in range and unique (the kernels rely on it)."""
        if type(slots) is list and all(type(v) is int for v in slots):
            if len(slots) == b and (not b or 0 <= min(slots) and max(slots) < self.num_slots) \
                    and len(set(slots)) == b:
                return torch.tensor(slots, dtype=torch.int32)
        s = _per_row(slots, b, torch.int64, "slots")
        if b and (int(s.min()) < 0 or int(s.max()) >= self.num_slots):
            raise ValueError(f"Probe.step: slots must be in [0, {self.num_slots}), "
                             f"got {s.tolist()}")
        if len(torch.unique(s)) != b:
            raise ValueError(f"Probe.step: slots repeat within one batch: {s.tolist()}")
        return s.to(torch.int32)

    def distribution(self, slots: IntLike) -> Tensor:
        """Current bin distributions [len(slots), K] of these slots (a copy)."""
        idx = _as_index(slots, self.num_slots)
        return self.state[idx.to(self.state.device)].clone()

    def reset(self, slots: IntLike | None = None) -> None:
        """Set these slots' distributions (all if None) to uniform."""
        with torch.no_grad():
            if slots is None:
                self.state.fill_(1.0 / self.num_bins)
            else:
                idx = _as_index(slots, self.num_slots)
                self.state[idx.to(self.state.device)] = 1.0 / self.num_bins

    def resize_slots(self, num_slots: int) -> None:
        """Reallocate the state for `num_slots` slots, all uniform."""
        num_slots = _size(num_slots, "num_slots", 1)
        _within_memory("num_slots * bins", num_slots * self.num_bins)
        self.state = torch.full((num_slots, self.num_bins), 1.0 / self.num_bins,
                                device=self.state.device)
        self._slots_used, self._free_slots = 0, set()  # every slot is free again

    def grow_slots(self, num_slots: int) -> None:
        """Make room for `num_slots` slots, keeping existing distributions (new ones uniform)."""
        num_slots = _size(num_slots, "num_slots", 1)
        _within_memory("num_slots * bins", num_slots * self.num_bins)
        if num_slots < self.num_slots:
            raise ValueError(f"Probe.grow_slots: {num_slots!r} is fewer than the "
                             f"{self.num_slots} slots there are")
        grown = torch.full((num_slots, self.num_bins), 1.0 / self.num_bins,
                           device=self.state.device)
        grown[: self.num_slots] = self.state
        self.state = grown

    def acquire_slot(self) -> int:
        """A serving slot for a new request (its first step starts its distribution afresh);
        the state doubles when every slot is taken."""
        if self._free_slots:
            return self._free_slots.pop()
        if self._slots_used == self.num_slots:
            self.grow_slots(2 * self.num_slots)
        self._slots_used += 1
        return self._slots_used - 1

    @property
    def slots_in_use(self) -> int:
        """Serving slots held by live requests."""
        return self._slots_used - len(self._free_slots)

    def release_slot(self, slot: int) -> None:
        """Give back the slot of a finished or aborted request."""
        if isinstance(slot, bool) or not isinstance(slot, int) \
                or not 0 <= slot < self._slots_used or slot in self._free_slots:
            raise ValueError(f"Probe.release_slot: slot {slot!r} is not in use")
        self._free_slots.add(slot)

    # ------------------------------------------------------------------ checkpoints

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable description saved beside the weights."""
        return {"format": "trail-probe", "version": FORMAT_VERSION, "layer": self.layer,
                "bin_edges": list(self.bins.edges), "hidden_size": self.hidden_size,
                "hidden_dim": self.hidden_dim, "num_bins": self.num_bins,
                "model_id": self.model_id}

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write `path/probe.safetensors` and `path/probe.json`; returns the directory."""
        from safetensors.torch import save_file

        out = pathlib.Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous()
                   for k, v in self.state_dict().items()}
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        (out / CONFIG_FILE).write_text(json.dumps(self.config(), indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | pathlib.Path, num_slots: int = 256,
             device: torch.device | str | None = None,
             hidden_size: int | None = None) -> "Probe":
        """Load a checkpoint written by `save`; refuses shapes that disagree with its config.

        `hidden_size`, if given, must match the checkpoint (the serving model's width).
        """
        from safetensors.torch import load_file

        cfg, cfg_path, w_path, bins = open_checkpoint(path, CONFIG_FILE, WEIGHTS_FILE,
                                                      "trail-probe", FORMAT_VERSION, "Probe.load")
        if hidden_size is not None and hidden_size != cfg["hidden_size"]:
            raise ValueError(f"Probe.load: checkpoint reads hidden size {cfg['hidden_size']}, "
                             f"the model has {hidden_size}")
        tensors = load_file(str(w_path))
        want = {"fc1.weight": (cfg["hidden_dim"], cfg["hidden_size"]),
                "fc1.bias": (cfg["hidden_dim"],),
                "fc2.weight": (cfg["num_bins"], cfg["hidden_dim"]),
                "fc2.bias": (cfg["num_bins"],)}
        if set(tensors) != set(want):
            raise ValueError(f"Probe.load: {w_path} holds {sorted(tensors)}, "
                             f"expected {sorted(want)}")
        for name, shape in want.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"Probe.load: {name} has shape {tuple(tensors[name].shape)} "
                                 f"in {w_path}, but {cfg_path} implies {shape}")
        probe = cls(cfg["hidden_size"], bins, cfg["hidden_dim"], int(cfg["layer"]), num_slots,
                    str(cfg.get("model_id", "")), device=device)
        probe.load_state_dict({k: v.float() for k, v in tensors.items()})
        return probe


# Sizes and slot indexes reach the kernels as int32 (slots) and Triton's int32 offsets.
MAX_SIZE = 2**31 - 1
# Integers given per row must be exact in float64 (the cap's precision) and fit int64.
MAX_COUNT = 2**53


# Elements of one weight matrix or of the slot state (1 GiB in float32): far beyond any real
# probe (SmolLM2: 576 x 512; 4096 slots x 10 bins), and a typo such as hidden_dim=2**30 is
# refused at once instead of being allocated until the machine runs out of memory.
MAX_ELEMENTS = 2**28


def _within_memory(what: str, elements: int) -> None:
    if elements > MAX_ELEMENTS:
        raise ValueError(f"Probe: {what} = {elements} elements, at most 2**28 (1 GiB of "
                         f"float32) are allowed")


def _size(value: Any, name: str, lo: int) -> int:
    """A size or index argument: an integer (not a bool) in [lo, 2**31 - 1]."""
    v = as_integer(value, f"Probe: {name}")
    if not lo <= v <= MAX_SIZE:
        raise ValueError(f"Probe: {name}={v} must be in [{lo}, 2**31 - 1]")
    return v


def _per_row(value: Any, b: int, dtype: torch.dtype, name: str) -> Tensor:
    """One value per row as a host tensor (a scalar is repeated)."""
    if type(value) is list and len(value) == b and (
            all(type(v) is bool for v in value) if dtype == torch.bool
            else all(type(v) is int and -MAX_COUNT <= v <= MAX_COUNT for v in value)):
        return torch.tensor(value, dtype=dtype)  # the serving loop's case: nothing to check
    try:
        t = value.detach().to("cpu") if isinstance(value, Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise TypeError(f"Probe.step: {name} must be numbers, one per row or one for all, "
                        f"got {value!r}") from None
    if t.dtype not in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                       torch.int64) and not t.is_floating_point():
        raise TypeError(f"Probe.step: {name} must be real numbers, got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"Probe.step: {name} must have one value per row ({b}), "
                         f"got shape {tuple(t.shape)}")
    if dtype != torch.bool and t.dtype == torch.bool:
        raise TypeError(f"Probe.step: {name} must be numeric, got bool")
    if dtype == torch.bool and t.dtype != torch.bool:  # flags: bools, or integers 0 and 1
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"Probe.step: {name} must be bools, got dtype {t.dtype}")
        if t.numel() and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"Probe.step: {name} must be bools (or 0/1), got {t.tolist()}")
    if dtype in (torch.int64, torch.int32) and t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"Probe.step: {name} must be finite, got {t.tolist()}")
        if not bool(torch.all(t == torch.round(t))):
            raise TypeError(f"Probe.step: {name} must hold integers, got {t.tolist()}")
    if t.numel() and not t.is_floating_point() and t.dtype != torch.bool and (
            int(t.min()) < -MAX_COUNT or int(t.max()) > MAX_COUNT):
        raise ValueError(f"Probe.step: {name} must be in [-2**53, 2**53], got {t.tolist()}")
    out = t.to(dtype)
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise ValueError(f"Probe.step: {name} must be finite, got {t.tolist()}")
    return out


def _as_index(slots: IntLike, num_slots: int) -> Tensor:
    try:
        s = slots.detach().to("cpu") if isinstance(slots, Tensor) else torch.as_tensor(slots)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise TypeError(f"slots must be integers, got {slots!r}") from None
    if s.dtype == torch.bool or s.is_floating_point() or s.is_complex():
        # 1.7 would silently become slot 1, True slot 1
        raise TypeError(f"slots must be integers, got dtype {s.dtype}")
    s = s.reshape(-1).to(torch.int64)
    if s.numel() and (int(s.min()) < 0 or int(s.max()) >= num_slots):
        raise ValueError(f"slots must be in [0, {num_slots}), got {s.tolist()}")
    return s

