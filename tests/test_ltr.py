"""The learning-to-rank prompt predictor: ListMLE, Kendall τ, top-k precision, checkpoints."""

from __future__ import annotations

import itertools
import math
import pathlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trail.training.ltr import PromptRankPredictor, kendall_tau, listmle_loss, top_k_precision


def brute_listmle(u: list[float], order: list[int]) -> float:
    """-log Plackett-Luce probability of `order` (best first) under utilities u."""
    total, rest = 0.0, list(order)
    for i in order:
        total -= u[i] - math.log(sum(math.exp(u[j]) for j in rest))
        rest.remove(i)
    return total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=7), st.integers(0, 10**6))
def test_listmle_is_the_plackett_luce_likelihood(scores: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(len(scores)).astype(float)  # distinct: no ties to break
    loss = listmle_loss(torch.tensor([scores], dtype=torch.float64),
                        torch.tensor([lengths]))
    order = list(np.argsort(lengths))  # shortest first = best first; utility = -score
    assert float(loss) == pytest.approx(brute_listmle([-s for s in scores], order), abs=1e-9)


def test_listmle_prefers_scores_that_order_by_length() -> None:
    lengths = torch.tensor([[5.0, 1.0, 3.0]])
    good = listmle_loss(torch.tensor([[5.0, 1.0, 3.0]]), lengths)
    bad = listmle_loss(torch.tensor([[1.0, 5.0, 3.0]]), lengths)
    assert good < bad


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=30))
def test_kendall_tau_b_matches_the_pair_count(pairs: list[tuple[int, int]]) -> None:
    a, b = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)
    c = d = ta = tb = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        c += sa * sb > 0
        d += sa * sb < 0
        ta += sa != 0
        tb += sb != 0
    expect = (c - d) / math.sqrt(ta * tb) if ta and tb else math.nan
    got = kendall_tau(a, b)
    assert (math.isnan(expect) and math.isnan(got)) or got == pytest.approx(expect)


def test_top_k_precision_bounds() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, 200).astype(float)
    assert top_k_precision(lengths, lengths) == 1.0
    assert top_k_precision(-lengths, lengths) < 0.2
    assert 0.15 < top_k_precision(rng.normal(size=200), lengths) < 0.35  # chance: 8/32
    with pytest.raises(ValueError, match="list_size"):
        top_k_precision(lengths[:10], lengths[:10])


class FakeEncoder:
    """A deterministic 'sentence encoder': a few text features, so no weights are needed."""

    def encode(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        return torch.tensor([[len(t) / 50.0, t.count(" ") / 10.0, float("list" in t),
                              float("one word" in t)] for t in texts])

    def identity(self) -> dict[str, object]:
        return {"name": "fake", "dim": 4, "max_length": 0, "pooling": "none",
                "normalize": False, "weights_sha256": "0"}


def test_the_predictor_learns_an_order_and_round_trips(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    prompts, lengths = [], []
    for i in range(256):
        kind = rng.integers(3)
        text = ["answer in one word", "list ten things", "explain"][kind] + " x" * int(
            rng.integers(0, 20))
        prompts.append(text)
        lengths.append([3, 120, 60][kind] + rng.normal(0, 5))
    pred = PromptRankPredictor(hidden_dim=16, encoder=FakeEncoder())
    report = pred.fit(prompts, np.maximum(lengths, 1), epochs=100, lr=3e-3, progress=False)
    assert report["loss_per_epoch"][-1] < report["loss_per_epoch"][0]
    scores = pred.score(prompts)
    assert kendall_tau(scores, lengths) > 0.5
    back = PromptRankPredictor.load(pred.save(tmp_path / "ltr"), encoder=FakeEncoder())
    np.testing.assert_array_equal(back.score(prompts), scores)
    (tmp_path / "ltr" / "ltr.json").write_text('{"format": "trail-prompt-ltr", "version": 1}')
    with pytest.raises(ValueError, match="hidden_dim"):
        PromptRankPredictor.load(tmp_path / "ltr", encoder=FakeEncoder())
    with pytest.raises(ValueError, match="list_size"):
        pred.fit(prompts[:10], np.ones(10), progress=False)
