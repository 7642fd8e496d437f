"""The demo package: language, tokenizer, tiny training runs, caching (all fast)."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from trail import demo
from trail.models import demo as demo_model
from trail.models.demo import cache, train
from trail.models.demo import language as lang
from trail.models.demo.language import check_answer, make_rng, sample_answer, sample_prompt
from trail.models.demo.tokenizer import build_tokenizer, decode_answer, encode_prompt
from trail.fileio import ordinary_mode
from transformers import AutoTokenizer

# One thread: two OpenMP threads stall badly when the 2 cores are shared (parallel tests).
TINY = dict(hidden_size=32, num_layers=2, max_batch_tokens=512, threads=1)


def _samples(seed: int, n: int) -> list[tuple[lang.Prompt, str]]:
    rng = make_rng(seed)
    out = []
    for _ in range(n):
        p = sample_prompt(rng)
        out.append((p, sample_answer(p, rng)))
    return out


def test_language_is_deterministic_for_a_seed() -> None:
    assert _samples(3, 200) == _samples(3, 200)
    assert _samples(3, 200) != _samples(4, 200)


def test_vocabulary_is_unique_and_about_270_words() -> None:
    words = lang.vocabulary()
    assert len(words) == len(set(words))
    assert 240 <= len(words) <= 300


def test_sampled_answers_follow_the_grammar() -> None:
    seen = set()
    for p, a in _samples(0, 3000):
        w = a.split()
        seen.add(p.kind)
        assert lang.parse_prompt(p.text) == p
        c = check_answer(p, a)
        assert c.grammatical and c.well_formed, (p.text, a)
        assert len(w) + 1 in lang.length_distribution(p)  # +1: EOS
        if p.kind == "count":
            assert w[0] == str(p.start) and w[-1] == "0"
        elif p.kind == "list":
            n = int(w[2])
            assert w[5::3] == [str(k) for k in range(n, 0, -1)]   # N items, counted down to 1
            assert all(lang.ITEM_CATEGORY[i] == p.category for i in w[6::3])
            lo, hi = p.count_range()
            assert lo <= n <= hi and c.n == n
        elif p.kind == "story":
            n = int(w[2])
            assert [w[i + 1] for i, x in enumerate(w) if x == "day"] == \
                [str(k) for k in range(n, 0, -1)]
            assert w[-3:] == ["the", "end", "."]
    assert seen == set(lang.KINDS)


def test_check_answer_rejects_broken_answers() -> None:
    p = lang.parse_prompt("list some fruits")
    good = "here are 2 fruits : 2 apple , 1 pear ."
    assert check_answer(p, good).well_formed
    assert not check_answer(p, "here are 3 fruits : 2 apple , 1 pear .").grammatical
    assert not check_answer(p, "here are 2 fruits : 2 apple , 2 pear .").grammatical
    wrong_cat = check_answer(p, "here are 2 fruits : 2 apple , 1 dog .")
    assert wrong_cat.grammatical and not wrong_cat.well_formed
    assert not check_answer(lang.parse_prompt("count down from 3"), "3 2 1").grammatical
    with pytest.raises(ValueError, match="not a prompt"):
        lang.parse_prompt("count up to 5")


def test_conditional_length_distribution_is_exact() -> None:
    p = lang.parse_prompt("tell a short story about anna")
    dist = lang.length_distribution(p)
    assert abs(sum(dist.values()) - 1) < 1e-12
    rng = make_rng(0)
    lengths = [len(sample_answer(p, rng).split()) + 1 for _ in range(20000)]
    assert abs(sum(lengths) / len(lengths) - lang.conditional_length_mean(p)) < 0.5
    assert lang.conditional_length_median(lang.parse_prompt("count down from 7")) == 9


def test_tokenizer_round_trip_and_prompt_framing(tmp_path) -> None:
    tok = build_tokenizer()
    text = "tell a long story about emma"
    ids = encode_prompt(tok, text)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.sep_token_id and len(ids) == 8
    assert tok(text)["input_ids"] == ids  # plain tokenization gives the training framing
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids and encode_prompt(loaded, text) == ids
    assert loaded.get_vocab() == tok.get_vocab() and len(loaded) == len(lang.vocabulary())
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.sep_token_id,
            loaded.eos_token_id) == (0, 1, 2, 3)
    answer = "here are 1 cities : 1 oslo ."
    ans_ids = loaded(answer, add_special_tokens=False)["input_ids"]
    assert decode_answer(loaded, ans_ids + [loaded.eos_token_id, 7]) == answer
    with pytest.raises(ValueError, match="outside the demo vocabulary"):
        encode_prompt(loaded, "tell a story about zeus")


def test_prompts_file(tmp_path) -> None:
    path = demo_model.prompts_file(tmp_path / "p.jsonl", 25, seed=5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"prompt": p.text} for p in demo_model.sample_prompts(25, seed=5)]


def test_training_batches_mask_the_prompt() -> None:
    tok = build_tokenizer()
    ids, target = next(train.training_batches(tok, seed=0, max_tokens=512, chunk=64))
    assert ids.numel() <= 512
    for row, tgt in zip(ids.tolist(), target.tolist()):
        sep = row.index(tok.sep_token_id)
        assert all(t == train.IGNORE for t in tgt[:sep])       # no loss on the prompt
        assert tgt[sep] == row[sep + 1]                         # first answer token
        end = row.index(tok.eos_token_id)
        assert tgt[end - 1] == tok.eos_token_id and all(t == train.IGNORE for t in tgt[end:])


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return train.train_demo_model(seed=1, steps=25, progress=False, **TINY)


def test_tiny_training_is_deterministic_and_generates(tiny) -> None:
    model, tok, report = tiny
    again, _, _ = train.train_demo_model(seed=1, steps=25, progress=False, **TINY)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert report["steps"] == 25 and report["params"] == sum(p.numel() for p in model.parameters())
    assert report["params"] <= 5_000_000
    prompt = torch.tensor([encode_prompt(tok, "count down from 4")])
    out = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt.shape[1]


def test_measure_lengths_through_the_engine(tiny) -> None:
    model, tok, _ = tiny
    kw = dict(n=12, seed=2, max_new_tokens=20, max_running=8, progress=False)
    r = demo.measure_lengths(model, tok, **kw)
    assert len(r["samples"]) == 12 and 1 <= r["length"]["min"] <= r["length"]["max"] <= 20
    assert 0 <= r["well_formed_fraction"] <= 1
    assert [s["length"] for s in demo.measure_lengths(model, tok, **kw)["samples"]] == \
        [s["length"] for s in r["samples"]]  # seeded sampling: same answers again
    prompt = torch.tensor([encode_prompt(tok, "count down from 4")])
    model.generate(prompt, max_new_tokens=3, do_sample=False)  # the model is handed back usable


def test_prompt_only_share_estimator() -> None:
    from trail.demo.measure import prompt_only_share

    # Groups that explain everything, and groups that explain nothing.
    assert prompt_only_share([1, 1, 5, 5], ["a", "a", "b", "b"])["plug_in"] == 1.0
    s = prompt_only_share([1, 5, 1, 5], ["a", "a", "b", "b"])
    assert s["plug_in"] == 0.0 and s["epsilon_squared"] < 0


def test_load_demo_trains_once_then_loads_from_cache(tmp_path, monkeypatch) -> None:
    calls = []
    real = train.train_demo_model

    def quick(seed: int = 0, progress: bool = True, **kw):  # noqa: ANN202
        calls.append(seed)
        return real(seed=seed, steps=5, progress=False, **TINY)

    monkeypatch.setattr(train, "train_demo_model", quick)
    model, tok = demo_model.load_demo(seed=7, cache_dir=str(tmp_path), progress=False)
    path = demo_model.demo_path(7, tmp_path)
    assert path.is_dir() and (path / "model.safetensors").is_file() and calls == [7]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp folders left behind
    # readable like any other file, not the 0700/0600 of mkdtemp and safetensors' temp files
    assert stat.S_IMODE(path.stat().st_mode) == ordinary_mode(directory=True)
    assert stat.S_IMODE((path / "model.safetensors").stat().st_mode) == ordinary_mode()
    assert demo_model.load_report(7, str(tmp_path))["seed"] == 7
    model2, tok2 = demo_model.load_demo(seed=7, cache_dir=str(tmp_path), progress=False)
    assert calls == [7]  # second call loaded from the cache
    assert next(model2.parameters()).dtype == torch.float32
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert tok2("count down from 9")["input_ids"] == encode_prompt(tok, "count down from 9")
    with pytest.raises(FileNotFoundError):
        demo_model.load_demo(seed=8, cache_dir=str(tmp_path), train_if_missing=False)


def test_load_demo_uses_trail_cache_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRAIL_CACHE", str(tmp_path))
    assert cache.demo_path(3) == tmp_path / f"demo-v{train.FORMAT_VERSION}-seed3"


def test_interrupted_save_leaves_no_cache(tmp_path, tiny, monkeypatch) -> None:
    model, tok, report = tiny

    def boom(*a, **k):  # noqa: ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(tok, "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.save_demo(model, tok, report, tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []
