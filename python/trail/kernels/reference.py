"""Plain-torch specification of the fused probe step; every fast path is tested against it.

Per row b (with s = slots[b]):
    z = relu(hidden[b] @ w1ᵀ + b1)                 # w1: [H, D] (nn.Linear layout)
    p = softmax(z @ w2ᵀ + b2)                      # w2: [K, H]
    q = p                            if first[b]
    q ∝ (state[s] @ transition) ⊙ p  otherwise     # renormalised; if it underflows to all
                                                   # zeros, q = p
    state[s] = q
    pred[b] = min(Σ q · centers, cap[b])
A row whose hidden state or logits are not finite keeps the propagated prior
(state[s] @ transition, renormalised; uniform for a first row, or if the prior is unusable)
and still gets a finite prediction: one bad row never poisons the state.

The Gittins rank of a row's distribution (`gittins_rank_reference`) is the op's optional
second output (`torch.ops.trail.probe_step_rank`).
"""

from __future__ import annotations

import torch


def probe_step_reference(hidden: torch.Tensor, slots: torch.Tensor, first: torch.Tensor,
                         w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                         b2: torch.Tensor, transition: torch.Tensor, centers: torch.Tensor,
                         cap: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Run the probe step in plain torch, update `state` rows in place, return predictions."""
    wide = torch.float64 in (hidden.dtype, w1.dtype, state.dtype)
    acc = torch.float64 if wide else torch.float32  # fp32 accumulation unless asked for more
    x = hidden.to(acc)
    z = torch.relu(x @ w1.to(acc).T + b1.to(acc))
    logits = z @ w2.to(acc).T + b2.to(acc)
    good = (torch.isfinite(x).all(dim=1) & torch.isfinite(logits).all(dim=1))[:, None]
    p = torch.softmax(torch.where(good, logits, torch.zeros_like(logits)), dim=1)

    idx = slots.long()
    k = logits.shape[1]
    prior = state[idx].to(acc) @ transition.to(acc)
    uniform = torch.full_like(p, 1.0 / k)

    post = prior * p
    post_sum = post.sum(dim=1, keepdim=True)
    post = torch.where(post_sum > 0, post / post_sum, p)  # underflow: trust the probe alone

    prior_sum = prior.sum(dim=1, keepdim=True)
    usable = (prior_sum > 0) & torch.isfinite(prior_sum)
    kept_prior = torch.where(usable, prior / torch.where(usable, prior_sum, 1.0), uniform)

    is_first = first.to(torch.bool)[:, None]
    q = torch.where(good, torch.where(is_first, p, post),
                    torch.where(is_first, uniform, kept_prior))
    state[idx] = q.to(state.dtype)
    return torch.minimum((q * centers.to(acc)).sum(dim=1), cap.to(acc))


def gittins_rank_reference(q: torch.Tensor, edges: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """Gittins rank (tokens) of each row's remaining-length distribution, capped at `cap`.

    q [B, K] is a distribution over bins [e_k, e_{k+1}) (edges [K+1]), mass uniform within a
    bin; the remaining length R is min(that, cap[b]). The rank is
        G = min over a > 0 of E[min(R, a)] / P(R <= a),
    the expected service per unit of completion probability of the cheapest quantum a: lower
    runs first (Gittins' index for mean response time, as a size). Within a bin the ratio
    has no interior minimum (its derivative changes sign at most once, from + to -), so the
    minimum is over the upper edges e_{k+1} below cap with P > 0, and a = cap itself:
        at a = e_{j+1}:  (Σ_{k<=j} q_k·mid_k + e_{j+1}·Σ_{k>j} q_k) / Σ_{k<=j} q_k
        at a = cap:      Σ_k q_k·E[min(U_k, cap)] / Σ_k q_k,  U_k uniform on bin k.
    q need not be normalised (the ratios do not depend on its scale). G <= min(mean, cap)
    and equals the mean when all mass lies in one bin; a NaN cap gives NaN.
    """
    acc = torch.float64 if torch.float64 in (q.dtype, edges.dtype, cap.dtype) else torch.float32
    q = q.to(acc)
    e = edges.to(acc)
    c = cap.to(acc)[:, None]
    lo, hi = e[:-1][None, :], e[1:][None, :]
    mid = (lo + hi) / 2
    prefix = torch.cumsum(q, dim=1)
    below = torch.cumsum(q * mid, dim=1)
    suffix = torch.flip(torch.cumsum(torch.flip(q, [1]), dim=1), [1])  # Σ_{k>=j} q_k
    tail = torch.cat([suffix[:, 1:], torch.zeros_like(suffix[:, :1])], dim=1)  # Σ_{k>j}
    at_edge = (below + hi * tail) / torch.where(prefix > 0, prefix, 1.0)
    valid = (prefix > 0) & (hi < c)
    best_edge = torch.where(valid, at_edge, torch.inf).amin(dim=1)
    w = hi - lo
    x = torch.minimum(c, hi)  # = c where it is used; keeps inf out of the other lanes
    inside = ((x - lo) * (x + lo) / 2 + x * (hi - x)) / w  # positive terms: no cancellation
    part = torch.where(c >= hi, mid, torch.where(c <= lo, c, inside))
    total = q.sum(dim=1)
    at_cap = (q * part).sum(dim=1) / torch.where(total > 0, total, 1.0)
    g = torch.minimum(best_edge, at_cap)
    return torch.where(torch.isnan(c[:, 0]), c[:, 0], g)


def probe_step_rank_reference(hidden: torch.Tensor, slots: torch.Tensor, first: torch.Tensor,
                              w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                              b2: torch.Tensor, transition: torch.Tensor, centers: torch.Tensor,
                              edges: torch.Tensor, cap: torch.Tensor, state: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe step followed by the Gittins rank of each updated row: (mean, gittins)."""
    pred = probe_step_reference(hidden, slots, first, w1, b1, w2, b2, transition, centers, cap,
                                state)
    return pred, gittins_rank_reference(state[slots.long()], edges, cap)
