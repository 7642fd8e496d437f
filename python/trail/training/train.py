"""`trail train-probe`: fit the MLP probe on collected samples (the paper's recipe).

hidden → 512 → ReLU → K bins, cross-entropy on the bin of the true remaining length, AdamW,
cosine learning rate 0.01 → 0 over 30 epochs, batch 32 (every one a flag). Samples are split
by request, never by sample, so no request's states sit on both sides. Inputs are
standardised for the optimiser and the standardisation is then folded into the first
layer, so the saved probe reads raw hidden states (as `torch.ops.trail.probe_step` does).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trail.cpu import flush_denormals
from trail.probe.bins import Bins
from trail.training.collect import Samples
from trail.probe.probe import Probe
from trail.progress import progress_bar


@dataclass
class TrainConfig:
    """The training recipe (defaults: the paper's)."""

    hidden_dim: int = 512
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 0.01
    val_fraction: float = 0.2
    seed: int = 0


def split_by_request(request: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) that keep every request's samples on one side."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = np.unique(request)
    if len(ids) < 2:
        raise ValueError(f"need samples of at least 2 requests to split, got {len(ids)}")
    rng = np.random.default_rng(seed)
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
    val_ids = rng.permutation(ids)[:n_val]
    val = np.isin(request, val_ids)
    return ~val, val


def expected_remaining(logits: torch.Tensor, bins: Bins) -> torch.Tensor:
    """Σ softmax(logits) · bin centres: the probe's point prediction of one state alone."""
    return torch.softmax(logits.float(), dim=-1) @ bins.centers.to(logits.device)


def train_probe(samples: Samples, layer: int, bins: Bins, cfg: TrainConfig | None = None,
                model_id: str = "", progress: bool = True) -> tuple[Probe, dict[str, Any]]:
    """Train a probe for `layer` on `samples`; returns it and a training report."""
    cfg = cfg or TrainConfig()
    for name in ("hidden_dim", "epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"TrainConfig.lr must be positive, got {cfg.lr}")
    torch.manual_seed(cfg.seed)
    train, val = split_by_request(samples.request, cfg.val_fraction, cfg.seed)
    x = torch.from_numpy(samples.x)
    y = torch.from_numpy(bins.index(torch.from_numpy(samples.remaining)).numpy())
    mu = x[train].mean(dim=0)
    sigma = x[train].std(dim=0).clamp(min=1e-6)
    xs = (x - mu) / sigma
    probe = Probe(x.shape[1], bins, cfg.hidden_dim, layer, num_slots=1, model_id=model_id)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_idx = torch.from_numpy(np.flatnonzero(train))
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch,
                                                       eta_min=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    start = time.perf_counter()
    bar = progress_bar(cfg.epochs, f"training probe (layer {layer})", "epoch", progress)
    with flush_denormals():  # tiny features of early layers: subnormal math is ~30x slower
        for epoch in range(cfg.epochs):
            probe.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            total = 0.0
            for i in range(0, len(order), cfg.batch_size):
                b = order[i:i + cfg.batch_size]
                loss = torch.nn.functional.cross_entropy(probe(xs[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(b)
            row = {"epoch": epoch + 1, "train_loss": total / max(len(order), 1)}
            row.update(_val_metrics(probe, xs[torch.from_numpy(val)], y[torch.from_numpy(val)],
                                    torch.from_numpy(samples.remaining[val]), bins))
            history.append(row)
            bar.update(1)
            bar.set_postfix(val_mae=f"{row['val_mae']:.1f}")
    bar.close()
    _fold_standardisation(probe, mu, sigma)
    probe.eval()
    report = {"layer": layer, "bins": list(bins.edges), "config": asdict(cfg),
              "train_samples": int(train.sum()), "val_samples": int(val.sum()),
              "train_requests": int(len(np.unique(samples.request[train]))),
              "val_requests": int(len(np.unique(samples.request[val]))),
              "seconds": time.perf_counter() - start, "history": history,
              "val_mae": history[-1]["val_mae"], "val_accuracy": history[-1]["val_accuracy"]}
    return probe, report


@torch.no_grad()
def _val_metrics(probe: Probe, x: torch.Tensor, y: torch.Tensor, remaining: torch.Tensor,
                 bins: Bins) -> dict[str, float]:
    probe.eval()
    logits = probe(x)
    return {"val_loss": float(torch.nn.functional.cross_entropy(logits, y)),
            "val_accuracy": float((logits.argmax(dim=1) == y).float().mean()),
            "val_mae": float((expected_remaining(logits, bins) - remaining.float()).abs().mean())}


@torch.no_grad()
def _fold_standardisation(probe: Probe, mu: torch.Tensor, sigma: torch.Tensor) -> None:
    """fc1((x − μ)/σ) = (W/σ) x + (b − W μ/σ): the probe then takes raw hidden states."""
    w = probe.fc1.weight / sigma
    probe.fc1.bias -= w @ mu
    probe.fc1.weight.copy_(w)
