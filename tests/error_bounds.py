"""Tolerances for the fp32 kernels, derived from a rounding-error bound, not from one machine's run.

Model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §2-3; Higham & Mary,
"A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019):
every fp32 operation returns the exact result times (1 + δ) with |δ| ≤ u = 2⁻²⁴. A sum of n
products, added in *any* order (recursive, blocked, SIMD lanes, BLAS: whatever a CPU or GPU
picks), is then within γ(n)·Σ|terms| of the exact sum, where γ(n) is the smaller of

- the worst case n·u / (1 − n·u), which always holds, and
- the probabilistic λ·√n·u (rounding errors independent with mean zero), which fails with
  probability at most 2n·exp(−λ²/2) per sum: below 1e-10 with λ = 8 at the sizes tested.

Errors of *independent* sums (the H pre-activations of the probe's first layer) are combined in
quadrature when a later layer mixes them: λ·√(Σ_h w_h² σ_h²) with σ_h = √n·u·Σ|terms_h|.
Through exp and normalisation an absolute logit error e becomes a relative probability error of
at most exp(2e) − 1, and products and sums of non-negative numbers add relative errors.
A bound for an implementation against the exact (float64) result, doubled, bounds the distance
between two fp32 implementations.
"""

from __future__ import annotations

import math

import torch

U = 2.0 ** -24          # fp32 unit roundoff
LAMBDA = 8.0            # confidence of the probabilistic bound (see above)
EXP_ULPS = 4.0          # exp in the kernels: libm (≤1 ulp), Cephes-style polynomial (< 2e-7 ≈ 3.4 u)
TINY = 2.0 ** -126      # smallest normal fp32: an underflowed term is off by at most this much


def gamma(n: int) -> float:
    """Relative error bound of an n-term fp32 sum of products, in any order (see module doc)."""
    worst = n * U / (1.0 - n * U)
    probabilistic = math.expm1(LAMBDA * math.sqrt(n) * U + n * U * U / (1.0 - U))
    return min(worst, probabilistic)


def probe_step_tolerance(args: list[torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor],
                         input_unit: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element bounds (pred [B], state [S, K]) on |fp32 probe step − exact probe step|.

    `ref` is any fp32 result of the same step: it decides which branch each row takes and
    stands in for the exact magnitudes (they differ from it by a factor within the bound).
    `input_unit` is the unit roundoff of a format the hidden states are rounded to before the
    first layer (a kernel computing in the weights' fp16/bf16 does that), 0 when none is.
    """
    hidden, slots, first, w1, b1, w2, b2, _, centers, _, state = args
    x = hidden.double()
    w1, b1, w2, b2 = (t.double() for t in (w1, b1, w2, b2))
    d, h, k = w1.shape[1], w1.shape[0], w2.shape[0]
    # Which branch each row takes is decided in fp32, as every implementation decides it.
    logits32 = torch.relu(hidden.float() @ w1.float().T + b1.float()) @ w2.float().T + b2.float()
    good = torch.isfinite(hidden.float()).all(dim=1) & torch.isfinite(logits32).all(dim=1)

    xs = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    terms1 = xs.abs() @ w1.abs().T + b1.abs()                        # Σ|terms| per a_h  [B, H]
    err_a = (gamma(d + 1) + input_unit) * terms1                      # bound per a_h
    sigma_a = (math.sqrt(d + 1) * U + input_unit) * terms1            # its sub-Gaussian scale
    z = torch.relu(xs @ w1.T + b1).abs() + err_a                     # relu is 1-Lipschitz
    mixed = torch.minimum(err_a @ w2.abs().T, LAMBDA * (sigma_a ** 2 @ (w2 ** 2).T).sqrt())
    err_logit = gamma(h + 1) * (z @ w2.abs().T + b2.abs()) + mixed    # [B, K]
    rel_p = torch.expm1(2 * err_logit.max(dim=1).values) + (EXP_ULPS + k + 3) * U

    gk = gamma(k)
    rel_posterior = 2 * (gk + rel_p + U) + gk + U      # prior·p, then renormalised
    rel_prior = 3 * gk + 2 * U                         # a bad row keeps the renormalised prior
    is_first = first.bool()
    rel = torch.where(good, torch.where(is_first, rel_p, rel_posterior),
                      torch.where(is_first, torch.full_like(rel_p, U), rel_prior))

    pred, new_state = (r.double() for r in ref)
    # Σ q·centre over non-negative terms adds γ(K); the cap is exact (min is 1-Lipschitz).
    pred_tol = (rel + gk + U) * pred.abs() * (1 + rel) + TINY * float(centers.abs().sum())
    state_tol = torch.zeros_like(state, dtype=torch.float64)
    state_tol[slots.long()] = (rel[:, None] * new_state[slots.long()].abs() * (1 + rel[:, None])
                               + TINY * k)
    return pred_tol, state_tol


def attention_tolerance(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                        scale: float, exact: torch.Tensor) -> torch.Tensor:
    """Bound [N, Hq, D] on |fp32 decode attention − exact| (two-pass softmax, then Σ a·v).

    keys[i] and values[i] are request i's context per query head, [Hq, n_i, D].
    """
    tol = torch.empty_like(exact, dtype=torch.float64)
    for i, (kc, vc) in enumerate(zip(keys, values)):
        qi, kc, vc = q[i].double(), kc.double(), vc.double()
        n, d = kc.shape[1], kc.shape[2]
        scores = scale * torch.einsum("hd,hnd->hn", qi, kc)                  # [Hq, n]
        err_s = gamma(d + 1) * scale * torch.einsum("hd,hnd->hn", qi.abs(), kc.abs()) \
            + U * scores.abs()
        shifted = (scores - scores.max(dim=1, keepdim=True).values).abs()
        # exp's argument s − max carries both scores' errors and the subtraction's rounding.
        err_e = 2 * err_s.max(dim=1, keepdim=True).values + U * shifted      # absolute, in the exponent
        rel_e = torch.expm1(err_e) + EXP_ULPS * U                          # relative, per weight
        rel_sum = rel_e.max(dim=1, keepdim=True).values + gamma(n)
        rel_a = rel_e + rel_sum + 2 * U                                     # a = e / Σe
        weights = torch.softmax(scores, dim=1)
        tol[i] = torch.einsum("hn,hnd->hd", weights * (rel_a + gamma(n + 1)) * (1 + rel_a),
                              vc.abs()) + TINY * n * vc.abs().amax(dim=1)
    return tol
