"""A tiny random Llama that vLLM's CPU build can serve, for tests and smoke runs.

vLLM's CPU attention needs a head dimension of at least 32 and KV blocks in multiples of 32,
which the project's demo model (head dim 16) does not meet: this one has hidden 128 and 4
heads, with a character-level tokenizer, built offline in a second.
"""

from __future__ import annotations

import pathlib

HIDDEN = 128


def build_tiny_llama(out: str | pathlib.Path, seed: int = 0, layers: int = 4) -> pathlib.Path:
    """Save a random float32 LlamaForCausalLM and its tokenizer into `out`; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = pathlib.Path(out)
    specials = ["<pad>", "<bos>", "<sep>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>", unk_token="<unk>",
                            model_max_length=512).save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=HIDDEN, intermediate_size=256,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, initializer_range=0.3, bos_token_id=1,
                      eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).to(torch.float32).eval().save_pretrained(out)
    return out
