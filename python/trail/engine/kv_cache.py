"""Paged KV cache: fixed-size blocks per layer on the model's device, a block table per request.

Block size and pool size come from the scheduler's `block_size` / `kv_capacity_tokens`, so
the blocks the scheduler accounts for are exactly the blocks this pool holds. Swapped
requests' blocks are copied to host memory (bounded by the scheduler's swap capacity).
"""

from __future__ import annotations

import torch


class PagedKVCache:
    """K and V for every layer in [num_blocks, kv_heads, block_size, head_dim] blocks.

    Head-major blocks: one head's positions in a block are contiguous, so decode attention
    reads each block as one sequential run per head (vLLM's layout).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, block_size: int,
                 num_blocks: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if min(num_layers, num_kv_heads, head_dim, block_size, num_blocks) < 1:
            raise ValueError(f"PagedKVCache: sizes must be positive, got layers={num_layers} "
                             f"kv_heads={num_kv_heads} head_dim={head_dim} "
                             f"block_size={block_size} blocks={num_blocks}")
        self.block_size, self.num_blocks = block_size, num_blocks
        # One tensor: [layers, 2 (K, V), blocks, kv_heads, block_size, head_dim].
        self.data = torch.zeros(num_layers, 2, num_blocks, num_kv_heads, block_size, head_dim,
                                device=device, dtype=dtype)
        self._free = list(range(num_blocks - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}
        self.host: dict[int, torch.Tensor] = {}

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[blocks, kv_heads, block_size, head_dim] views of one layer's K and V."""
        kv = self.data[index]
        return kv[0], kv[1]

    def write(self, index: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new keys/values [T, kv_heads, head_dim] at flat slots [T] of layer `index`."""
        kc, vc = self.layer(index)
        block, offset = slots // self.block_size, slots % self.block_size
        kc[block, :, offset] = k.to(kc.dtype)
        vc[block, :, offset] = v.to(vc.dtype)

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

    def trim(self, rid: int, tokens: int) -> None:
        """Keep only the blocks `rid`'s first `tokens` tokens fill; free the rest (blocks a
        failed step allocated ahead for a token that was never committed)."""
        table = self.tables.get(rid)
        keep = -(-tokens // self.block_size)
        if table is not None and len(table) > keep:
            self._free.extend(reversed(table[keep:]))
            del table[keep:]

    def free(self, rid: int) -> None:
        """Release the device blocks of `rid` (and any host copy)."""
        self._free.extend(reversed(self.tables.pop(rid, [])))
        self.host.pop(rid, None)

    def swap_out(self, rid: int) -> None:
        """Copy `rid`'s blocks to host memory and free them on the device."""
        table = self.tables.get(rid, [])
        idx = torch.tensor(table, dtype=torch.long, device=self.data.device)
        # Copy first, release after: a failed copy leaves the request's blocks where they were.
        self.host[rid] = self.data[:, :, idx].to("cpu", copy=True)
        self.tables.pop(rid, None)  # a request may hold none yet (admitted, never run)
        self._free.extend(reversed(table))

    def swap_in(self, rid: int) -> None:
        """Copy `rid`'s host blocks back into freshly allocated device blocks."""
        saved = self.host[rid]
        n = saved.shape[2]
        if n > len(self._free):
            raise RuntimeError(f"KV pool exhausted swapping in request {rid}")
        table = self._free[len(self._free) - n:][::-1]
        idx = torch.tensor(table, dtype=torch.long, device=self.data.device)
        # Copy first, commit after: a failed copy leaves the host copy and the free list intact.
        self.data[:, :, idx] = saved.to(self.data.device)
        del self._free[len(self._free) - n:]
        self.tables[rid] = table
        del self.host[rid]

    def slots(self, rid: int, start: int, count: int) -> list[int]:
        """Flat slot index of each token position in [start, start + count) of `rid`."""
        table, bs = self.tables[rid], self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, start + count)]
