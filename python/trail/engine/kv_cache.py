"""Paged KV cache: fixed-size blocks per layer on the model's device, a block table per request.

Block size and pool size come from the scheduler's `block_size` / `kv_capacity_tokens`, so
the blocks the scheduler accounts for are exactly the blocks this pool holds. Swapped
requests' blocks are copied to host memory (bounded by the scheduler's swap capacity).
"""

from __future__ import annotations

import torch


class PagedKVCache:
    """K and V for every layer in [num_blocks, block_size, kv_heads, head_dim] blocks."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, block_size: int,
                 num_blocks: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if min(num_layers, num_kv_heads, head_dim, block_size, num_blocks) < 1:
            raise ValueError(f"PagedKVCache: sizes must be positive, got layers={num_layers} "
                             f"kv_heads={num_kv_heads} head_dim={head_dim} "
                             f"block_size={block_size} blocks={num_blocks}")
        self.block_size, self.num_blocks = block_size, num_blocks
        # One tensor: [layers, 2 (K, V), blocks, block_size, kv_heads, head_dim].
        self.data = torch.zeros(num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim,
                                device=device, dtype=dtype)
        self._free = list(range(num_blocks - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}
        self.host: dict[int, torch.Tensor] = {}

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat [blocks·block_size, kv_heads, head_dim] views of one layer's K and V."""
        kv = self.data[index]
        return kv[0].flatten(0, 1), kv[1].flatten(0, 1)

    @property
    def used_blocks(self) -> int:
        """Blocks held on the device."""
        return self.num_blocks - len(self._free)

    def ensure(self, rid: int, tokens: int) -> None:
        """Give `rid` enough blocks for `tokens` tokens (never shrinks)."""
        table = self.tables.setdefault(rid, [])
        need = -(-tokens // self.block_size) - len(table)
        if need > len(self._free):
            raise RuntimeError(f"KV pool exhausted: request {rid} needs {need} more blocks, "
                               f"{len(self._free)} free (the scheduler's accounting was bypassed)")
        for _ in range(max(need, 0)):
            table.append(self._free.pop())

    def free(self, rid: int) -> None:
        """Release the device blocks of `rid` (and any host copy)."""
        self._free.extend(reversed(self.tables.pop(rid, [])))
        self.host.pop(rid, None)

    def swap_out(self, rid: int) -> None:
        """Copy `rid`'s blocks to host memory and free them on the device."""
        table = self.tables.pop(rid, [])
        idx = torch.tensor(table, dtype=torch.long, device=self.data.device)
        self.host[rid] = self.data[:, :, idx].to("cpu", copy=True)
        self._free.extend(reversed(table))

    def swap_in(self, rid: int) -> None:
        """Copy `rid`'s host blocks back into freshly allocated device blocks."""
        saved = self.host.pop(rid)
        n = saved.shape[2]
        if n > len(self._free):
            raise RuntimeError(f"KV pool exhausted swapping in request {rid}")
        table = [self._free.pop() for _ in range(n)]
        self.tables[rid] = table
        idx = torch.tensor(table, dtype=torch.long, device=self.data.device)
        self.data[:, :, idx] = saved.to(self.data.device)

    def slots(self, rid: int, start: int, count: int) -> list[int]:
        """Flat slot index of each token position in [start, start + count) of `rid`."""
        table, bs = self.tables[rid], self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, start + count)]
