"""Learning to rank prompts by output length: vllm-ltr's predictor on the offline encoder.

vllm-ltr (Fu et al., arXiv 2408.15792) fine-tunes OPT-125M on prompts with a ListMLE loss
over lists of 32 and schedules by the learned score: it only has to *order* requests, not
predict their lengths. Here the same loss trains a small head over the frozen
all-MiniLM-L6-v2 sentence embedding (the encoder of `trail.training.prompt_only`, nothing
downloaded). The score ranks like a length: lower runs first, which is how the scheduler's
`LTR` policy reads `update_scores` / the `score` argument of `add`.

Checkpoints: `ltr.safetensors` (the head) and `ltr.json` (shape, training report, the
encoder's identity); never pickle.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trail.cpu import threads
from trail.fileio import atomic_path, json_field, read_json_object
from trail.training.prompt_only import SentenceEncoder, _check_lengths, _check_texts, encoder_dir
from trail.progress import progress_bar

FORMAT = "trail-prompt-ltr"
FORMAT_VERSION = 1
WEIGHTS_FILE = "ltr.safetensors"
CONFIG_FILE = "ltr.json"


def listmle_loss(scores: Tensor, lengths: Tensor, generator: torch.Generator | None = None
                 ) -> Tensor:
    """ListMLE over lists [L, n]: -log P(shortest-first order | utilities = -scores), ties in
    length broken at random; the mean over lists."""
    noise = torch.rand(lengths.shape, generator=generator, dtype=torch.float64)
    order = torch.argsort(lengths.double() + 1e-3 * noise, dim=1)  # shortest first
    u = -scores.gather(1, order)
    # log Σ_{j >= i} exp(u_j): a log-cumsum-exp from the end of each list
    tail = torch.logcumsumexp(u.flip(1), dim=1).flip(1)
    return (tail - u).sum(1).mean()


def kendall_tau(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Kendall's τ-b between two sequences (exact, O(n²) in blocks; n of a few thousand)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau: two 1-D sequences of one length, got {x.shape}, "
                         f"{y.shape}")
    n = len(x)
    concordant = tx = ty = 0.0
    for s in range(0, n, 512):
        dx = np.sign(x[s:s + 512, None] - x[None, :])
        dy = np.sign(y[s:s + 512, None] - y[None, :])
        concordant += float((dx * dy).sum())
        tx += float((dx != 0).sum())
        ty += float((dy != 0).sum())
    return concordant / math.sqrt(tx * ty) if tx and ty else math.nan


def top_k_precision(scores: np.ndarray, lengths: np.ndarray, k: int = 8, list_size: int = 32,
                    lists: int = 2000, seed: int = 0) -> float:
    """In random lists of `list_size` prompts, the mean fraction of the `k` predicted
    shortest that are among the `k` truly shortest (ties in length count as shortest)."""
    scores, lengths = np.asarray(scores, np.float64), np.asarray(lengths, np.float64)
    if len(scores) < list_size:
        raise ValueError(f"top_k_precision: need at least list_size={list_size} prompts, "
                         f"got {len(scores)}")
    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(lists):
        pick = rng.choice(len(scores), list_size, replace=False)
        pred = pick[np.argsort(scores[pick], kind="stable")[:k]]
        kth = np.sort(lengths[pick])[k - 1]
        hits.append(float(np.mean(lengths[pred] <= kth)))
    return float(np.mean(hits))


class PromptRankPredictor:
    """A ranking score per prompt (lower = shorter answer): frozen MiniLM + MLP, ListMLE."""

    def __init__(self, hidden_dim: int = 256, encoder: SentenceEncoder | None = None) -> None:
        if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 0:
            raise ValueError(f"PromptRankPredictor: hidden_dim must be an int >= 0, "
                             f"got {hidden_dim!r}")
        if encoder is None:
            encoder_dir()  # fail now, with the install hint, not at the first fit()
        self.hidden_dim = hidden_dim
        self._encoder = encoder
        self.head: nn.Sequential | None = None
        self.report: dict[str, Any] = {}

    @property
    def encoder(self) -> SentenceEncoder:
        """The frozen sentence encoder (loaded on first use)."""
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        return self._encoder

    def _make_head(self, dim: int) -> nn.Sequential:
        if self.hidden_dim == 0:
            return nn.Sequential(nn.Linear(dim, 1))
        return nn.Sequential(nn.Linear(dim, self.hidden_dim), nn.ReLU(),
                             nn.Linear(self.hidden_dim, 1))

    def fit(self, prompts: Sequence[str], lengths: Sequence[float] | np.ndarray | Tensor,
            seed: int = 0, epochs: int = 30, list_size: int = 32, lr: float = 1e-3,
            weight_decay: float = 0.01, progress: bool = True) -> dict[str, Any]:
        """Train on (prompt, output length) pairs with ListMLE over random lists."""
        prompts = _check_texts(prompts, "PromptRankPredictor.fit")
        y = _check_lengths(lengths, len(prompts), "PromptRankPredictor.fit")
        for name, v in (("epochs", epochs), ("list_size", list_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValueError(f"PromptRankPredictor.fit: {name} must be an int >= 2, "
                                 f"got {v!r}")
        if len(prompts) < list_size:
            raise ValueError(f"PromptRankPredictor.fit: {len(prompts)} prompts are fewer "
                             f"than list_size={list_size}")
        t0 = time.perf_counter()
        x = self.encoder.encode(prompts, progress=progress)
        t_embed = time.perf_counter() - t0
        target = torch.from_numpy(y.astype(np.float64))
        n, lists = len(prompts), len(prompts) // list_size
        losses: list[float] = []
        t1 = time.perf_counter()
        with torch.random.fork_rng(devices=[]), threads(1):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            head = self._make_head(x.shape[1])
            opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
            bar = progress_bar(epochs, "training LTR head", "epoch", progress, leave=False)
            for _ in range(epochs):
                head.train()
                # Each epoch deals every prompt into disjoint lists of `list_size`.
                idx = torch.randperm(n, generator=gen)[: lists * list_size].view(lists,
                                                                                  list_size)
                total = 0.0
                for batch in idx.split(4):  # 4 lists per step
                    scores = head(x[batch]).squeeze(-1)
                    loss = listmle_loss(scores.double(), target[batch], gen)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(batch)
                losses.append(total / lists)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.close()
        self.head = head.eval()
        train_scores = self._scores(x)
        self.report = {"n": n, "seed": seed, "epochs": epochs, "list_size": list_size,
                       "lr": lr, "weight_decay": weight_decay, "hidden_dim": self.hidden_dim,
                       "loss_per_epoch": [round(v, 4) for v in losses],
                       "train_kendall_tau": kendall_tau(train_scores, y),
                       "embed_s": round(t_embed, 3),
                       "train_s": round(time.perf_counter() - t1, 3)}
        return self.report

    @torch.no_grad()
    def _scores(self, x: Tensor) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("PromptRankPredictor: call fit() or load() first")
        with threads(1):
            return self.head(x).squeeze(-1).double().numpy()

    def score(self, prompts: Sequence[str], progress: bool = False) -> np.ndarray:
        """The ranking score [N] (float64) of each prompt: lower = shorter answer expected."""
        prompts = _check_texts(prompts, "PromptRankPredictor.score", allow_empty=True)
        if self.head is None:
            raise RuntimeError("PromptRankPredictor.score: call fit() or load() first")
        if not prompts:
            return np.zeros(0)
        return self._scores(self.encoder.encode(prompts, progress=progress))

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write `path/ltr.safetensors` and `path/ltr.json`; returns the directory."""
        from safetensors.torch import save_file

        if self.head is None:
            raise RuntimeError("PromptRankPredictor.save: call fit() or load() first")
        out = pathlib.Path(path)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file({k: v.detach().float().contiguous()
                       for k, v in self.head.state_dict().items()}, str(tmp))
        cfg = {"format": FORMAT, "version": FORMAT_VERSION, "hidden_dim": self.hidden_dim,
               "encoder": self.encoder.identity(),
               "train": {k: v for k, v in self.report.items() if k != "loss_per_epoch"}}
        (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | pathlib.Path, encoder: SentenceEncoder | None = None
             ) -> "PromptRankPredictor":
        """Load a checkpoint written by `save`; refuses one trained on another encoder."""
        from safetensors.torch import load_file

        d = pathlib.Path(path)
        cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"PromptRankPredictor.load: {p} does not exist")
        cfg = read_json_object(cfg_path, f"{FORMAT} config")
        if cfg.get("format") != FORMAT or cfg.get("version") != FORMAT_VERSION:
            raise ValueError(f"PromptRankPredictor.load: {cfg_path} is not a {FORMAT} "
                             f"v{FORMAT_VERSION} config")
        hidden = json_field(cfg, "hidden_dim", "int", cfg_path, minimum=0)
        want = json_field(cfg, "encoder", "dict", cfg_path)
        pred = cls(hidden_dim=hidden, encoder=encoder)
        have = pred.encoder.identity()
        for key in ("name", "dim", "max_length", "pooling", "normalize", "weights_sha256"):
            if have.get(key) != want.get(key):
                raise ValueError(f"PromptRankPredictor.load: {cfg_path} was trained on an "
                                 f"encoder with {key}={want.get(key)!r}, this one has "
                                 f"{key}={have.get(key)!r}")
        head = pred._make_head(int(have["dim"]))
        tensors = load_file(str(w_path))
        expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != expected:
            raise ValueError(f"PromptRankPredictor.load: {w_path} holds tensors {got}, "
                             f"{cfg_path} implies {expected}")
        head.load_state_dict(tensors)
        pred.head = head.eval()
        pred.report = dict(cfg.get("train", {}))
        return pred
