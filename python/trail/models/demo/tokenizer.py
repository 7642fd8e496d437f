"""The demo language's word-level tokenizer, as a real Hugging Face tokenizer.

One token per whitespace-separated word. A post-processor adds the framing the model was
trained on, so `tokenizer(prompt_text)["input_ids"]` is `<bos> prompt words <sep>` — exactly
what `encode_prompt` returns, and what any caller that tokenizes a plain prompt (for example
`trail collect` reading a JSONL file of prompts) gets. The answer follows `<sep>` and ends
with `<eos>`. Saved with `save_pretrained`, it loads with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from trail.models.demo.language import vocabulary

PAD, BOS, SEP, EOS, UNK = "<pad>", "<bos>", "<sep>", "<eos>", "<unk>"


def build_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A fresh tokenizer over the demo vocabulary (ids = positions in `vocabulary()`)."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {SEP}", special_tokens=[(BOS, vocab[BOS]), (SEP, vocab[SEP])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, sep_token=SEP, unk_token=UNK,
                                   model_max_length=model_max_length)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt as the model was trained on them: `<bos> words <sep>`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.unk_token_id in ids:
        bad = [w for w in text.split() if w not in tokenizer.get_vocab()]
        raise ValueError(f"words outside the demo vocabulary: {bad}")
    return [tokenizer.bos_token_id, *ids, tokenizer.sep_token_id]


def decode_answer(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Answer text of generated ids: words up to (not including) the first `<eos>`."""
    ids = list(ids)
    if tokenizer.eos_token_id in ids:
        ids = ids[:ids.index(tokenizer.eos_token_id)]
    # Special tokens stay visible: a stray <sep> or <pad> inside an answer is an error.
    return " ".join(tokenizer.convert_ids_to_tokens(ids))
