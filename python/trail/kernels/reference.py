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
