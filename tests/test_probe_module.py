"""trail.Bins and trail.Probe: bins, transitions, stepping, checkpoints."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
import trail
from hypothesis import given, settings
from hypothesis import strategies as st
from trail import Bins, Probe
from trail.kernels.reference import probe_step_reference

# ---------------------------------------------------------------- bins

def test_uniform_bins_are_the_papers() -> None:
    b = Bins.uniform()
    assert b.k == 10 and b.edges[0] == 0 and b.edges[-1] == 512
    assert torch.allclose(b.widths, torch.full((10,), 51.2, dtype=torch.float64))
    assert torch.allclose(b.centers, torch.arange(10) * 51.2 + 25.6)


def test_geometric_bins() -> None:
    b = Bins.geometric(5)
    assert b.edges == (0.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    assert b.index(torch.tensor([0, 1.9, 2, 5, 31, 32, 1000])).tolist() == [0, 0, 1, 2, 4, 4, 4]


@pytest.mark.parametrize("edges", [(0.0,), (1.0, 2.0), (0.0, 2.0, 2.0), (0.0, 0.5, 3.0),
                                   (0.0, math.inf)])
def test_bad_edges_raise(edges: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Bins(edges)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 12), geometric=st.booleans(), tokens=st.integers(0, 40))
def test_transition_is_stochastic_and_moves_down_at_one_over_width(k: int, geometric: bool,
                                                                   tokens: int) -> None:
    bins = Bins.geometric(k) if geometric else Bins.uniform(k, 512.0)
    t1 = bins.transition(1).double()
    w = bins.widths
    assert torch.allclose(t1.sum(dim=1), torch.ones(k, dtype=torch.float64), atol=1e-6)
    assert t1[0, 0] == 1.0  # bin 0 absorbs
    for i in range(1, k):
        assert math.isclose(t1[i, i - 1], min(1.0, 1.0 / w[i]), rel_tol=1e-6)
        assert math.isclose(t1[i, i], 1.0 - min(1.0, 1.0 / w[i]), rel_tol=1e-6, abs_tol=1e-7)
    tk = bins.transition(tokens).double()
    assert torch.allclose(tk, torch.linalg.matrix_power(t1, tokens), atol=1e-5)
    assert torch.allclose(tk.sum(dim=1), torch.ones(k, dtype=torch.float64), atol=1e-5)
    if tokens == 0:
        assert torch.equal(tk, torch.eye(k, dtype=torch.float64))


def test_transition_rejects_negative_tokens() -> None:
    with pytest.raises(ValueError):
        Bins.uniform().transition(-1)


# ---------------------------------------------------------------- stepping

def small_probe(num_slots: int = 8, seed: int = 0) -> Probe:
    torch.manual_seed(seed)
    p = Probe(48, Bins.uniform(6, 300.0), hidden_dim=20, layer=5, num_slots=num_slots,
              model_id="tiny-llama")
    with torch.no_grad():
        p.fc1.weight.mul_(3.0)
    return p


def test_step_matches_the_op_spec_and_caps() -> None:
    p = small_probe()
    x = torch.randn(3, 48)
    state = p.state.clone()
    want = probe_step_reference(x, torch.tensor([4, 0, 7], dtype=torch.int32),
                                torch.tensor([True, True, True]), p.fc1.weight.detach(),
                                p.fc1.bias.detach(), p.fc2.weight.detach(), p.fc2.bias.detach(),
                                p.bins.transition(1), p.centers,
                                torch.tensor([300.0, 2.0, 290.0]), state)
    got = p.step(x, [4, 0, 7], True, torch.tensor([0, 298, 10]), 300)
    torch.testing.assert_close(got, want)
    assert got[1] <= 2.0  # capped at max_new_tokens - generated
    torch.testing.assert_close(p.distribution([4, 0, 7]), state[[4, 0, 7]])
    assert not got.requires_grad


def test_step_rank_is_step_plus_the_gittins_rank_of_the_new_state() -> None:
    from trail.kernels.reference import gittins_rank_reference

    p, q = small_probe(seed=2), small_probe(seed=2)
    x = torch.randn(4, 48)
    mean, rank = p.step_rank(x, [0, 3, 5, 6], True, torch.tensor([0, 299, 10, 3]), 300)
    torch.testing.assert_close(mean, q.step(x, [0, 3, 5, 6], True,
                                            torch.tensor([0, 299, 10, 3]), 300))
    torch.testing.assert_close(p.state, q.state)
    want = gittins_rank_reference(p.distribution([0, 3, 5, 6]).double(),
                                  torch.tensor(p.bins.edges, dtype=torch.float64),
                                  torch.tensor([300.0, 1.0, 290.0, 297.0], dtype=torch.float64))
    torch.testing.assert_close(rank.double(), want, rtol=1e-5, atol=1e-5)
    assert (rank <= mean + 1e-3).all() and rank[1] <= 1.0
    # rows that skipped different numbers of tokens, and an empty batch
    y = torch.randn(4, 48)
    m2, r2 = p.step_rank(y, [0, 3, 5, 6], False, 8, 300, tokens_since_last=[8, 1, 8, 1])
    torch.testing.assert_close(m2, q.step(y, [0, 3, 5, 6], False, 8, 300,
                                          tokens_since_last=[8, 1, 8, 1]))
    assert r2.shape == (4,) and bool(torch.isfinite(r2).all())
    e1, e2 = p.step_rank(torch.zeros(0, 48), [], True, 0, 300)
    assert e1.shape == e2.shape == (0,)


def test_rows_with_different_tokens_since_last() -> None:
    """Per-row k: same result as stepping each group with its own Tᵏ."""
    p, q = small_probe(seed=1), small_probe(seed=1)
    x = torch.randn(4, 48)
    p.step(x, [0, 1, 2, 3], True, 0, 200)
    q.step(x, [0, 1, 2, 3], True, 0, 200)
    y = torch.randn(4, 48)
    got = p.step(y, [0, 1, 2, 3], False, 8, 200, tokens_since_last=[8, 1, 8, 1])
    a = q.step(y[[0, 2]], [0, 2], False, 8, 200, tokens_since_last=8)
    b = q.step(y[[1, 3]], [1, 3], False, 8, 200, tokens_since_last=1)
    torch.testing.assert_close(got, torch.stack([a[0], b[0], a[1], b[1]]))
    torch.testing.assert_close(p.state, q.state)


def test_bayesian_refinement_sharpens_with_consistent_evidence() -> None:
    p = small_probe()
    x = torch.randn(1, 48)
    p.step(x, [2], True, 0, 300)
    first = p.distribution([2])[0]
    for _ in range(5):
        p.step(x, [2], False, 0, 300, tokens_since_last=0)
    later = p.distribution([2])[0]
    assert later.max() > first.max()
    assert torch.isclose(later.sum(), torch.tensor(1.0))


def test_reset_and_resize() -> None:
    p = small_probe()
    p.step(torch.randn(2, 48), [1, 2], True, 0, 100)
    p.reset([1])
    assert torch.allclose(p.distribution([1]), torch.full((1, 6), 1 / 6))
    assert not torch.allclose(p.distribution([2]), torch.full((1, 6), 1 / 6))
    p.reset()
    assert torch.allclose(p.state, torch.full((8, 6), 1 / 6))
    p.resize_slots(3)
    assert p.num_slots == 3


@pytest.mark.parametrize("kwargs, exc", [
    (dict(slots=[0, 0]), ValueError),
    (dict(slots=[0, 8]), ValueError),
    (dict(slots=[-1, 1]), ValueError),
    (dict(slots=[0.5, 1]), TypeError),
    (dict(generated=[1]), ValueError),
    (dict(tokens_since_last=-1), ValueError),
    (dict(max_new_tokens=math.nan), ValueError),
    (dict(hidden=torch.randn(2, 47)), ValueError),
])
def test_step_rejects_bad_arguments(kwargs: dict, exc: type) -> None:
    p = small_probe()
    args = dict(hidden=torch.randn(2, 48), slots=[0, 1], first=True, generated=0,
                max_new_tokens=100)
    args.update(kwargs)
    before = p.state.clone()
    with pytest.raises(exc):
        p.step(**args)
    assert torch.equal(p.state, before)


def test_probe_is_a_drop_in_for_the_op() -> None:
    """A user's own nn.Linear layers pass straight into torch.ops.trail.probe_step."""
    fc1, fc2 = torch.nn.Linear(32, 16), torch.nn.Linear(16, 4)
    bins = Bins.geometric(4)
    state = torch.full((5, 4), 0.25)
    with torch.no_grad():
        pred = torch.ops.trail.probe_step(
            torch.randn(2, 32), torch.tensor([3, 1], dtype=torch.int32),
            torch.tensor([True, False]), fc1.weight, fc1.bias, fc2.weight, fc2.bias,
            bins.transition(1), bins.centers, torch.tensor([100.0, 100.0]), state)
    assert pred.shape == (2,) and torch.isfinite(pred).all()


# ---------------------------------------------------------------- checkpoints

def test_save_load_roundtrip(tmp_path: pathlib.Path) -> None:
    p = small_probe()
    p.save(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "probe.json").read_text())
    assert cfg["layer"] == 5 and cfg["hidden_size"] == 48 and cfg["num_bins"] == 6
    assert cfg["model_id"] == "tiny-llama" and cfg["bin_edges"][-1] == 300.0
    q = Probe.load(tmp_path / "ck", num_slots=4, hidden_size=48)
    x = torch.randn(2, 48)
    torch.testing.assert_close(q.step(x, [0, 1], True, 0, 300), p.step(x, [0, 1], True, 0, 300))
    assert q.layer == 5 and q.num_slots == 4 and q.bins == p.bins


def test_load_refuses_mismatches(tmp_path: pathlib.Path) -> None:
    from safetensors.torch import save_file

    p = small_probe()
    d = p.save(tmp_path / "ck")
    with pytest.raises(ValueError, match="hidden size"):
        Probe.load(d, hidden_size=4096)
    cfg = json.loads((d / "probe.json").read_text())
    cfg["hidden_dim"] = 21
    (d / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="fc1.weight"):
        Probe.load(d)
    cfg["hidden_dim"] = 20
    cfg["num_bins"] = 7
    (d / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_bins"):
        Probe.load(d)
    cfg["num_bins"] = 6
    cfg["version"] = 99
    (d / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="version"):
        Probe.load(d)
    cfg["version"] = 1
    (d / "probe.json").write_text(json.dumps(cfg))
    save_file({"fc1.weight": torch.zeros(20, 48)}, str(d / "probe.safetensors"))
    with pytest.raises(ValueError, match="holds"):
        Probe.load(d)
    with pytest.raises(FileNotFoundError):
        Probe.load(tmp_path / "missing")


def test_trail_exports() -> None:
    assert trail.Probe is Probe and trail.Bins is Bins
    assert hasattr(torch.ops.trail, "probe_step")


# ---------------------------------------------------------------- the slot pool

def test_slot_pool_reuses_given_back_slots_and_grows_keeping_distributions() -> None:
    p = Probe(hidden_size=4, bins=Bins.uniform(4, 8.0), hidden_dim=3, num_slots=2)
    a, b = p.acquire_slot(), p.acquire_slot()
    assert (a, b) == (0, 1) and p.num_slots == 2
    p.state[b] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    c = p.acquire_slot()  # every slot taken: the state doubles, b's distribution stays
    assert c == 2 and p.num_slots == 4 and p.state[b].tolist() == [1.0, 0.0, 0.0, 0.0]
    p.release_slot(a)
    assert p.acquire_slot() == a
    for bad in (a + 0.0, -1, 3, True):
        with pytest.raises(ValueError, match="not in use"):
            p.release_slot(bad)  # type: ignore[arg-type]
    p.release_slot(c)
    with pytest.raises(ValueError, match="slot 2 is not in use"):
        p.release_slot(c)  # twice
    p.resize_slots(3)
    assert p.acquire_slot() == 0  # a fresh pool
