"""Collection, training, evaluation and the CLI on tiny random models (CPU)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import transformers
from trail import Bins, Probe
from trail.cli import main
from trail.engine import Engine, EngineConfig
from trail.training.collect import (
    CollectConfig,
    Samples,
    collect,
    load_samples,
    read_manifest,
)
from trail.training.evaluate import evaluate, evaluate_transfer
from trail.training.train import (
    TrainConfig,
    expected_remaining,
    split_by_request,
    train_probe,
)

import trail_ext as te


def tiny_model(layers: int = 3, eos: int = 5) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=layers, num_attention_heads=4,
                                   max_position_embeddings=256, initializer_range=0.3,
                                   eos_token_id=eos, bos_token_id=1, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


class CharTokenizer:
    """Enough of a tokenizer for collection: characters to ids below the vocabulary."""

    eos_token_id = 5

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": ([1] + [6 + ord(c) % 58 for c in text][:30]) if text else []}


PROMPTS = [f"prompt {i} " * (1 + i % 4) for i in range(24)]


def test_collection_shapes_and_labels(tmp_path: pathlib.Path) -> None:
    model = tiny_model()
    manifest = collect(model, CharTokenizer(), PROMPTS, tmp_path,
                       CollectConfig(layers=None, samples_per_request=4, max_new_tokens=40,
                                     max_running=6, shard_bytes=3000), progress=False)
    assert manifest["layers"] == [0, 1, 2] and sorted(manifest["done"]) == list(range(24))
    assert len(manifest["shards"]) > 1  # bounded buffer: several shards
    for layer in range(3):
        s = load_samples(tmp_path, layer)
        assert s.x.shape[1] == 32 and s.x.dtype == np.float32 and np.isfinite(s.x).all()
        assert (s.remaining == s.total - s.age).all() and (s.remaining >= 0).all()
        for r in range(24):
            m = s.request == r
            assert s.prefill[m].sum() == 1 and s.age[m & s.prefill][0] == 1
            assert 1 <= m.sum() <= 5 and (s.total[m] == s.total[m][0]).all()
            assert (s.age[m] <= s.total[m]).all() and len(set(s.age[m].tolist())) == m.sum()
    # the same samples on every layer
    a, b = load_samples(tmp_path, 0), load_samples(tmp_path, 2)
    assert (a.request == b.request).all() and (a.age == b.age).all()


def test_collection_prefill_sample_is_the_prompt_mean(tmp_path: pathlib.Path) -> None:
    model = tiny_model()
    reference = tiny_model()
    collect(model, CharTokenizer(), PROMPTS[:3], tmp_path,
            CollectConfig(layers=[1], samples_per_request=2, max_new_tokens=5, max_running=3),
            progress=False)
    s = load_samples(tmp_path, 1)
    for r in range(3):
        ids = CharTokenizer()(PROMPTS[r])["input_ids"]
        with torch.no_grad():
            hs = reference(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0]
        got = s.x[(s.request == r) & s.prefill][0]
        np.testing.assert_allclose(got, hs.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_collection_resumes_and_records_refusals(tmp_path: pathlib.Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    cfg = CollectConfig(layers=[0], samples_per_request=3, max_new_tokens=20, max_running=4,
                        shard_bytes=1)  # a shard per finished request
    prompts = PROMPTS[:10] + [""]  # an empty prompt is refused, and recorded
    calls = {"n": 0}
    real_step = Engine.step

    def crashing_step(self: Engine) -> list:
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt  # the run dies part-way
        return real_step(self)

    monkeypatch.setattr(Engine, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        collect(model, CharTokenizer(), prompts, tmp_path, cfg, progress=False)
    partial = read_manifest(tmp_path)
    assert 0 < len(partial["done"]) < 10
    monkeypatch.setattr(Engine, "step", real_step)
    again = collect(model, CharTokenizer(), prompts, tmp_path, cfg, progress=False)
    assert sorted(again["done"]) == list(range(10))  # each once: nothing redone, nothing lost
    s = load_samples(tmp_path, 0)
    assert sorted(s.request[s.prefill].tolist()) == list(range(10))
    assert [x["index"] for x in again["skipped"]] == [10]
    assert "empty prompt" in again["skipped"][0]["reason"]
    with pytest.raises(ValueError, match="cannot resume"):
        collect(model, CharTokenizer(), prompts[:5], tmp_path, cfg, progress=False)


def test_interrupted_collection_resumes_from_checkpoints(tmp_path: pathlib.Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints every 3 finished requests; Ctrl-C keeps every finished one; the rerun does
    only the rest and ends with the data of an uninterrupted run."""
    from trail.fileio import ordinary_mode
    from trail.training.collect import Collector

    cfg = CollectConfig(layers=[0, 2], samples_per_request=3, max_new_tokens=30, max_running=4,
                        checkpoint_every=3)
    full = collect(tiny_model(), CharTokenizer(), PROMPTS, tmp_path / "full", cfg,
                   progress=False)
    assert len(full["shards"]) == 8  # 24 requests, a checkpoint every 3

    out, finished, real_step = tmp_path / "part", [0], Engine.step

    def interrupted_step(self: Engine) -> list:
        # What a hard kill here would leave on disk: all but the last < 3 finished requests.
        on_disk = len(read_manifest(out)["done"])
        assert 0 <= finished[0] - on_disk < cfg.checkpoint_every
        outputs = real_step(self)
        finished[0] += len(outputs)
        if finished[0] >= 11:
            raise KeyboardInterrupt  # these outputs are lost: still running for the collector
        return outputs

    monkeypatch.setattr(Engine, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        collect(tiny_model(), CharTokenizer(), PROMPTS, out, cfg, progress=False)
    partial = read_manifest(out)
    kept = sorted(partial["done"])
    assert 8 <= len(kept) < 11 and len(set(kept)) == len(kept)
    assert len(partial["shards"]) == -(-len(kept) // 3)  # and one at the interrupt
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["manifest.json", "prompts.jsonl", *partial["shards"]])  # no temps
    for name in partial["shards"]:
        assert (out / name).stat().st_mode & 0o777 == ordinary_mode()

    monkeypatch.setattr(Engine, "step", real_step)
    started: list[int] = []
    real_start = Collector.start

    def recording_start(self: Collector, rid: int, index: int) -> None:
        started.append(index)
        real_start(self, rid, index)

    monkeypatch.setattr(Collector, "start", recording_start)
    again = collect(tiny_model(), CharTokenizer(), PROMPTS, out, cfg, progress=False)
    assert sorted(started) == sorted(set(range(24)) - set(kept))  # nothing finished is redone
    assert sorted(again["done"]) == list(range(24)) and again["shards"][:4] == partial["shards"]
    for layer in (0, 2):
        a, b = load_samples(tmp_path / "full", layer), load_samples(out, layer)
        ia, ib = np.lexsort((a.age, a.request)), np.lexsort((b.age, b.request))
        for name in ("request", "age", "remaining", "total", "prefill"):
            assert (getattr(a, name)[ia] == getattr(b, name)[ib]).all(), name
        # Other batch neighbours after the restart: the same states up to float rounding.
        np.testing.assert_allclose(b.x[ib], a.x[ia], rtol=1e-4, atol=1e-5)


def test_split_by_request_has_no_leakage() -> None:
    request = np.repeat(np.arange(50), 7)
    train, val = split_by_request(request, 0.2, seed=3)
    assert not set(request[train]) & set(request[val])
    assert len(set(request[val])) == 10 and (train | val).all()
    again = split_by_request(request, 0.2, seed=3)
    assert (again[1] == val).all()
    with pytest.raises(ValueError):
        split_by_request(np.zeros(5, int), 0.2, 0)


def linear_samples(n_req: int = 300, per: int = 9, seed: int = 0) -> Samples:
    """Embeddings whose remaining length is linearly decodable (plus noise)."""
    rng = np.random.default_rng(seed)
    req = np.repeat(np.arange(n_req), per)
    total = rng.integers(5, 450, n_req).repeat(per)
    age = np.minimum(rng.integers(1, 60, len(req)), total)
    rem = total - age
    direction = rng.normal(size=40)
    x = (rng.normal(size=(len(req), 40)) + np.outer(rem / 60.0, direction) + 20.0).astype(np.float32)
    return Samples(x, req, age, rem, total, age == 1)


def test_training_converges_on_decodable_embeddings() -> None:
    s = linear_samples()
    probe, report = train_probe(s, 4, Bins.uniform(), TrainConfig(epochs=6, seed=1),
                                progress=False)
    baseline = np.abs(s.remaining - s.remaining.mean()).mean()
    assert report["val_mae"] < 0.2 * baseline, (report["val_mae"], baseline)
    assert report["history"][-1]["train_loss"] < report["history"][0]["train_loss"]
    # the standardisation is folded into fc1: the saved probe reads raw states
    with torch.no_grad():
        pred = expected_remaining(probe(torch.from_numpy(s.x)), probe.bins).numpy()
    assert np.abs(pred - s.remaining).mean() < 0.2 * baseline
    again, _ = train_probe(s, 4, Bins.uniform(), TrainConfig(epochs=6, seed=1), progress=False)
    assert torch.equal(again.fc1.weight, probe.fc1.weight)  # seeded: identical


def test_checkpoint_round_trip_and_refusals(tmp_path: pathlib.Path) -> None:
    s = linear_samples(n_req=60)
    probe, _ = train_probe(s, 1, Bins.geometric(8), TrainConfig(epochs=2, hidden_dim=16),
                           progress=False)
    probe.save(tmp_path / "p")
    back = Probe.load(tmp_path / "p")
    x = torch.from_numpy(s.x[:5])
    assert torch.equal(back(x), probe(x)) and back.layer == 1 and back.bins == probe.bins
    model = tiny_model()
    # hidden size 40 does not match the model's 32
    with pytest.raises(ValueError, match="hidden size"):
        Engine(model, EngineConfig(scheduler=te.SchedulerConfig(), probe=back))
    with pytest.raises(ValueError, match="hidden size"):
        Probe.load(tmp_path / "p", hidden_size=32)
    wrong_layer = Probe(32, Bins.uniform(), hidden_dim=8, layer=7)
    with pytest.raises(ValueError, match="layer 7"):
        Engine(tiny_model(), EngineConfig(scheduler=te.SchedulerConfig(), probe=wrong_layer))


def test_evaluate_end_to_end(tmp_path: pathlib.Path) -> None:
    collect(tiny_model(), CharTokenizer(), PROMPTS * 2, tmp_path / "c",
            CollectConfig(layers=[0, 2], samples_per_request=5, max_new_tokens=40, max_running=8),
            progress=False)
    report = evaluate(tmp_path / "c", tmp_path / "e", cfg=TrainConfig(epochs=2, hidden_dim=16),
                      baseline=False, progress=False)
    assert report["best_layer"] in (0, 2) and set(report["layers"]) == {"0", "2"}
    for name in ("per_step", "prefill_only", "refined"):
        assert np.isfinite(report["mae"][name]) and report["mae_by_age"][name]
    assert report["geometric_bins"]["edges"][1] == 2.0
    assert np.isfinite(report["mae"]["refined_geometric"]) and report["better_bins"]
    assert Probe.load(tmp_path / "e" / "probe_geometric").bins.edges[1] == 2.0
    assert report["error_profile"]["cells"] and report["prompt_only"] == {"skipped": "disabled"}
    for key in ("error_correlation", "error_correlation_geometric"):
        assert set(report[key]) == {"lags", "corr_tokens", "note"}
    for f in ("report.json", "mae_by_layer.png", "mae_by_age.png", "confusion.png"):
        assert (tmp_path / "e" / f).exists()
    assert Probe.load(tmp_path / "e" / "probe").layer == report["best_layer"]

    # The trained predictors, unchanged, on another collection (here: other prompts).
    collect(tiny_model(), CharTokenizer(), [p + "x" for p in PROMPTS[:8]], tmp_path / "ood",
            CollectConfig(layers=[0, 2], samples_per_request=5, max_new_tokens=40,
                          max_running=8), progress=False)
    ood = evaluate_transfer(tmp_path / "e", tmp_path / "ood", tmp_path / "ood.json")
    assert ood["layer"] == report["best_layer"] and ood["requests"] == 8
    s = load_samples(tmp_path / "ood", ood["layer"])
    probe = Probe.load(tmp_path / "e" / "probe")
    with torch.no_grad():
        direct = expected_remaining(probe(torch.from_numpy(s.x)), probe.bins).numpy()
    assert ood["mae"]["per_step"] == pytest.approx(float(np.abs(direct - s.remaining).mean()))
    assert set(ood["mae"]) == {"per_step", "refined", "prefill_only", "per_step_geometric",
                               "refined_geometric"} and "skipped" in ood["prompt_only"]
    assert json.loads((tmp_path / "ood.json").read_text())["mae"] == ood["mae"]


def test_error_correlation_recovers_an_ar1_error() -> None:
    """Residuals whose normal scores follow an AR(1) in age give back its correlation length."""
    from trail.training.evaluate import error_correlation

    rng = np.random.default_rng(0)
    length, rows = 20.0, []
    for r in range(600):
        ages = np.sort(rng.choice(np.arange(1, 300), 16, replace=False))
        z = rng.standard_normal()
        prev = ages[0]
        for a in ages:
            rho = np.exp(-(a - prev) / length)
            z = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal()
            prev = a
            rows.append((r, a, 400.0 - a, (400.0 - a) * np.exp(0.3 * z)))
    request, age, true, pred = (np.array(c) for c in zip(*rows))
    out = error_correlation(pred, true, age, request, Bins.uniform(10, 512.0))
    assert 15 < out["corr_tokens"] < 27
    assert out["lags"][0]["lag_tokens"] == [1, 1] or out["lags"][0]["mean_lag"] < 4
    short = [x["correlation"] for x in out["lags"] if x["mean_lag"] < 4]
    assert all(c > 0.7 for c in short)


def saved_model_folder(path: pathlib.Path) -> pathlib.Path:
    """A save_pretrained folder with a real (word-level) Hugging Face tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<bos>", "<unk>", "a", "b", "c", "d", "e", "f", "g"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                                pad_token="<pad>", bos_token="<bos>")
    tiny_model().save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_cli_collect_train_eval(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    model_dir = saved_model_folder(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": " ".join("abcdefg"[(i + j) % 7] for j in range(1 + i % 6))}
            for i in range(30)] + [{"instruction": "a b", "input": "c"}]
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["collect", "--model", str(model_dir), "--prompts", str(prompts), "--out",
                 str(tmp_path / "c"), "--profile", "--samples", "3", "--max-new-tokens", "20",
                 "--checkpoint-every", "8", "--quiet"]) == 0
    assert "collected 31 of 31" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "c")["shards"]) == 4  # 8 + 8 + 8 + 7 requests
    assert main(["train-probe", "--data", str(tmp_path / "c"), "--layer", "1", "--out",
                 str(tmp_path / "p"), "--epochs", "2", "--hidden-dim", "16", "--quiet"]) == 0
    assert (tmp_path / "p" / "training_report.json").exists()
    assert main(["eval-probe", "--data", str(tmp_path / "c"), "--out", str(tmp_path / "e"),
                 "--epochs", "1", "--hidden-dim", "8", "--baseline", "off", "--quiet"]) == 0
    assert "best layer" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train-probe", "--data", str(tmp_path / "none"), "--layer", "0", "--out",
                 str(tmp_path / "p")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["collect", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--layers", "x,y", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_windowed_input_is_the_mean_of_the_last_states_and_is_evaluated(
        tmp_path: pathlib.Path) -> None:
    """window=3: each decode sample also stores the mean of its request's last 3 decode
    states (every state is sampled here, so the mean can be checked), the prompt-mean sample
    its own state; evaluate trains probes on [state, window mean] and reports them."""
    collect(tiny_model(), CharTokenizer(), PROMPTS * 2, tmp_path / "c",
            CollectConfig(layers=[1], samples_per_request=64, max_new_tokens=30, max_running=8,
                          window=3), progress=False)
    s = load_samples(tmp_path / "c", 1)
    assert s.xw is not None and s.xw.shape == s.x.shape
    np.testing.assert_array_equal(s.xw[s.prefill], s.x[s.prefill])
    for r in np.unique(s.request):
        rows = np.flatnonzero((s.request == r) & ~s.prefill)
        rows = rows[np.argsort(s.age[rows])]
        for j, row in enumerate(rows):
            expect = s.x[rows[max(0, j - 2):j + 1]].mean(0)
            np.testing.assert_allclose(s.xw[row], expect, rtol=1e-5, atol=1e-6)
    assert s.windowed().x.shape == (len(s.age), 2 * s.x.shape[1])
    report = evaluate(tmp_path / "c", tmp_path / "e", cfg=TrainConfig(epochs=2, hidden_dim=16),
                      baseline=False, progress=False)
    assert report["window"] == 3
    for name in ("refined_window", "refined_window_geometric", "per_step_window"):
        assert np.isfinite(report["mae"][name])
    assert Probe.load(tmp_path / "e" / "probe_window").hidden_size == 2 * s.x.shape[1]
    ood = evaluate_transfer(tmp_path / "e", tmp_path / "c")
    assert np.isfinite(ood["mae"]["refined_window_geometric"])


def test_prompts_from_a_json_array_as_alpaca_ships_them(tmp_path: pathlib.Path) -> None:
    from trail.training.collect import read_prompts

    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
            {"instruction": "Translate.", "input": " Hola ", "output": "Hello."},
            {"prompt": "Plain prompt."}]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    assert read_prompts(tmp_path / "a.json") == ["Name a colour.", "Translate.\n\nHola",
                                                 "Plain prompt."]
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_prompts(tmp_path / "l.jsonl") == read_prompts(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps(rows + [3]))
    with pytest.raises(ValueError, match=r"b.json\[3\]: expected a JSON object"):
        read_prompts(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[{\"prompt\": \"x\"},")
    with pytest.raises(ValueError, match="c.json: not a JSON array"):
        read_prompts(tmp_path / "c.json")


def test_chat_template_without_one_is_refused_before_anything_is_written(
        tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="no chat template"):
        collect(tiny_model(), CharTokenizer(), PROMPTS[:2], tmp_path / "c",
                CollectConfig(layers=[0], chat_template=True), progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists()
    collect(tiny_model(), CharTokenizer(), PROMPTS[:2], tmp_path / "c",  # then it works
            CollectConfig(layers=[0], max_new_tokens=4), progress=False)
    assert read_manifest(tmp_path / "c")["chat_template_used"] is False
