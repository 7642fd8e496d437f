"""Bad input to any `trail` command fails fast: exit status 1 (2 for argparse's own usage
errors), one line on stderr that names the flag or the file and the bad value, no traceback,
and before any work (training, collection, simulation, serving) starts. Also the loaders of
the JSON files trail reads back (probe checkpoints, the demo model cache, collection
manifests, cost-model presets): a malformed file is a ValueError naming it and the field.

In-process cases run `trail.cli.main` with every command function replaced by one that fails
the test ("work started"), so a check that runs too late cannot pass by accident; a few cases
run the real `python -m trail.cli` in a subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

import trail.cli as cli
import trail.cli.args as cli_args
from trail.cli import RULES, build_parser, main

HANG_GUARD_S = 60  # not a timing assertion: a case that starts working would take minutes


# ------------------------------------------------------------------ inputs


def write_collection(d: pathlib.Path, layers: tuple[int, ...] = (0, 1), hidden: int = 8,
                     requests: int = 4, samples: int = 3) -> pathlib.Path:
    """A small but well-formed `trail collect` directory (manifest, one shard, prompts)."""
    from safetensors.numpy import save_file

    from trail.training.collect import CollectConfig

    d.mkdir(parents=True)
    n = requests * samples
    rng = np.random.default_rng(0)
    arrays = {"request": np.repeat(np.arange(requests), samples).astype(np.int64),
              "age": np.tile(np.arange(1, samples + 1), requests).astype(np.int64),
              "remaining": rng.integers(0, 50, n).astype(np.int64),
              "total": np.full(n, 60, np.int64),
              "prefill": np.tile([1] + [0] * (samples - 1), requests).astype(np.uint8)}
    for layer in layers:
        arrays[f"layer_{layer}"] = rng.standard_normal((n, hidden)).astype(np.float32)
    save_file(arrays, str(d / "shard_00000.safetensors"))
    cfg = dataclasses.asdict(CollectConfig(layers=list(layers)))
    manifest = {"format": "trail-collection", "version": 1, "model_id": "tiny",
                "layers": list(layers), "hidden_size": hidden, "config": cfg,
                "num_prompts": requests, "shards": ["shard_00000.safetensors"],
                "done": list(range(requests)), "skipped": []}
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "prompts.jsonl").write_text("".join(json.dumps({"index": i, "prompt": f"p {i}"}) + "\n"
                                             for i in range(requests)))
    return d


def edit_json(path: pathlib.Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A folder of bad (and a few good) inputs, shared by the cases."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "dir").mkdir()
    (d / "file").write_text("x")
    (d / "empty").write_text("")
    (d / "blank").write_text("\n  \n\n")
    (d / "garbage").write_bytes(bytes(range(256)) * 2)
    (d / "trunc.jsonl").write_text('{"prompt": "a b"}\n{"prompt": "c')
    (d / "list.jsonl").write_text("[1, 2]\n")
    (d / "int-prompt.jsonl").write_text('{"prompt": 5}\n')
    (d / "no-field.jsonl").write_text('{"text": "a"}\n')
    (d / "blank-prompt.jsonl").write_text('{"prompt": "  "}\n')
    (d / "good.jsonl").write_text('{"prompt": "a b"}\n')
    (d / "one.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,10\n")
    (d / "bad.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,-3\n")
    (d / "huge.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,10\n"
                                "1,900000,10\n")
    (d / "preset-missing.json").write_text('{"name": "x"}')
    (d / "preset-trunc.json").write_text('{"name": "x", "model": {"params": 8e9')
    (d / "preset-list.json").write_text("[1, 2]")
    good = json.loads((pathlib.Path(cli.__file__).parent.parent / "sim" / "presets"
                       / "llama3-8b-a100-80gb.json").read_text())
    (d / "preset-type.json").write_text(json.dumps(
        {**good, "gpu": {**good["gpu"], "peak_flops": "fast"}}))
    (d / "preset-eff.json").write_text(json.dumps(
        {**good, "calibration": {**good["calibration"], "compute_efficiency": 3}}))
    # A model folder is read for its config.json only before any work.
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 8, "vocab_size": 10}))
    for name, cfg in (("model-nolayers", {"model_type": "llama", "hidden_size": 8,
                                          "vocab_size": 10}),
                      ("model-strlayers", {"model_type": "llama", "num_hidden_layers": "two",
                                           "hidden_size": 8, "vocab_size": 10})):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps(cfg))
    (d / "model-trunc").mkdir()
    (d / "model-trunc" / "config.json").write_text('{"model_type": "llama", "num_hid')
    # Collections: a good one and broken copies.
    good_c = write_collection(d / "coll")
    for name in ("c-trunc", "c-list", "c-nolayers", "c-strlayers", "c-format", "c-noshard",
                 "c-shardtrunc", "c-shardgarbage", "c-onereq", "c-prompts", "c-config",
                 "c-empty"):
        shutil.copytree(good_c, d / name)
    m = "manifest.json"
    (d / "c-trunc" / m).write_text((good_c / m).read_text()[:50])
    (d / "c-list" / m).write_text("[]")
    edit_json(d / "c-nolayers" / m, layers=None)
    edit_json(d / "c-strlayers" / m, layers="0,1")
    edit_json(d / "c-format" / m, format="something-else")
    edit_json(d / "c-config" / m, config={"max_new_tokens": "many"})
    edit_json(d / "c-empty" / m, shards=[], done=[])
    (d / "c-noshard" / "shard_00000.safetensors").unlink()
    shard = (good_c / "shard_00000.safetensors").read_bytes()
    (d / "c-shardtrunc" / "shard_00000.safetensors").write_bytes(shard[: len(shard) // 2])
    (d / "c-shardgarbage" / "shard_00000.safetensors").write_bytes(b"not a shard" * 9)
    edit_json(d / "c-onereq" / m, done=[0])
    (d / "c-prompts" / "prompts.jsonl").write_text('{"index": 0, "prompt": "a"}\n{"ind')
    # collect into a collection of other settings: refused before the model is loaded
    write_collection(d / "other", layers=(0, 1), hidden=8, requests=30)
    return d


# (argv, words stderr must contain); "{d}" is the inputs folder. Every line is one distinct
# bad input.
CASES: list[tuple[str, str]] = [
    # collect: prompt files and demo:N
    ("collect --prompts {d}/empty --out {d}/o", "{d}/empty: no prompts"),
    ("collect --prompts {d}/blank --out {d}/o", "{d}/blank: no prompts"),
    ("collect --prompts {d}/garbage --out {d}/o", "{d}/garbage: not a JSONL prompt file"),
    ("collect --prompts {d}/trunc.jsonl --out {d}/o", "{d}/trunc.jsonl:2: not a JSON line"),
    ("collect --prompts {d}/list.jsonl --out {d}/o", "{d}/list.jsonl[0]: expected a JSON object"),
    ("collect --prompts {d}/int-prompt.jsonl --out {d}/o", "'prompt' must be a string"),
    ("collect --prompts {d}/no-field.jsonl --out {d}/o", "needs a 'prompt' or 'instruction'"),
    ("collect --prompts {d}/blank-prompt.jsonl --out {d}/o", "blank-prompt.jsonl:1: the prompt"),
    ("collect --prompts {d}/missing.jsonl --out {d}/o", "--prompts {d}/missing.jsonl: no such"),
    ("collect --prompts {d}/dir --out {d}/o", "--prompts {d}/dir: not a file"),
    ("collect --prompts demo:0 --out {d}/o", "--prompts demo:0: N must be >= 1"),
    ("collect --prompts demo:many --out {d}/o", "--prompts demo:many"),
    # collect: the model, its layers, the output
    ("collect --model {d}/nowhere --out {d}/o", "--model {d}/nowhere: not 'demo'"),
    ("collect --model {d}/dir --out {d}/o", "{d}/dir/config.json does not exist"),
    ("collect --model {d}/model-nolayers --out {d}/o", "missing field 'num_hidden_layers'"),
    ("collect --model {d}/model-strlayers --out {d}/o",
     "field 'num_hidden_layers' must be an integer, got 'two'"),
    ("collect --model {d}/model-trunc --out {d}/o", "model-trunc/config.json: not a model"),
    ("collect --model {d}/model --layers 2 --out {d}/o", "--layers 2: the model has 2 layers"),
    ("collect --layers -1 --out {d}/o", "--layers -1"),
    ("collect --layers 1,,2 --out {d}/o", "argument --layers"),
    ("collect --model {d}/model --prompts demo:5 --layers 0,1 --out {d}/other",
     "cannot resume, num_prompts was 30 and is now 5"),
    ("collect --model {d}/model --prompts demo:4 --out {d}/coll",
     "cannot resume, layers was [0, 1] and is now [0]"),
    ("collect --model {d}/model --prompts demo:4 --layers 0,1 --max-new-tokens 17 "
     "--out {d}/coll", "cannot resume with different settings: max_new_tokens was 512 and is "
     "now 17"),
    ("collect --out {d}/file", "--out {d}/file: exists and is not a directory"),
    ("collect --out {d}/file/sub", "--out {d}/file/sub: {d}/file is not a directory"),
    # collect: numbers
    ("collect --top-p 0 --out {d}/o", "--top-p 0: must be in (0, 1]"),
    ("collect --top-p nan --out {d}/o", "--top-p nan"),
    ("collect --temperature -1 --out {d}/o", "--temperature -1"),
    ("collect --temperature inf --out {d}/o", "--temperature inf"),
    ("collect --samples 0 --out {d}/o", "--samples 0"),
    ("collect --max-new-tokens 0 --out {d}/o", "--max-new-tokens 0"),
    ("collect --max-running -3 --out {d}/o", "--max-running -3"),
    ("collect --checkpoint-every 0 --out {d}/o", "--checkpoint-every 0"),
    ("collect --limit 0 --out {d}/o", "--limit 0"),
    ("collect --seed -1 --out {d}/o", "--seed -1"),
    ("collect --demo-seed -2 --out {d}/o", "--demo-seed -2"),
    ("collect --samples x --out {d}/o", "argument --samples: invalid int value: 'x'"),
    ("collect --model {d}/model --demo-seed 1 --out {d}/o",
     "--demo-seed 1: has no effect without --model demo"),
    # train-probe / eval-probe: the collection
    ("train-probe --data {d}/nowhere --layer 0 --out {d}/p", "{d}/nowhere/manifest.json does not"),
    ("train-probe --data {d}/c-trunc --layer 0 --out {d}/p", "invalid or truncated JSON"),
    ("train-probe --data {d}/c-list --layer 0 --out {d}/p", "expected a JSON object, got list"),
    ("train-probe --data {d}/c-nolayers --layer 0 --out {d}/p", "missing field 'layers'"),
    ("train-probe --data {d}/c-strlayers --layer 0 --out {d}/p",
     "field 'layers' must be a list of integers"),
    ("train-probe --data {d}/c-format --layer 0 --out {d}/p", "not a trail collection manifest"),
    ("train-probe --data {d}/c-config --layer 0 --out {d}/p", "'max_new_tokens' must be an"),
    ("train-probe --data {d}/c-empty --layer 0 --out {d}/p", "holds no samples yet"),
    ("train-probe --data {d}/c-noshard --layer 0 --out {d}/p", "a shard the manifest lists"),
    ("train-probe --data {d}/c-shardtrunc --layer 0 --out {d}/p",
     "c-shardtrunc/shard_00000.safetensors: not a readable safetensors shard"),
    ("train-probe --data {d}/c-shardgarbage --layer 0 --out {d}/p", "not a readable"),
    ("train-probe --data {d}/c-onereq --layer 0 --out {d}/p", "need at least 2"),
    ("train-probe --data {d}/coll --layer 5 --out {d}/p", "--layer 5: {d}/coll holds layers"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --num-bins 1000",
     "--num-bins 1000 --max-len 512: uniform bins would be 0.512 tokens wide"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --max-len nan", "--max-len nan"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --lr 0", "--lr 0"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --weight-decay -0.1",
     "--weight-decay -0.1"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --val-fraction 1", "--val-fraction 1"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --epochs 0", "--epochs 0"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --batch-size 0", "--batch-size 0"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --hidden-dim -1", "--hidden-dim -1"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/file", "--out {d}/file"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --bins linear", "argument --bins"),
    ("train-probe --data {d}/coll --layer 0 --out {d}/p --bins geometric --max-len 300",
     "--max-len 300: has no effect without --bins uniform"),
    ("eval-probe --data {d}/coll --layers 0,7 --out {d}/e", "--layers 0,7: {d}/coll holds"),
    ("eval-probe --data {d}/coll --out {d}/e --num-bins 1100",
     "--num-bins 1100 --max-len 512: uniform bins would be"),
    ("eval-probe --data {d}/coll --out {d}/e --num-bins 1024 --max-len 5000",
     "--num-bins 1024 (geometric bins"),
    ("eval-probe --data {d}/c-trunc --out {d}/e", "c-trunc/manifest.json: not a trail"),
    ("eval-probe --data {d}/coll --out {d}/e --num-bins 0", "--num-bins 0"),
    # demo-model, demo
    ("demo-model --measure -1", "--measure -1"),
    ("demo-model --seed 4294967296", "--seed 4294967296"),
    ("demo-model --out {d}/o", "--out {d}/o: has no effect without --measure N"),
    ("demo --requests 0 --out {d}/o", "--requests 0"),
    ("demo --profile-prompts 19 --out {d}/o", "--profile-prompts 19"),
    ("demo --predictors {d}/coll --out {d}/o", "--predictors {d}/coll: lacks report.json"),
    ("demo --model {d}/nowhere --prompts {d}/coll/prompts.jsonl --out {d}/o",
     "--model {d}/nowhere: not 'demo'"),
    ("demo --model smollm2-135m-instruct --out {d}/o", "any other model needs prompts"),
    ("demo --prompts {d}/coll/prompts.jsonl --out {d}/o", "the demo model serves its own"),
    ("demo --load 1.5 --out {d}/o", "--load 1.5"),
    ("demo --c nan --out {d}/o", "--c nan"),
    ("demo --threads 0 --out {d}/o", "--threads 0"),
    ("demo --max-running 0 --out {d}/o", "--max-running 0"),
    ("demo --prefill-weight -1 --out {d}/o", "--prefill-weight -1"),
    ("demo --aging-rate soon --out {d}/o", "--aging-rate soon"),
    ("demo --preempt-margin inf --out {d}/o", "--preempt-margin inf"),
    ("demo --clock cpu --out {d}/o", "argument --clock"),
    ("demo --out {d}/file", "--out {d}/file"),
    # simulate, tune-c
    ("simulate --trace {d}/empty", "{d}/empty:1: expected header"),
    ("simulate --trace {d}/garbage", "{d}/garbage:1: not a CSV trace"),
    ("simulate --trace {d}/bad.csv", "{d}/bad.csv:2: output_tokens '-3' is not positive"),
    ("simulate --trace {d}/dir", "no trace file"),
    ("simulate --trace {d}/one.csv", "--trace {d}/one.csv: 1 request(s)"),
    ("simulate --trace {d}/huge.csv", "do not fit in the KV cache"),
    ("simulate --limit 1", "--limit 1: 1 request(s)"),
    ("simulate --limit 0", "--limit 0"),
    ("simulate --preset {d}/preset-missing.json --limit 50",
     "{d}/preset-missing.json: not a cost-model preset: missing model, gpu, calibration"),
    ("simulate --preset {d}/preset-trunc.json --limit 50",
     "{d}/preset-trunc.json: not a cost-model preset: invalid or truncated JSON"),
    ("simulate --preset {d}/preset-list.json --limit 50", "expected a JSON object, got list"),
    ("simulate --preset {d}/preset-type.json --limit 50", "'gpu.peak_flops' must be a number"),
    ("simulate --preset {d}/preset-eff.json --limit 50", "compute_efficiency=3"),
    ("simulate --preset {d}/nowhere.json --limit 50", "--preset {d}/nowhere.json: no such"),
    ("simulate --preset a100 --limit 50", "--preset a100: not a preset"),
    ("simulate --policy fifo --limit 50", "--policy fifo: unknown policy"),
    ("simulate --compare --policy SJF --limit 50", "--policy SJF: has no effect without"),
    ("simulate --c 1.5 --limit 50", "--c 1.5: must be in [0, 1]"),
    ("simulate --load inf --limit 50", "--load inf"),
    ("simulate --loads 0.5,nan --limit 50", "--loads 0.5,nan"),
    ("simulate --loads 0.5, --limit 50", "argument --loads"),
    ("simulate --max-running 0 --limit 50", "--max-running 0"),
    ("simulate --block-size 100000000 --limit 50",
     "--block-size 100000000: larger than the KV cache"),
    ("simulate --predict-every 0 --limit 50", "--predict-every 0"),
    ("simulate --max-preemptions -2 --limit 50", "--max-preemptions -2"),
    ("simulate --starvation-steps -1 --limit 50", "--starvation-steps -1"),
    ("simulate --preempt-margin -5 --limit 50", "--preempt-margin -5"),
    ("simulate --corr-tokens nan --limit 50", "--corr-tokens nan"),
    ("simulate --aging-rate inf --limit 50", "--aging-rate inf"),
    ("simulate --prefill-weight heavy --limit 50", "--prefill-weight heavy"),
    ("simulate --rank median --limit 50", "argument --rank"),
    ("simulate --limit 50 --out {d}/file", "--out {d}/file"),
    ("tune-c --c 0.5 -0.1 --limit 50", "--c 0.5,-0.1: each value must be in [0, 1]"),
    ("tune-c --load 0 --limit 50", "--load 0"),
    ("tune-c --seed -1 --limit 50", "--seed -1"),
    ("tune-c --trace {d}/one.csv", "1 request(s)"),
    # theory
    ("theory --prediction-mae -5", "--prediction-mae -5: must be a finite number >= 0"),
    ("theory --prediction-mae nan", "--prediction-mae nan"),
    ("theory --load 1", "--load 1: must be in (0, 1)"),
    ("theory --c 0 2", "--c 0,2: each value must be in [0, 1], got 2"),
    ("theory --trace {d}/garbage", "{d}/garbage:1: not a CSV trace"),
    ("theory --out {d}/file", "--out {d}/file"),
    # bench
    ("bench --device tpu", "--device tpu: expected cpu, cuda or cuda:N"),
    ("bench --device cuda:x", "--device cuda:x"),
    ("bench --batches 0,8", "--batches 0,8: each value must be an integer >= 1, got 0"),
    ("bench --batches ,", "argument --batches"),
    ("bench --waiting -1", "--waiting -1"),
    ("bench --hidden 0", "--hidden 0"),
    ("bench --repeats 0", "--repeats 0"),
    ("bench --running 0", "--running 0"),
    ("bench --threads -1", "--threads -1"),
    ("bench --scenario burst", "argument --scenario"),
]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command function fails the test: checks must refuse the input before them."""
    def work(args: argparse.Namespace) -> int:
        raise AssertionError(f"trail {args.command} started working on bad input")

    for module in cli.COMMAND_MODULES:
        for name in dir(module):
            if name.startswith("cmd_"):
                monkeypatch.setattr(module, name, work)
    # --model demo must not be trained by a check (nor found in the user's cache)
    monkeypatch.setenv("TRAIL_CACHE", "/nonexistent/trail-cache")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    t = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = int(exc.code or 0)
    assert time.perf_counter() - t < HANG_GUARD_S
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("line, words", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_refused_before_any_work(line: str, words: str, d: pathlib.Path,
                                              no_work: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(d=d) for a in line.split()]
    rc, err = run_main(argv, capsys)
    words = words.format(d=d)
    assert "Traceback" not in err
    assert words in err, err
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"trail {argv[0]}: error: "), err
    if rc == 1:
        assert err.count("\n") == 1, err  # one line
    else:
        assert rc == 2 and "argument --" in last, err  # argparse: usage, then the error


def test_distinct_cases() -> None:
    lines = [c[0] for c in CASES]
    assert len(set(lines)) == len(lines)


@pytest.mark.parametrize("line", [
    "simulate --limit 50",
    "tune-c --limit 50 --c 0 1",
    "theory --prediction-mae 10",
    "bench --device cpu",
    "demo --quick --aging-rate AUTO --prefill-weight 0.5",
    "collect --model {d}/model --prompts {d}/good.jsonl --out {d}/fresh --layers 0,1",
    "train-probe --data {d}/coll --layer 1 --out {d}/p",
    "eval-probe --data {d}/coll --out {d}/e --baseline off",
    "train-probe --data {d}/coll --layer 1 --out {d}/p --bins geometric",
    "demo-model --measure 3 --out {d}/o",
    "simulate --compare --limit 50",
])
def test_good_input_reaches_the_command(line: str, d: pathlib.Path, no_work: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The harness's control: valid flags pass every check and reach the command."""
    with pytest.raises(AssertionError, match="started working"):
        main([a.format(d=d) for a in line.split()])


def test_eval_probe_checks_the_prompts_the_baseline_reads(d: pathlib.Path, no_work: None,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from trail.training.prompt_only import encoder_dir

    argv = ["eval-probe", "--data", str(d / "c-prompts"), "--out", str(d / "e"),
            "--baseline", "on"]
    try:
        encoder_dir()
    except ImportError:  # not installed: --baseline on is refused for that, also up front
        rc, err = run_main(argv, capsys)
        assert rc == 1 and "--baseline on: " in err, err
        return
    rc, err = run_main(argv, capsys)
    assert rc == 1 and f"{d}/c-prompts/prompts.jsonl:2: not a JSON line" in err, err
    # off: the prompts are not read, so they are not checked either
    with pytest.raises(AssertionError, match="started working"):
        main(argv[:-1] + ["off"])


def test_every_numeric_flag_has_a_rule() -> None:
    (action,) = [a for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)]
    assert set(RULES) == set(action.choices)
    for name, parser in action.choices.items():
        dests = {a.dest for a in parser._actions}
        assert set(RULES[name]) <= dests, name
        for a in parser._actions:
            numeric = a.type in (int, float, cli_args.ints, cli_args.floats) or a.dest in (
                "prefill_weight", "aging_rate")
            if a.option_strings and numeric:
                assert a.dest in RULES[name], f"trail {name} {a.option_strings[0]} has no rule"


# ------------------------------------------------------------------ the real entry point


SUBPROCESS_CASES = [
    ("collect --prompts {d}/empty --out {d}/o", "{d}/empty: no prompts"),
    ("theory --prediction-mae -1", "--prediction-mae -1"),
    ("train-probe --data {d}/c-list --layer 0 --out {d}/p", "expected a JSON object"),
    ("simulate --preset {d}/preset-trunc.json", "preset-trunc.json"),
    ("bench --device cuda:x", "--device cuda:x"),
    ("simulate --load x", "argument --load: invalid float value: 'x'"),
]


def test_the_command_line_fails_in_one_line(d: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """`python -m trail.cli`: the status, stderr and speed a user sees; TRAIL_CACHE is empty,
    so a check that came after loading the demo model would start training it."""
    env = {**os.environ, "TRAIL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("TRAIL_DEBUG", None)
    for line, words in SUBPROCESS_CASES:
        argv = [a.format(d=d) for a in line.split()]
        out = subprocess.run([sys.executable, "-m", "trail.cli", *argv], env=env,
                             capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert out.returncode in (1, 2), (line, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        assert words.format(d=d) in out.stderr, out.stderr
        if out.returncode == 1:
            assert out.stderr.count("\n") == 1, out.stderr
        assert out.stdout == "", out.stdout
    assert not (tmp_path / "cache").exists()  # no demo model was trained


# ------------------------------------------------------------------ the loaders


def probe_checkpoint(path: pathlib.Path) -> pathlib.Path:
    from trail import Bins, Probe

    return Probe(16, Bins.uniform(4, 64.0), hidden_dim=8, layer=1, num_slots=2).save(path)


@pytest.mark.parametrize("text, words", [
    ("", "empty file"),
    ('{"format": "trail-probe", "vers', "invalid or truncated JSON"),
    ("[1, 2, 3]", "expected a JSON object, got list"),
    ('"probe"', "expected a JSON object, got str"),
    (None, "missing field 'bin_edges'"),
])
def test_probe_checkpoint_config_that_is_not_one(text: str | None, words: str,
                                                 tmp_path: pathlib.Path) -> None:
    from trail import Probe

    d = probe_checkpoint(tmp_path / "ck")
    cfg = d / "probe.json"
    if text is None:
        edit_json(cfg, bin_edges=None)
    else:
        cfg.write_text(text)
    with pytest.raises(ValueError, match=words) as info:
        Probe.load(d)
    assert str(cfg) in str(info.value) and str(info.value).startswith("Probe.load: ")


@pytest.mark.parametrize("field, value, words", [
    ("bin_edges", "0,16,32", "'bin_edges' must be a list of finite numbers"),
    ("bin_edges", [0, 32, 16, 64, 48], "field 'bin_edges': bin edges must increase"),
    ("num_bins", "4", "'num_bins' must be an integer"),
    ("num_bins", 0, "'num_bins' must be >= 1"),
    ("hidden_size", None, "missing field 'hidden_size'"),
    ("hidden_size", 16.0, "'hidden_size' must be an integer"),
    ("hidden_dim", True, "'hidden_dim' must be an integer"),
    ("layer", -1, "'layer' must be >= 0"),
    ("layer", None, "missing field 'layer'"),
    ("model_id", 7, "'model_id' must be a string"),
])
def test_probe_checkpoint_with_a_bad_field(field: str, value: Any, words: str,
                                           tmp_path: pathlib.Path) -> None:
    from trail import Probe

    d = probe_checkpoint(tmp_path / "ck")
    edit_json(d / "probe.json", **{field: value})
    with pytest.raises(ValueError, match=words) as info:
        Probe.load(d)
    assert str(d / "probe.json") in str(info.value)


def test_prompt_baseline_checkpoint_fields(tmp_path: pathlib.Path) -> None:
    from trail.probe.checkpoint import open_checkpoint

    (tmp_path / "baseline.safetensors").write_bytes(b"")
    cfg = {"format": "trail-prompt-baseline", "version": 1, "bin_edges": [0, 8, 16],
           "num_bins": 2, "hidden_dim": 4, "dropout": 0.1, "encoder": {}, "train": {}}
    for change, words in (({"encoder": "MiniLM"}, "'encoder' must be an object"),
                          ({"dropout": -0.5}, "'dropout' must be >= 0"),
                          ({"hidden_dim": None}, "missing field 'hidden_dim'")):
        (tmp_path / "baseline.json").write_text(json.dumps(
            {k: v for k, v in {**cfg, **change}.items() if v is not None}))
        with pytest.raises(ValueError, match=words):
            open_checkpoint(tmp_path, "baseline.json", "baseline.safetensors",
                            "trail-prompt-baseline", 1, "PromptOnlyPredictor.load")


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A cache holding a (tiny, untrained) demo model of seed 0, as save_demo writes it."""
    from transformers import LlamaForCausalLM

    from trail.models.demo import build_tokenizer
    from trail.models.demo.cache import demo_path, save_demo
    from trail.models.demo.train import FORMAT_VERSION, demo_config

    tok = build_tokenizer()
    model = LlamaForCausalLM(demo_config(len(tok), hidden_size=8, num_layers=1))
    root = tmp_path_factory.mktemp("cache")
    save_demo(model, tok, {"format_version": FORMAT_VERSION, "seed": 0}, demo_path(0, root))
    return root


def broken_cache(root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    shutil.copytree(root, tmp_path / "cache")
    from trail.models.demo.cache import demo_path

    return demo_path(0, tmp_path / "cache")


@pytest.mark.parametrize("file, text, words", [
    ("training_report.json", "", "empty file"),
    ("training_report.json", '{"seed": 0, "format_', "invalid or truncated JSON"),
    ("training_report.json", "[0]", "expected a JSON object"),
    ("training_report.json", '{"format_version": 2}', "missing field 'seed'"),
    ("training_report.json", '{"format_version": 2, "seed": "0"}', "'seed' must be an"),
    ("training_report.json", '{"format_version": 999, "seed": 0}', "format 999; expected"),
    ("training_report.json", '{"format_version": 2, "seed": 3}', "seed 3"),
    ("config.json", '{"model_type": "llama", "hidden_size": 8, "vocab_size": 40}',
     "missing field 'num_hidden_layers'"),
    ("config.json", "[]", "expected a JSON object"),
    ("config.json", '{"model_type": "llama", "num_hidden_layers": 1', "truncated"),
    ("tokenizer.json", '{"version": "1.0", "trunc', "the tokenizer files cannot be read"),
])
def test_demo_cache_that_is_not_one(file: str, text: str, words: str, demo_folder: pathlib.Path,
                                    tmp_path: pathlib.Path) -> None:
    from trail.models.demo import load_demo
    from trail.models.demo.train import FORMAT_VERSION

    path = broken_cache(demo_folder, tmp_path)
    text = text.replace('"format_version": 2', f'"format_version": {FORMAT_VERSION}')
    (path / file).write_text(text)
    with pytest.raises(ValueError, match=words) as info:
        load_demo(seed=0, cache_dir=str(tmp_path / "cache"), train_if_missing=False)
    assert str(path) in str(info.value)


def test_demo_cache_loads_and_refuses_missing_weights(demo_folder: pathlib.Path,
                                                      tmp_path: pathlib.Path) -> None:
    from safetensors.numpy import load_file, save_file

    from trail.models.demo import load_demo

    model, _ = load_demo(seed=0, cache_dir=str(demo_folder), train_if_missing=False)
    assert model.config.num_hidden_layers == 1
    path = broken_cache(demo_folder, tmp_path)
    weights = load_file(str(path / "model.safetensors"))
    dropped = sorted(k for k in weights if "layers.0.mlp" in k)
    save_file({k: v for k, v in weights.items() if k not in dropped},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="the weights lack 3 of the model's tensors"):
        load_demo(seed=0, cache_dir=str(tmp_path / "cache"), train_if_missing=False)


def test_collection_manifest_and_prompts(d: pathlib.Path, tmp_path: pathlib.Path) -> None:
    from trail.training.collect import load_samples, read_collected_prompts, read_manifest

    assert read_manifest(d / "coll")["layers"] == [0, 1]
    assert load_samples(d / "coll", 1).x.shape == (12, 8)
    assert read_collected_prompts(d / "coll") == [f"p {i}" for i in range(4)]
    with pytest.raises(ValueError, match="not a readable safetensors shard"):
        load_samples(d / "c-shardtrunc", 0)
    c = shutil.copytree(d / "coll", tmp_path / "c")
    for change, words in (({"done": [0, "1"]}, "'done' must be a list of integers"),
                          ({"skipped": [{"reason": "x"}]}, "integer 'index'"),
                          ({"shards": ["../../etc/passwd"]}, "must hold file names"),
                          ({"version": 7}, "version 7"),
                          ({"hidden_size": 0}, "'hidden_size' must be >= 1")):
        shutil.copy(d / "coll" / "manifest.json", c / "manifest.json")
        edit_json(c / "manifest.json", **change)
        with pytest.raises(ValueError, match=words) as info:
            read_manifest(c)
        assert str(c / "manifest.json") in str(info.value)
    shutil.copy(d / "coll" / "manifest.json", c / "manifest.json")
    (c / "prompts.jsonl").write_text('{"index": 0, "prompt": "a"}\n{"index": 0, "prompt": "b"}\n')
    with pytest.raises(ValueError, match="indices are not 0..1"):
        read_collected_prompts(c)
    (c / "prompts.jsonl").write_text('{"index": 0}\n')
    with pytest.raises(ValueError, match="prompts.jsonl:1"):
        read_collected_prompts(c)


def test_cost_model_from_json_names_the_file_and_field(d: pathlib.Path) -> None:
    from trail.sim.cost_model import CostModel

    for name, words in (("preset-missing.json", "missing model, gpu, calibration"),
                        ("preset-trunc.json", "truncated JSON"),
                        ("preset-list.json", "expected a JSON object"),
                        ("preset-type.json", "'gpu.peak_flops' must be a number"),
                        ("empty", "empty file")):
        with pytest.raises(ValueError, match=words) as info:
            CostModel.from_json(d / name)
        assert str(d / name) in str(info.value)
    good = json.loads((d / "preset-type.json").read_text())
    good["gpu"]["peak_flops"] = 1e15
    good["model"]["experts"] = 8
    with pytest.raises(ValueError, match="'model' has unknown experts"):
        CostModel.from_dict(good)


def test_ctrl_c_is_one_line_and_status_130(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.sim, "cmd_theory", interrupted)
    monkeypatch.setattr(cli, "_check_args", lambda args: None)
    rc, err = run_main(["theory"], capsys)
    assert rc == 130 and err == "trail theory: interrupted\n"
