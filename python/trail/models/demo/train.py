"""Train the demo model: a ~0.23M-parameter Llama on the synthetic language, in ~3 CPU minutes.

The recipe is the one a prototype measured to work on 2 CPU cores (docs/demo_model.md):
fresh samples every chunk (no epochs), length-sorted batches of at most 2,048 padded tokens,
loss on the answer and its EOS only, AdamW with warm-up and cosine decay. Smaller models
do better at a fixed few minutes (the task is data-limited), so the model is tiny.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from typing import Any, Iterator

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trail.cpu import threads as cpu_threads
from trail.models.demo.language import TRAIN_MIX, make_rng, sample_answer, sample_prompt
from trail.models.demo.tokenizer import build_tokenizer
from trail.provenance import describe
from trail.progress import progress_bar

FORMAT_VERSION = 2          # bump when the language, tokenizer or recipe changes (2: 1 thread)
DEFAULT_STEPS = 2700
HIDDEN_SIZE, NUM_LAYERS = 64, 4  # the demo model's width and depth
IGNORE = -100


def demo_config(vocab_size: int, hidden_size: int = HIDDEN_SIZE, num_layers: int = NUM_LAYERS,
                num_heads: int = 4) -> LlamaConfig:
    """The demo model's architecture (special token ids are the tokenizer's)."""
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                       intermediate_size=3 * hidden_size, num_hidden_layers=num_layers,
                       num_attention_heads=num_heads, num_key_value_heads=num_heads,
                       max_position_embeddings=512, tie_word_embeddings=True,
                       pad_token_id=0, bos_token_id=1, eos_token_id=3)


def training_batches(tokenizer: PreTrainedTokenizerFast, seed: int, max_tokens: int = 2048,
                     chunk: int = 2048) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (input ids, targets) batches of fresh samples; targets mask the prompt."""
    vocab = tokenizer.get_vocab()
    bos, sep, eos, pad = (tokenizer.bos_token_id, tokenizer.sep_token_id,
                          tokenizer.eos_token_id, tokenizer.pad_token_id)
    rng = make_rng(f"demo-train-{seed}")  # a stream apart from the prompts measure.py draws
    while True:
        seqs = []
        for _ in range(chunk):
            p = sample_prompt(rng, TRAIN_MIX)
            prompt = [bos, *(vocab[w] for w in p.text.split()), sep]
            seqs.append((prompt + [vocab[w] for w in sample_answer(p, rng).split()] + [eos],
                         len(prompt)))
        # Sorting by length keeps padding small; shuffling the batches keeps the order random.
        seqs.sort(key=lambda s: len(s[0]))
        batches, cur = [], []
        for s in seqs:
            if cur and (len(cur) + 1) * len(s[0]) > max_tokens:
                batches.append(cur)
                cur = []
            cur.append(s)
        batches.append(cur)
        rng.shuffle(batches)
        for b in batches:
            width = len(b[-1][0])
            ids = torch.full((len(b), width), pad, dtype=torch.long)
            target = torch.full((len(b), width - 1), IGNORE, dtype=torch.long)
            for i, (seq, n_prompt) in enumerate(b):
                ids[i, :len(seq)] = torch.tensor(seq)
                # Position j predicts token j+1: learn the answer tokens and EOS only.
                target[i, n_prompt - 1:len(seq) - 1] = torch.tensor(seq[n_prompt:])
            yield ids, target


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Fixed threads and deterministic kernels while training; the caller's settings after."""
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with cpu_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(old_det)


def train_demo_model(seed: int = 0, steps: int | None = None, threads: int = 1,
                     progress: bool = True, *, hidden_size: int = HIDDEN_SIZE,
                     num_layers: int = NUM_LAYERS,
                     max_batch_tokens: int = 2048, lr: float = 6e-3
                     ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict[str, Any]]:
    """Train the demo model from scratch; same seed and threads give bit-identical weights.

    One thread by default: on 2 cores it trains about as fast as two threads that sleep while
    waiting (OMP_WAIT_POLICY=PASSIVE) and slows least when other processes share the cores
    (bench/results/omp_settings_2026-11-30.md).
    """
    steps = DEFAULT_STEPS if steps is None else steps  # read at call time: tests shorten it
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tokenizer = build_tokenizer()
    with _torch_settings(threads):
        torch.manual_seed(seed)
        config = demo_config(len(tokenizer), hidden_size, num_layers)
        model = LlamaForCausalLM(config)
        model.config.use_cache = False
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.98))
        warm = min(30, max(1, steps // 10))

        def schedule(s: int) -> float:  # linear warm-up, cosine down to 10% of the peak
            if s < warm:
                return (s + 1) / warm
            return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        bar = progress_bar(steps, "training demo model", "step", progress)
        curve, recent, tokens, answer_tokens = [], [], 0, 0
        t0 = time.perf_counter()
        model.train()
        for step, (ids, target) in zip(range(steps), training_batches(
                tokenizer, seed, max_batch_tokens)):
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tokens += ids.numel()
            answer_tokens += int((target != IGNORE).sum())
            recent.append(loss.detach().item())
            if (step + 1) % 50 == 0 or step + 1 == steps:
                curve.append([step + 1, sum(recent) / len(recent)])
                bar.set_postfix(loss=f"{curve[-1][1]:.3f}")
                recent = []
            bar.update(1)
        train_time = time.perf_counter() - t0
        bar.close()
    model.eval()
    model.config.use_cache = True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    report = {
        "format_version": FORMAT_VERSION, "seed": seed, "steps": steps, "threads": threads,
        "max_batch_tokens": max_batch_tokens, "peak_lr": lr,
        "params": sum(p.numel() for p in model.parameters()),
        "hidden_size": hidden_size, "num_layers": num_layers, "vocab_size": len(tokenizer),
        "train_time_s": round(train_time, 2), "padded_tokens": tokens,
        "answer_tokens": answer_tokens, "final_loss": curve[-1][1], "loss_curve": curve,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "machine": describe(),
    }
    return model, tokenizer, report
