"""The model runner: one forward of a mixed prefill/decode batch through a Hugging Face model.

It owns the paged KV cache, routes the model's attention through the engine's paged
attention function, and captures layer L's hidden states with a forward hook (the output
of `layers[L]` is `hidden_states[L + 1]`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from trail.engine import attention
from trail.engine.kv_cache import PagedKVCache


@dataclass
class SeqInput:
    """One sequence of a forward: feed `tokens` at positions start.., sample after the last."""

    rid: int
    tokens: list[int]
    start: int
    prefill: bool        # a whole prefix from position 0 (prompt, or prompt + generated)
    mean_hidden: bool    # hand the probe the mean over these tokens (a prompt) or the last


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (what the hidden-state hook attaches to)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and n is not None and len(module) == n:
            return module
    raise ValueError(f"{type(model).__name__} has no list of {n} decoder layers to hook "
                     "(the engine needs one to capture hidden states)")


class ModelRunner:
    """Runs batches through `model` with a paged KV cache of `num_blocks` blocks."""

    def __init__(self, model: nn.Module, block_size: int, num_blocks: int,
                 hook_layers: tuple[int, ...] = ()) -> None:
        cfg = model.config
        for attr in ("num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size"):
            if getattr(cfg, attr, None) is None:
                raise ValueError(f"{type(model).__name__}'s config has no {attr}")
        self.model = model
        self.vocab_size = int(cfg.vocab_size)
        self.num_layers = int(cfg.num_hidden_layers)
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.kv = PagedKVCache(self.num_layers, kv_heads, head_dim, block_size, num_blocks,
                               self.device, self.dtype)
        self.layers = find_decoder_layers(model)
        for layer in sorted(set(hook_layers)):
            if not 0 <= layer < len(self.layers):
                raise ValueError(f"hidden-state layer {layer} is not one of the model's "
                                 f"{len(self.layers)} layers")
        # Lent, not taken (and only once every check has passed): the model's own attention
        # is kept for its own forwards (e.g. model.generate() while an engine exists) and
        # put back by close().
        before = getattr(model.config, "_attn_implementation", None) or "sdpa"
        if before == attention.NAME:  # another engine holds the model: keep what it recorded
            before = next((getattr(m, attention.FALLBACK_ATTR) for m in model.modules()
                           if hasattr(m, attention.FALLBACK_ATTR)), "sdpa")
        self._attn_before = before
        model.set_attn_implementation(attention.register())
        for module in model.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, attention.FALLBACK_ATTR, self._attn_before)
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks = [self.layers[layer].register_forward_hook(self._capture(layer))
                       for layer in sorted(set(hook_layers))]
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.use_kernel = True  # False: always gather + SDPA (the reference path)

    def _capture(self, layer: int):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self._captured[layer] = output[0] if isinstance(output, tuple) else output
        return hook

    def close(self) -> None:
        """Give the model back: remove the hidden-state hooks, restore its attention."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._attn_before is not None:
            self.model.set_attn_implementation(self._attn_before)
            for module in self.model.modules():
                if hasattr(module, attention.FALLBACK_ATTR):
                    delattr(module, attention.FALLBACK_ATTR)
            self._attn_before = None

    @torch.no_grad()
    def forward(self, seqs: list[SeqInput], want_hidden: bool = True
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits [n, vocab] at each sequence's last token, and hooked layers' states [n, D]
        (an empty dict when `want_hidden` is False: nothing is extracted)."""
        if self._attn_before is None:
            raise RuntimeError("this engine was closed: it has given the model back")
        if getattr(self.model.config, "_attn_implementation", None) != attention.NAME:
            self.model.set_attn_implementation(attention.NAME)  # another engine closed
        dev = self.device
        ids, pos, slots, last = [], [], [], []
        prefills, decode_rows, decode_seqs = [], [], []
        off = 0
        for s in seqs:
            n = len(s.tokens)
            ids.extend(s.tokens)
            pos.extend(range(s.start, s.start + n))
            slots.extend(self.kv.slots(s.rid, s.start, n))
            if s.prefill:
                prefills.append((off, n))
            else:
                decode_rows.append(off + n - 1)
                decode_seqs.append(s)
            off += n
            last.append(off - 1)
        tables, lens = self._decode_tables(decode_seqs)
        batch = attention.ForwardBatch(
            cache=self.kv, slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            prefills=prefills, decode_rows=torch.tensor(decode_rows, dtype=torch.long, device=dev),
            decode_tables=tables, decode_lens=lens, use_kernel=self.use_kernel)
        last_t = torch.tensor(last, dtype=torch.long, device=dev)
        kwargs = {"logits_to_keep": last_t} if self._logits_to_keep else {}
        self._captured = {}
        with attention.forward_context(batch):
            out = self.model(input_ids=torch.tensor([ids], device=dev),
                             position_ids=torch.tensor([pos], device=dev), use_cache=False,
                             **kwargs)
        if len(batch.calls) != self.num_layers:
            raise RuntimeError(f"{type(self.model).__name__} did not route attention through "
                               "transformers' AttentionInterface in every layer "
                               f"({len(batch.calls)} of {self.num_layers}); the engine cannot "
                               "serve it")
        logits = out.logits[0]
        if not self._logits_to_keep:
            logits = logits[last_t]
        hidden: dict[int, torch.Tensor] = {}
        if self._captured and want_hidden:
            if all(not s.mean_hidden for s in seqs):  # decode-only: the last tokens, one gather
                hidden = {layer: h[0][last_t] for layer, h in self._captured.items()}
            else:
                bounds, off = [], 0
                for s in seqs:
                    bounds.append((off, len(s.tokens), s.mean_hidden))
                    off += len(s.tokens)
                for layer, h in self._captured.items():
                    hidden[layer] = torch.stack([h[0][o:o + n].mean(dim=0) if mean
                                                 else h[0][o + n - 1] for o, n, mean in bounds])
        return logits.float(), hidden

    def _decode_tables(self, seqs: list[SeqInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """Block tables [n, W] and context lengths [n] of the decode rows (int32, host)."""
        if not seqs:
            return torch.zeros(0, 1, dtype=torch.int32), torch.zeros(0, dtype=torch.int32)
        width = max(len(self.kv.tables[s.rid]) for s in seqs)
        table = torch.zeros(len(seqs), width, dtype=torch.int32)
        for i, s in enumerate(seqs):
            t = self.kv.tables[s.rid]
            table[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
        return table, torch.tensor([s.start + 1 for s in seqs], dtype=torch.int32)
