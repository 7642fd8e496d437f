"""Request traces: arrival times with prompt and output lengths, for driving the simulator.

A trace is three parallel arrays, one row per request: `arrival_s` (seconds, float64, sorted),
`prompt_tokens` and `output_tokens` (int64, positive). On disk it is the generic CSV format

    arrival_s,prompt_tokens,output_tokens
    0.000000,4808,10
    0.051600,3180,8

Two real traces ship with the package: "azure-code" and "azure-conv", the Azure LLM inference
traces 2023 (CC BY 4.0; see `trail/sim/data/README.md`), converted by :func:`read_azure_csv`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

HEADER = ("arrival_s", "prompt_tokens", "output_tokens")

# Traces vendored in trail/sim/data, by the name load_trace() accepts.
BUILTIN_TRACES = {
    "azure-code": "azure2023_code.csv",
    "azure-conv": "azure2023_conv.csv",
}

# Synthetic traces load_trace() builds by name (see `synthetic_trace`).
SYNTHETIC_TRACES = ("alpaca-shaped", "heavy-tail")

# Maps (prompt_tokens, output_tokens) arrays to per-request service seconds.
ServiceTimeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TraceFormatError(ValueError):
    """A trace file that cannot be read; the message names the file, line and value."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line


@dataclass(frozen=True, eq=False)  # eq=False: elementwise array == has no single truth value
class Trace:
    """Requests as parallel arrays: arrival time (s, sorted), prompt and output token counts."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "trace"

    def __post_init__(self) -> None:
        """Coerce dtypes, check shapes and values, and sort rows by arrival (stably)."""
        arrival = np.asarray(self.arrival_s, dtype=np.float64).copy()
        prompt = _as_int64(self.prompt_tokens, "prompt_tokens")
        output = _as_int64(self.output_tokens, "output_tokens")
        if arrival.ndim != 1 or prompt.shape != arrival.shape or output.shape != arrival.shape:
            raise ValueError(
                f"trace {self.name!r}: arrival_s, prompt_tokens and output_tokens must be 1-D "
                f"of equal length, got shapes {arrival.shape}, {prompt.shape}, {output.shape}")
        if not np.all(np.isfinite(arrival)):
            i = int(np.flatnonzero(~np.isfinite(arrival))[0])
            raise ValueError(f"trace {self.name!r}: arrival_s[{i}] = {arrival[i]} is not finite")
        for col, arr in (("prompt_tokens", prompt), ("output_tokens", output)):
            if arr.size and arr.min() <= 0:
                i = int(np.flatnonzero(arr <= 0)[0])
                raise ValueError(f"trace {self.name!r}: {col}[{i}] = {arr[i]} is not positive")
        if arrival.size > 1 and np.any(np.diff(arrival) < 0):
            # Stable, so requests that arrive together keep their file order.
            order = np.argsort(arrival, kind="stable")
            arrival, prompt, output = arrival[order], prompt[order], output[order]
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)

    def __len__(self) -> int:
        """Number of requests."""
        return int(self.arrival_s.size)

    def __repr__(self) -> str:
        """Name, size and span (the arrays themselves are too long to print)."""
        return f"Trace({self.name!r}, {len(self)} requests, {self.duration_s:.1f} s)"

    @property
    def duration_s(self) -> float:
        """Seconds from the first arrival to the last (0 with fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        """Mean arrival rate in requests/s: 1 / mean inter-arrival = (n - 1) / duration."""
        # (n-1)/duration, not n/duration: n arrivals span n-1 gaps, and this is the quantity
        # that scaled_to_rate() sets exactly and that a Poisson trace estimates without bias.
        if self.duration_s <= 0.0:
            raise ValueError(f"trace {self.name!r}: rate undefined (duration is 0)")
        return (len(self) - 1) / self.duration_s

    def head(self, n: int) -> Trace:
        """The first n requests (by arrival)."""
        if n < 0:
            raise ValueError(f"head: n must be >= 0, got {n}")
        return dataclasses.replace(self, arrival_s=self.arrival_s[:n],
                                   prompt_tokens=self.prompt_tokens[:n],
                                   output_tokens=self.output_tokens[:n])

    def scaled_to_rate(self, rate: float) -> Trace:
        """The same requests with time compressed or stretched so that `self.rate` becomes `rate`."""
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"scaled_to_rate: rate must be positive and finite, got {rate}")
        factor = self.rate / rate
        # Scale about the first arrival: the trace still starts when it did, and a positive
        # factor keeps the order (and burstiness: the inter-arrival CV is unchanged).
        t0 = self.arrival_s[0]
        arrival = t0 + (self.arrival_s - t0) * factor
        return dataclasses.replace(self, arrival_s=arrival)

    def offered_load(self, service_time_fn: ServiceTimeFn) -> float:
        """Offered load rho = arrival rate x mean service time, with service times from the function."""
        return self.rate * self._mean_service_s(service_time_fn)

    def scaled_to_load(self, load: float, service_time_fn: ServiceTimeFn) -> Trace:
        """The same requests with time rescaled so that `offered_load(service_time_fn)` is `load`."""
        if not (load > 0 and math.isfinite(load)):
            raise ValueError(f"scaled_to_load: load must be positive and finite, got {load}")
        return self.scaled_to_rate(load / self._mean_service_s(service_time_fn))

    def _mean_service_s(self, service_time_fn: ServiceTimeFn) -> float:
        """Mean of service_time_fn over the rows, checked to be a positive finite number."""
        s = np.asarray(service_time_fn(self.prompt_tokens, self.output_tokens), dtype=np.float64)
        if s.shape != self.arrival_s.shape:
            raise ValueError(f"service_time_fn returned shape {s.shape}, "
                             f"expected {self.arrival_s.shape}")
        mean = float(s.mean()) if s.size else float("nan")
        if not (mean > 0 and math.isfinite(mean)):
            raise ValueError(f"service_time_fn gives mean service time {mean}; "
                             "need a positive finite value")
        return mean

    def save_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the generic CSV format (arrival_s with 6 decimals, LF line endings)."""
        with open(path, "w", encoding="ascii", newline="\n") as f:
            f.write(self.to_csv_text())

    def to_csv_text(self) -> str:
        """The generic CSV format as one string."""
        lines = [",".join(HEADER)]
        lines.extend(f"{a:.6f},{p},{o}" for a, p, o in
                     zip(self.arrival_s.tolist(), self.prompt_tokens.tolist(),
                         self.output_tokens.tolist()))
        return "\n".join(lines) + "\n"

    def stats(self) -> dict[str, float]:
        """Summary: count, duration, rate, token-length mean/median/p90/p99/max, inter-arrival CV."""
        n = len(self)
        out: dict[str, float] = {"count": n, "duration_s": self.duration_s,
                                 "rate": self.rate if self.duration_s > 0 else float("nan")}
        for col, arr in (("output", self.output_tokens), ("prompt", self.prompt_tokens)):
            if n == 0:
                out.update({f"{col}_{k}": float("nan")
                            for k in ("mean", "median", "p90", "p99", "max")})
                continue
            # numpy's default (linear) percentiles, the same definition as pandas' quantile.
            p50, p90, p99 = np.percentile(arr, [50, 90, 99])
            out.update({f"{col}_mean": float(arr.mean()), f"{col}_median": float(p50),
                        f"{col}_p90": float(p90), f"{col}_p99": float(p99),
                        f"{col}_max": float(arr.max())})
        gaps = np.diff(self.arrival_s)
        # Sample std (ddof=1) as pandas computes it; CV is 1 for Poisson arrivals, >1 when bursty.
        out["interarrival_cv"] = (float(gaps.std(ddof=1) / gaps.mean())
                                  if gaps.size > 1 and gaps.mean() > 0 else float("nan"))
        return out


def _as_int64(values: Iterable[int] | np.ndarray, col: str) -> np.ndarray:
    """A copy as int64, refusing floats with a fractional part (silent truncation hides bugs)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{col} must be whole numbers")
    elif arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"{col} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=True)


def load_trace(name_or_path: str | os.PathLike[str]) -> Trace:
    """A built-in trace by name ("azure-code", "azure-conv", or a synthetic one of
    SYNTHETIC_TRACES with its defaults) or a generic-format CSV by path."""
    key = os.fspath(name_or_path)
    if key in SYNTHETIC_TRACES:
        return synthetic_trace(key)
    if key in BUILTIN_TRACES:
        ref = resources.files(__package__ or "trail.sim").joinpath("data", BUILTIN_TRACES[key])
        return parse_trace_csv(ref.read_text(encoding="ascii"), source=BUILTIN_TRACES[key],
                               name=key)
    path = Path(key)
    if not path.is_file():
        raise FileNotFoundError(f"no trace file {key!r} (built-in traces: "
                                f"{', '.join(sorted(BUILTIN_TRACES) + list(SYNTHETIC_TRACES))})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(str(path), 1, f"not a CSV trace (not UTF-8 text: {exc.reason} "
                               f"at byte {exc.start})") from None
    return parse_trace_csv(text, source=str(path), name=path.stem)


def parse_trace_csv(text: str, source: str = "<string>", name: str = "trace") -> Trace:
    """Parse generic-format CSV text; errors name `source`, the 1-based line and the value."""
    rows = csv.reader(io.StringIO(text, newline=""))  # csv copes with CRLF as well as LF
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise TraceFormatError(source, 1, f"expected header {','.join(HEADER)!r}, "
                               f"got {','.join(header or [])!r}")
    arrival: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for row in rows:
        line = rows.line_num
        if not row or all(not c.strip() for c in row):
            continue  # tolerate blank lines (e.g. a trailing one)
        if len(row) != 3:
            raise TraceFormatError(source, line, f"expected 3 fields, got {len(row)}: "
                                   f"{','.join(row)!r}")
        a_s, p_s, o_s = (c.strip() for c in row)
        try:
            a = float(a_s)
        except ValueError:
            raise TraceFormatError(source, line, f"arrival_s {a_s!r} is not a number") from None
        if not math.isfinite(a):
            raise TraceFormatError(source, line, f"arrival_s {a_s!r} is not finite")
        arrival.append(a)
        for col, s, dst in (("prompt_tokens", p_s, prompt), ("output_tokens", o_s, output)):
            try:
                v = int(s)
            except ValueError:
                raise TraceFormatError(source, line, f"{col} {s!r} is not an integer") from None
            if v <= 0:
                raise TraceFormatError(source, line, f"{col} {s!r} is not positive")
            dst.append(v)
    if not arrival:
        raise TraceFormatError(source, rows.line_num, "no requests after the header")
    return Trace(np.array(arrival, dtype=np.float64), np.array(prompt, dtype=np.int64),
                 np.array(output, dtype=np.int64), name=name)


def read_azure_csv(path: str | os.PathLike[str], name: str | None = None) -> Trace:
    """Read an original Azure LLM inference trace (TIMESTAMP,ContextTokens,GeneratedTokens)."""
    path = Path(path)
    source = str(path)
    with open(path, encoding="ascii", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != [
                "TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise TraceFormatError(source, 1, f"not an Azure LLM trace header: {header!r}")
        stamps_ns: list[int] = []
        prompt: list[int] = []
        output: list[int] = []
        for row in rows:
            if not row:
                continue
            line = rows.line_num
            if len(row) != 3:
                raise TraceFormatError(source, line, f"expected 3 fields, got {row!r}")
            try:
                stamps_ns.append(_azure_timestamp_ns(row[0]))
                p, o = int(row[1]), int(row[2])
            except ValueError as e:
                raise TraceFormatError(source, line, f"bad value in {row!r}: {e}") from None
            if p <= 0 or o <= 0:
                raise TraceFormatError(source, line, f"token counts must be positive: {row!r}")
            prompt.append(p)
            output.append(o)
    if not stamps_ns:
        raise TraceFormatError(source, 1, "no requests after the header")
    # Integer nanoseconds until the subtraction, so relative times are exact before the
    # single conversion to float seconds (absolute epoch seconds in float64 would lose digits).
    t0 = min(stamps_ns)
    arrival = np.array([(t - t0) / 1e9 for t in stamps_ns], dtype=np.float64)
    return Trace(arrival, np.array(prompt, dtype=np.int64), np.array(output, dtype=np.int64),
                 name=name or path.stem)


def _azure_timestamp_ns(stamp: str) -> int:
    """'2023-11-16 18:17:03.9799600' (no zone; up to 9 fractional digits) as integer ns."""
    whole, _, frac = stamp.strip().partition(".")
    if len(frac) > 9 or (frac and not frac.isdigit()):
        raise ValueError(f"bad fractional seconds in timestamp {stamp!r}")
    t = _dt.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=_dt.timezone.utc)
    return int(t.timestamp()) * 10**9 + int(frac.ljust(9, "0") or 0)


def poisson_trace(lengths: Trace | tuple[np.ndarray, np.ndarray], n: int, rate: float,
                  seed: int | np.random.Generator | None = None, name: str | None = None) -> Trace:
    """n requests with Poisson arrivals at `rate` req/s (first at t=0) and (prompt, output)
    pairs drawn i.i.d. with replacement from the rows of `lengths`."""
    if isinstance(lengths, Trace):
        prompt_pool, output_pool = lengths.prompt_tokens, lengths.output_tokens
        base = lengths.name
    else:
        prompt_pool, output_pool = (np.asarray(a) for a in lengths)
        base = "lengths"
    if prompt_pool.shape != output_pool.shape or prompt_pool.ndim != 1 or prompt_pool.size == 0:
        raise ValueError("poisson_trace: lengths must be two non-empty 1-D arrays of equal length")
    if n < 1:
        raise ValueError(f"poisson_trace: n must be >= 1, got {n}")
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"poisson_trace: rate must be positive and finite, got {rate}")
    rng = np.random.default_rng(seed)
    # Pairs, not the two marginals separately: prompt and output length stay jointly distributed.
    idx = rng.integers(0, prompt_pool.size, size=n)
    gaps = rng.exponential(1.0 / rate, size=n - 1)
    arrival = np.concatenate([[0.0], np.cumsum(gaps)])
    return Trace(arrival, prompt_pool[idx], output_pool[idx],
                 name=name or f"poisson({base}, {rate:g}/s)")


def synthetic_trace(kind: str, n: int = 10_000, rate: float = 1.0, seed: int = 0) -> Trace:
    """A synthetic workload of `n` requests with Poisson arrivals at `rate` req/s (rescale it
    with `scaled_to_rate`), seeded; lengths in tokens:

    - "alpaca-shaped": short prompts and answers shaped like Stanford Alpaca's: prompt =
      30 tokens of chat template + lognormal(μ 2.66, σ 0.69) (instruction and input), output
      lognormal(μ 3.73, σ 0.79), at most 1,024: the median and p99 of the 5,000-example
      subset's word counts × 1.3 tokens per word (answers: median 42, mean 58, p99 262).
    - "heavy-tail": outputs bounded Pareto (shape 1.1 on [16, 4,096]: mean ~ 90, a few
      answers 50× the median), prompts lognormal around 512 (σ 1.0, within [16, 8,192]): a
      workload where a few giants hold most of the work, the case SRPT-like orders need.
    """
    if kind not in SYNTHETIC_TRACES:
        raise ValueError(f"unknown synthetic trace {kind!r}; choose from "
                         f"{', '.join(SYNTHETIC_TRACES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"synthetic_trace: n={n!r} must be an int >= 2")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"synthetic_trace: rate={rate!r} must be positive and finite")
    rng = np.random.default_rng(seed)
    arrival = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, size=n - 1))])
    if kind == "alpaca-shaped":
        prompt = 30 + np.round(np.exp(rng.normal(2.66, 0.69, n)))
        output = np.clip(np.round(np.exp(rng.normal(3.73, 0.79, n))), 1, 1024)
    else:
        lo, hi, shape = 16.0, 4096.0, 1.1
        u = rng.random(n)  # inverse CDF of the bounded Pareto
        output = np.round(lo / (1.0 - u * (1.0 - (lo / hi) ** shape)) ** (1.0 / shape))
        prompt = np.clip(np.round(np.exp(rng.normal(math.log(512.0), 1.0, n))), 16, 8192)
    return Trace(arrival, prompt.astype(np.int64), np.maximum(output, 1).astype(np.int64),
                 name=kind)
