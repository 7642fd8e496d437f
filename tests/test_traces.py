"""trail.sim.traces: the vendored Azure 2023 traces, the generic CSV format, Poisson traces, scaling."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from trail.sim.traces import (
    Trace,
    TraceFormatError,
    load_trace,
    parse_trace_csv,
    poisson_trace,
    read_azure_csv,
)

# The original Azure CSVs, where the shared data set is available ($TRAIL_SHARED_DATA).
SHARED_AZURE = Path(os.environ.get("TRAIL_SHARED_DATA", "")) / "azure2023"


@pytest.fixture(scope="module")
def code() -> Trace:
    """The vendored Azure 2023 code trace."""
    return load_trace("azure-code")


@pytest.fixture(scope="module")
def conv() -> Trace:
    """The vendored Azure 2023 conversation trace."""
    return load_trace("azure-conv")


# Statistics as stated in the shared data set's README.md, section 1 (computed with pandas).
@pytest.mark.parametrize("which, rows, out_mean, out_median, out_p90, out_p99, out_max, "
                         "in_mean, in_median, duration, rate_n_over_d, cv", [
                             ("code", 8819, 27.88, 13, 55, 251.5, 1899, 2047.8, 1469,
                              3435.9, 2.567, 13.15),
                             ("conv", 19366, 211.13, 129, 424, 601, 1000, 1154.7, 1020,
                              3501.7, 5.530, 1.094),
                         ])
def test_vendored_trace_matches_shared_readme(request, which, rows, out_mean, out_median, out_p90,
                                              out_p99, out_max, in_mean, in_median, duration,
                                              rate_n_over_d, cv):
    t: Trace = request.getfixturevalue(which)
    s = t.stats()
    assert len(t) == s["count"] == rows
    assert t.name == f"azure-{which}"
    assert t.arrival_s.dtype == np.float64 and t.prompt_tokens.dtype == np.int64
    assert t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)
    assert s["output_mean"] == pytest.approx(out_mean, abs=0.005)
    assert (s["output_median"], s["output_p90"], s["output_max"]) == (out_median, out_p90, out_max)
    assert s["output_p99"] == pytest.approx(out_p99, abs=0.05)
    assert s["prompt_mean"] == pytest.approx(in_mean, abs=0.05)
    assert s["prompt_median"] == in_median
    assert s["duration_s"] == pytest.approx(duration, abs=0.05)
    assert rows / s["duration_s"] == pytest.approx(rate_n_over_d, abs=5e-4)
    assert s["rate"] == pytest.approx((rows - 1) / s["duration_s"])
    assert s["interarrival_cv"] == pytest.approx(cv, abs=0.005)


@pytest.mark.parametrize("which", ["code", "conv"])
def test_vendored_file_is_exact_conversion_of_original(tmp_path, which):
    """Re-converting the shared original reproduces the vendored file byte for byte."""
    src = SHARED_AZURE / f"AzureLLMInferenceTrace_{which}.csv"
    if not src.exists():
        pytest.skip(f"{src} not available")
    out = tmp_path / "t.csv"
    read_azure_csv(src).save_csv(out)
    vendored = load_trace(f"azure-{which}")
    assert out.read_bytes().decode() == vendored.to_csv_text()
    assert b"\r" not in out.read_bytes()


def test_generic_csv_round_trip(tmp_path, code):
    path = tmp_path / "head.csv"
    code.head(500).save_csv(path)
    text = path.read_text()
    assert text.startswith("arrival_s,prompt_tokens,output_tokens\n0.000000,")
    back = load_trace(path)
    assert back.name == "head" and len(back) == 500
    np.testing.assert_array_equal(back.arrival_s, code.arrival_s[:500])
    np.testing.assert_array_equal(back.prompt_tokens, code.prompt_tokens[:500])
    np.testing.assert_array_equal(back.output_tokens, code.output_tokens[:500])
    load_trace(str(path))  # str and PathLike both work


def test_unsorted_rows_are_sorted_stably(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\r\n2.5,1,1\r\n0.5,2,2\r\n2.5,3,3\r\n"
                    "1.0,4,4\r\n\r\n")  # CRLF and a blank line are accepted too
    t = load_trace(path)
    np.testing.assert_array_equal(t.arrival_s, [0.5, 1.0, 2.5, 2.5])
    np.testing.assert_array_equal(t.prompt_tokens, [2, 4, 1, 3])


@pytest.mark.parametrize("body, line, fragment", [
    ("time,p,o\n0,1,1\n", 1, "expected header"),
    ("", 1, "expected header"),
    ("arrival_s,prompt_tokens,output_tokens\n", 1, "no requests"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,0,5\n", 3, "prompt_tokens '0'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,10,-3\n", 3, "output_tokens '-3'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,10,2.5\n", 3, "'2.5'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,10,5\nnan,1,1\n", 4, "'nan'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\ninf,1,1\n", 3, "'inf'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\nsoon,1,1\n", 3, "'soon'"),
    ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n\n1.0,10\n", 4, "3 fields"),
])
def test_bad_csv_names_file_line_and_value(tmp_path, body, line, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceFormatError) as err:
        load_trace(path)
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert fragment in str(err.value)


def test_unknown_name_lists_builtins():
    with pytest.raises(FileNotFoundError, match="azure-code"):
        load_trace("azure-chat")


def test_trace_constructor_validates():
    with pytest.raises(ValueError, match="not positive"):
        Trace(np.array([0.0, 1.0]), np.array([1, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="not finite"):
        Trace(np.array([0.0, np.nan]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="equal length"):
        Trace(np.array([0.0, 1.0]), np.array([1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        Trace(np.array([0.0]), np.array([1.5]), np.array([1]))


def test_poisson_trace_rate_and_resampling(conv):
    t = poisson_trace(conv, n=20_000, rate=8.0, seed=1)
    assert len(t) == 20_000 and t.arrival_s[0] == 0.0
    # (n-1)/duration estimates the rate with relative s.d. 1/sqrt(n) ~ 0.7 %.
    assert t.rate == pytest.approx(8.0, rel=0.03)
    assert t.stats()["interarrival_cv"] == pytest.approx(1.0, abs=0.03)
    # Every (prompt, output) pair is a row of the source trace, and the mean is preserved.
    pairs = set(zip(conv.prompt_tokens.tolist(), conv.output_tokens.tolist()))
    assert set(zip(t.prompt_tokens.tolist(), t.output_tokens.tolist())) <= pairs
    assert t.output_tokens.mean() == pytest.approx(conv.output_tokens.mean(), rel=0.03)


def test_poisson_trace_is_seeded():
    lengths = (np.array([10, 20, 30]), np.array([1, 2, 3]))
    a = poisson_trace(lengths, n=100, rate=2.0, seed=7)
    b = poisson_trace(lengths, n=100, rate=2.0, seed=7)
    c = poisson_trace(lengths, n=100, rate=2.0, seed=8)
    for x, y in ((a.arrival_s, b.arrival_s), (a.prompt_tokens, b.prompt_tokens),
                 (a.output_tokens, b.output_tokens)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    np.testing.assert_array_equal(a.prompt_tokens, 10 * a.output_tokens)  # pairs stay together


@pytest.mark.parametrize("rate", [0.5, 2.566, 40.0])
def test_scaled_to_rate(code, rate):
    s = code.scaled_to_rate(rate)
    assert s.rate == pytest.approx(rate, rel=1e-12)
    # Order, lengths and burstiness are unchanged; only time is stretched.
    np.testing.assert_array_equal(np.argsort(s.arrival_s, kind="stable"), np.arange(len(code)))
    np.testing.assert_array_equal(s.output_tokens, code.output_tokens)
    np.testing.assert_allclose(s.arrival_s, code.arrival_s * (code.rate / rate), rtol=1e-12)
    assert s.stats()["interarrival_cv"] == pytest.approx(code.stats()["interarrival_cv"])
    assert s.name == code.name


def test_scaled_to_load(conv):
    def service(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
        """A toy linear model: 0.1 ms per prompt token, 20 ms per output token."""
        return 1e-4 * prompt + 0.02 * output

    for load in (0.3, 0.9, 1.5):
        s = conv.scaled_to_load(load, service)
        assert s.offered_load(service) == pytest.approx(load, rel=1e-12)
        mean_service = float(service(conv.prompt_tokens, conv.output_tokens).mean())
        assert s.rate == pytest.approx(load / mean_service, rel=1e-12)
        assert np.all(np.diff(s.arrival_s) >= 0)
    with pytest.raises(ValueError):
        conv.scaled_to_load(0.0, service)


def test_head_and_stats_edge_cases(code):
    assert len(code.head(0)) == 0 and len(code.head(10**9)) == len(code)
    one = code.head(1)
    assert one.duration_s == 0.0
    with pytest.raises(ValueError, match="duration is 0"):
        one.scaled_to_rate(1.0)
    assert one.stats()["count"] == 1


def test_parse_trace_csv_source_name():
    with pytest.raises(TraceFormatError, match=r"^mem:2: "):
        parse_trace_csv("arrival_s,prompt_tokens,output_tokens\nx,1,1\n", source="mem")


@pytest.mark.parametrize("kind", ["alpaca-shaped", "heavy-tail"])
def test_synthetic_traces_are_seeded_and_shaped(kind: str) -> None:
    """Same seed, same trace; Poisson arrivals (inter-arrival CV near 1); the shapes their
    docstring states: Alpaca-shaped short prompts and a median answer near 42 tokens, the
    heavy tail's mean far above its median."""
    from trail.sim.traces import load_trace, synthetic_trace

    t = synthetic_trace(kind, n=20_000, rate=2.0, seed=3)
    again = synthetic_trace(kind, n=20_000, rate=2.0, seed=3)
    assert np.array_equal(t.output_tokens, again.output_tokens)
    assert np.array_equal(t.arrival_s, again.arrival_s)
    assert len(t) == 20_000 and t.rate == pytest.approx(2.0, rel=0.03)
    gaps = np.diff(t.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert t.output_tokens.min() >= 1 and t.prompt_tokens.min() >= 1
    if kind == "alpaca-shaped":
        assert np.median(t.output_tokens) == pytest.approx(42, abs=3)
        assert np.median(t.prompt_tokens) < 60 and t.output_tokens.max() <= 1024
    else:
        assert t.output_tokens.mean() > 2 * np.median(t.output_tokens)
        assert t.output_tokens.max() <= 4096
    assert len(load_trace(kind)) == 10_000  # by name, with the defaults


def test_synthetic_trace_rejects_bad_arguments() -> None:
    from trail.sim.traces import synthetic_trace

    with pytest.raises(ValueError, match="unknown synthetic trace"):
        synthetic_trace("bursty")
    with pytest.raises(ValueError, match="n="):
        synthetic_trace("heavy-tail", n=1)
    with pytest.raises(ValueError, match="rate="):
        synthetic_trace("heavy-tail", rate=0.0)
