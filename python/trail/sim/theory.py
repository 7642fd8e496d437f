"""M/G/1 mean response time of TRAIL's limited-preemption SRPT, in closed form and simulated.

The policy (TRAIL, Shahout et al., "Don't Stop Me Now: Embedding Based Scheduling for LLMs",
ICLR 2025, arXiv:2410.01035) is SRPT on the *predicted* remaining size with limited preemption
c in [0, 1]: a job with static prediction y and age a (service received so far) has SOAP rank

    r(y, a) = y        if a = 0                  (a waiting job that never ran)
    r(y, a) = y - a    if 0 < a < c*y            (preemptible: predicted remaining size)
    r(y, a) = -inf     if a >= c*y and a > 0     (non-preemptible: runs to completion)

and the server always runs the lowest rank, ties first-come-first-served.  A newcomer preempts
the running job only if that job is still preemptible and the newcomer's y' is *strictly* below
its predicted remaining size.  Age-0 jobs keep rank y even when c = 0, so c = 0 is
non-preemptive shortest-(predicted)-job-first, not FCFS.

Specialising the SOAP mean-response-time theorem (Scully, Harchol-Balter, Scheller-Wolf,
"SOAP: One Clean Analysis of All Age-Based Scheduling Policies", POMACS 2(1):16, 2018,
arXiv:1712.00790) to this rank function gives, for a tagged job of true size x and prediction
y, other jobs (X, Y) and arrival rate lambda = rho / E[X]:

    (★)  E[T(x, y)] =  lambda * ( E[X^2 1{Y <= y}] + E[((X - min(Y - y, c*Y))^+)^2 1{Y > y}] )
                       -------------------------------------------------------------------
                                    2 (1 - rho_<=(y)) (1 - rho_<(y))

                     + integral_0^{min(c*y, x)} da / (1 - rho_<(y - a))  +  (x - c*y)^+

         rho_<=(u) = lambda E[X 1{Y <= u}],  rho_<(u) = lambda E[X 1{Y < u}],
         E[T] = E_(X,Y)[ E[T(X, Y)] ].

The first term is the waiting time (old jobs with rank <= y go first; an old job that passes
its threshold before its predicted remaining size reaches y brings its remaining (X - cY)^+,
not y), the second the residence time (only new jobs with Y' < y - a overtake the tagged job
while it is preemptible; its last (x - c*y)^+ of service is uninterrupted).  c = 1 reduces to
SRPT (Schrage & Miller, Oper. Res. 14:670-684, 1966) or, with predictions, to SPRPT
(Mitzenmacher, "Scheduling with Predictions and the Price of Misprediction", ITCS 2020,
arXiv:1902.00732); c = 0 reduces to non-preemptive SJF, or SPJF with predictions.  The
derivation, its check against an independent simulation (60 points, largest error 0.40%) and
the pitfalls are in the project's theory note (docs/theory.md).  The mixed
denominator (1 - rho_<=)(1 - rho_<) matters for sizes with atoms (token counts, binned
predictions); for continuous laws it is (1 - rho(y))^2.  Caveats carried over from the note:
the SOAP statement was taken from a secondary source, not the paper's PDF, and TRAIL's own
closed form (its Appendix C) could not be compared line by line; (★) was derived from SOAP and
validated by simulation instead (bench/theory_check.py repeats that check).

Scope: one server, no batching, no KV-cache memory, no preemption cost, one static prediction
per job (TRAIL's refined predictions can raise a rank, which SOAP with a static descriptor does
not cover).  Use it to sanity-check simulators and for trends in c, not for engine latencies.

Job-size laws here are empirical: `sizes` are equally likely values (repeat a value to give it
more mass), `predicted` the matching predictions, so every formula is exact for that law and
`simulate_mg1` samples exactly the same law.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "conditional_response_times",
    "fcfs_mean_response_time",
    "mean_response_time",
    "simulate_mg1",
    "sjf_mean_response_time",
    "srpt_mean_response_time",
]


# ---------------------------------------------------------------------------------------------
# Argument checking


def _check_rho(rho: Any) -> float:
    """rho as a float in the open interval (0, 1), else ValueError naming it."""
    try:
        r = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a number in (0, 1), got {rho!r}") from None
    if not 0.0 < r < 1.0:  # also rejects nan
        raise ValueError(f"rho must be in (0, 1) (unstable at rho >= 1), got {r!r}")
    return r


def _check_c(c: Any) -> float:
    """c as a float in the closed interval [0, 1], else ValueError naming it."""
    try:
        v = float(c)
    except (TypeError, ValueError):
        raise ValueError(f"c must be a number in [0, 1], got {c!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"c must be in [0, 1], got {v!r}")
    return v


def _check_positive(name: str, values: ArrayLike) -> NDArray[np.float64]:
    """A non-empty 1-D float64 array of positive finite values, else ValueError naming a bad one."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of positive finite numbers") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    bad = np.flatnonzero(~(np.isfinite(a) & (a > 0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be positive and finite, got {name}[{i}] = {float(a[i])!r}")
    return a


def _check_law(sizes: ArrayLike, predicted: ArrayLike | None
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], bool]:
    """(x, y, exact): validated sizes, predictions (y = x when None) and whether y equals x."""
    x = _check_positive("sizes", sizes)
    if predicted is None:
        return x, x, True
    y = _check_positive("predicted", predicted)
    if y.shape != x.shape:
        raise ValueError(f"predicted has length {y.size} but sizes has length {x.size}")
    return x, y, bool(np.array_equal(x, y))


# ---------------------------------------------------------------------------------------------
# (★)


def _prefix_below(d: NDArray[np.float64], w: NDArray[np.float64], pos: NDArray[np.intp],
                  t: NDArray[np.float64]) -> NDArray[np.float64]:
    """out[q] = sum over j < pos[q] with d[j] < t[q] of w[j]: offline 2-D dominance sums.

    Square-root decomposition keeps this vectorised at O(n^1.5) work: the whole blocks of a
    prefix are answered by a binary search in the block's sorted d with cumulative weights, the
    ragged last block by a masked (queries x block) comparison.  w has shape (n, k), out has
    shape (len(pos), k).  A plain n x n comparison would need 4e8 operations at n = 20 000.
    """
    n, k = w.shape
    nq = pos.size
    bsz = max(32, math.isqrt(n))
    out = np.zeros((nq, k))
    full = pos // bsz                          # whole blocks inside each query's prefix
    order = np.argsort(-full, kind="stable")   # queries that need block b: a prefix of order
    neg_sorted = -full[order]
    for b in range(n // bsz):
        m = int(np.searchsorted(neg_sorted, -b, side="left"))  # how many have full > b
        if m == 0:
            break
        seg = slice(b * bsz, (b + 1) * bsz)
        o = np.argsort(d[seg], kind="stable")
        cw = np.vstack([np.zeros((1, k)), np.cumsum(w[seg][o], axis=0)])
        q = order[:m]
        out[q] += cw[np.searchsorted(d[seg][o], t[q], side="left")]
    # the ragged rest, j in [full*bsz, pos): fewer than bsz terms per query; chunked for memory
    cols = np.arange(bsz)
    step = max(1, (1 << 19) // bsz)
    for s in range(0, nq, step):
        sl = slice(s, s + step)
        start = full[sl] * bsz
        idx = np.minimum(start[:, None] + cols, n - 1)
        hit = (cols < (pos[sl] - start)[:, None]) & (d[idx] < t[sl, None])
        for j in range(k):
            out[sl, j] += np.where(hit, w[idx, j], 0.0).sum(axis=1)
    return out


def conditional_response_times(sizes: ArrayLike, rho: float, c: float,
                               predicted: ArrayLike | None = None) -> NDArray[np.float64]:
    """E[T(x_i, y_i)] of (★) for each job i of the empirical law (size-conditional means)."""
    rho, c = _check_rho(rho), _check_c(c)
    x, y, exact = _check_law(sizes, predicted)
    n = x.size
    o = np.argsort(y, kind="stable")           # the other jobs, ordered by prediction
    xs, ys = x[o], y[o]
    cx = np.concatenate([[0.0], np.cumsum(xs)])
    total = cx[-1]
    lam_n = rho / total                        # lambda / n, since lambda = rho / (total / n)
    lo = np.searchsorted(ys, y, side="left")   # number of others with Y < y
    hi = np.searchsorted(ys, y, side="right")  # number of others with Y <= y
    # Old jobs with rank <= y go first, new ones overtake only with rank < y (pitfall 3), hence
    # the mixed product; scaling by total keeps rho_<= at the top exactly rho.
    rho_le = rho * cx[hi] / total
    rho_lt = rho * cx[lo] / total

    # Old work, split by where an old job with Y > y becomes relevant: at age Y - y (its
    # predicted remaining size reaches y) when Y <= y/(1-c), else at its threshold c*Y.
    a_sum = np.concatenate([[0.0], np.cumsum(xs * xs)])[hi]             # Y <= y: all of X
    pu = np.full(n, n) if c == 1.0 else np.searchsorted(ys, y / (1.0 - c), side="right")
    g = np.maximum(xs - c * ys, 0.0) ** 2                               # Y > y/(1-c)
    c_sum = np.concatenate([np.cumsum(g[::-1])[::-1], [0.0]])[pu]
    if exact:
        b_sum = y * y * (pu - hi)              # X = Y: exactly y of work remains at age Y - y
    else:
        # Y in (y, y/(1-c)]: ((X - Y + y)^+)^2 = ((y - D)^+)^2 with D = Y - X.
        ds = ys - xs
        w = np.stack([np.ones(n), ds, ds * ds], axis=1)
        s = _prefix_below(ds, w, np.concatenate([pu, hi]), np.concatenate([y, y]))
        cnt, s1, s2 = (s[:n] - s[n:]).T
        b_sum = np.maximum(y * y * cnt - 2.0 * y * s1 + s2, 0.0)
    waiting = lam_n * (a_sum + b_sum + c_sum) / (2.0 * (1.0 - rho_le) * (1.0 - rho_lt))

    # Residence: integral_{y-m}^{y} du / (1 - rho_<(u)) with m = min(c*y, x) is H(y) - H(y - m)
    # for H(v) = integral_0^v du / (1 - rho_<(u)), piecewise linear with knots at the distinct
    # predictions; on (v_k, v_k+1] rho_<(u) is the load of jobs with Y <= v_k.
    v = np.unique(ys)
    knots = np.concatenate([[0.0], v])
    below = np.concatenate([[0.0], rho * cx[np.searchsorted(ys, v[:-1], side="right")] / total])
    h = np.concatenate([[0.0], np.cumsum(np.diff(knots) / (1.0 - below))])
    m = np.minimum(c * y, x)
    residence = np.interp(y, knots, h) - np.interp(y - m, knots, h) + np.maximum(x - c * y, 0.0)
    return waiting + residence


def mean_response_time(sizes: ArrayLike, rho: float, c: float,
                       predicted: ArrayLike | None = None) -> float:
    """M/G/1 mean response time (★) of TRAIL's limited-preemption SRPT on predicted sizes.

    sizes: equally likely job sizes; rho: load in (0, 1), arrival rate rho / mean(sizes);
    c: preemption limit in [0, 1] (a job is preemptible while its age < c * prediction);
    predicted: the matching predictions (None: exact, y = x).  c = 1 gives SRPT / SPRPT,
    c = 0 non-preemptive SJF / SPJF.
    """
    return float(np.mean(conditional_response_times(sizes, rho, c, predicted)))


# ---------------------------------------------------------------------------------------------
# Textbook formulas, coded separately from (★) so that they check it


def srpt_mean_response_time(sizes: ArrayLike, rho: float) -> float:
    """SRPT, Schrage-Miller: lam int_0^x t Fbar(t) dt / (1 - rho(x))^2 + int_0^x dt / (1 - rho(t)).

    The classic form has (1 - rho(x))^2 for continuous laws; with atoms, old jobs of equal
    remaining size go first and new ones do not, so the denominator is the mixed product.
    """
    rho = _check_rho(rho)
    x = _check_positive("sizes", sizes)
    v, cnt = np.unique(x, return_counts=True)
    n = x.size
    p = cnt / n
    lam = rho / float(np.dot(v, p))
    load_le = lam * np.cumsum(v * p)                     # rho(v_k), atom included
    load_lt = np.concatenate([[0.0], load_le[:-1]])      # rho(v_k-), atom excluded
    prev = np.concatenate([[0.0], v[:-1]])
    surv_prev = np.concatenate([[n], n - np.cumsum(cnt)[:-1]]) / n  # Fbar on [v_k-1, v_k)
    g = np.cumsum(surv_prev * (v * v - prev * prev) / 2.0)           # int_0^v_k t Fbar(t) dt
    resid = np.cumsum((v - prev) / (1.0 - load_lt))                  # rho(t) = load_lt there
    t = lam * g / ((1.0 - load_le) * (1.0 - load_lt)) + resid
    return float(np.dot(p, t))


def sjf_mean_response_time(sizes: ArrayLike, rho: float,
                           predicted: ArrayLike | None = None) -> float:
    """Non-preemptive SJF (SPJF with predictions): x + lam E[X^2] / (2 (1-rho_<(y)) (1-rho_<=(y))).

    Like Pollaczek-Khinchine, the residual work at arrival is lambda E[X^2] / 2; it and the
    work of earlier-queued jobs of predicted size <= y (and of later ones of size < y) are
    stretched by the busy periods those shorter jobs start.
    """
    rho = _check_rho(rho)
    x, y, _ = _check_law(sizes, predicted)
    o = np.argsort(y, kind="stable")
    cx = np.concatenate([[0.0], np.cumsum(x[o])])
    total = cx[-1]
    rho_lt = rho * cx[np.searchsorted(y[o], y, side="left")] / total
    rho_le = rho * cx[np.searchsorted(y[o], y, side="right")] / total
    lam = rho * x.size / total
    wait = lam * float(np.mean(x * x)) / (2.0 * (1.0 - rho_lt) * (1.0 - rho_le))
    return float(np.mean(x + wait))


def fcfs_mean_response_time(sizes: ArrayLike, rho: float) -> float:
    """FCFS (Pollaczek-Khinchine): E[X] + lambda E[X^2] / (2 (1 - rho))."""
    rho = _check_rho(rho)
    x = _check_positive("sizes", sizes)
    mean = float(np.mean(x))
    return mean + (rho / mean) * float(np.mean(x * x)) / (2.0 * (1.0 - rho))


# ---------------------------------------------------------------------------------------------
# Independent event-driven simulation


_CHUNK = 1 << 16  # arrivals generated per numpy call in simulate_mg1


def _t975(df: int) -> float:
    """97.5% Student-t quantile, Cornish-Fisher (A&S 26.7.5): rel. error < 1.1e-4 for df >= 5."""
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def simulate_mg1(sizes: ArrayLike, rho: float, c: float, predicted: ArrayLike | None = None,
                 n_jobs: int = 200_000, seed: int | None = 0, n_batches: int = 20,
                 warmup: float = 0.02, tail: float = 0.05) -> tuple[float, float]:
    """Simulated mean response time and its 95% batch-means half-width, same policy as (★).

    Poisson arrivals at rate rho / mean(sizes); each job is a uniformly drawn (size,
    prediction) pair; one preemptive-resume server.  Waiting jobs sit in a heap keyed by
    (rank, arrival index), so ties go first-come-first-served as SOAP assumes.  n_jobs jobs are
    measured after warmup * n_jobs discarded ones, and tail * n_jobs more arrive after them so
    the last measured jobs still meet competition; then the system drains.  The response times
    of the measured jobs, in arrival order, are split into n_batches equal batches and the
    half-width is t_{0.975, n_batches-1} * sd(batch means) / sqrt(n_batches).
    """
    rho, c = _check_rho(rho), _check_c(c)
    x, y, _ = _check_law(sizes, predicted)
    if int(n_batches) != n_batches or n_batches < 5:
        raise ValueError(f"n_batches must be an integer >= 5, got {n_batches!r}")
    if int(n_jobs) != n_jobs or n_jobs < n_batches:
        raise ValueError(f"n_jobs must be an integer >= n_batches ({n_batches}), got {n_jobs!r}")
    if not 0.0 <= warmup < 1.0 or not 0.0 <= tail:
        raise ValueError(f"warmup must be in [0, 1) and tail >= 0, got {warmup!r}, {tail!r}")
    n_batches, n_jobs = int(n_batches), int(n_jobs)
    rng = np.random.default_rng(seed)
    lo = int(warmup * n_jobs)                  # measured jobs are arrivals lo .. hi - 1
    total = lo + n_jobs + math.ceil(tail * n_jobs)
    mean_gap = float(np.mean(x)) / rho          # 1 / lambda
    times, picks, clock = [], [], 0.0
    for s in range(0, total, _CHUNK):          # same draws, chunk by chunk, as ever
        e = min(total, s + _CHUNK)
        times.append(clock + np.cumsum(rng.exponential(mean_gap, e - s)))
        clock = float(times[-1][-1])
        picks.append(rng.integers(0, x.size, e - s))
    pick = np.concatenate(picks)
    resp = mg1_response_times(np.concatenate(times), x[pick], y[pick], c)[lo:lo + n_jobs]
    return batch_means(resp, n_batches)


def mg1_response_times(arrival: ArrayLike, sizes: ArrayLike, predicted: ArrayLike,
                       c: float) -> NDArray[np.float64]:
    """Response time of each job of one sample path (arrivals sorted) under the policy of (★).

    One preemptive-resume server; waiting jobs sit in a heap keyed by (rank, arrival index),
    so ties go first-come-first-served as SOAP assumes.
    """
    c = _check_c(c)
    t = np.asarray(arrival, float)
    if t.ndim != 1 or np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)):
        raise ValueError("arrival must be a finite, sorted one-dimensional array")
    x = np.asarray(sizes, float)
    y = np.asarray(predicted, float)
    if x.shape != t.shape or y.shape != t.shape:
        raise ValueError(f"arrival, sizes and predicted must have one shape, got {t.shape}, "
                         f"{x.shape}, {y.shape}")
    resp = np.full(t.size, np.nan)
    heap: list[tuple[float, int, float, float, float, float]] = []
    push, pop = heapq.heappush, heapq.heappop
    # The job in service: arrival index (-1: idle), remaining size and age when this stint of
    # service began, when it began, its prediction and its arrival time.  Heap entries are
    # (rank, arrival index, remaining, age, prediction, arrival time).
    run, rem, age, start, yr, tr = -1, 0.0, 0.0, 0.0, 0.0, 0.0
    for i, now, xi, yi in zip(range(t.size), t.tolist(), x.tolist(), y.tolist()):
        while run >= 0 and start + rem <= now:   # complete jobs up to this arrival
            start += rem
            resp[run] = start - tr
            if heap:
                _, run, rem, age, yr, tr = pop(heap)
            else:
                run = -1
        if run < 0:
            run, rem, age, start, yr, tr = i, xi, 0.0, now, yi, now
            continue
        served = now - start
        a = age + served
        # Preempt only a job inside its preemptible phase (it has started, so at c = 0 it
        # is not: age 0 counts only for jobs that never ran) and only for a strictly
        # smaller rank; the preempted job waits with rank y - a.
        if a < c * yr and yi < yr - a:
            push(heap, (yr - a, run, rem - served, a, yr, tr))
            run, rem, age, start, yr, tr = i, xi, 0.0, now, yi, now
        else:
            push(heap, (yi, i, xi, 0.0, yi, now))
    while run >= 0:           # drain: no more arrivals, so run everything to completion
        start += rem
        resp[run] = start - tr
        if heap:
            _, run, rem, age, yr, tr = pop(heap)
        else:
            run = -1
    return resp


def batch_means(values: ArrayLike, n_batches: int = 20) -> tuple[float, float]:
    """Mean of `values` (in order) and its 95% half-width from `n_batches` batch means."""
    v = np.asarray(values, float)
    per = v.size // n_batches
    if per < 1:
        raise ValueError(f"{v.size} values cannot make {n_batches} batches")
    means = v[:per * n_batches].reshape(n_batches, per).mean(axis=1)
    half = _t975(n_batches - 1) * float(np.std(means, ddof=1)) / math.sqrt(n_batches)
    return float(means.mean()), half
