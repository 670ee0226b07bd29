"""Preallocated KV cache shared by the encoder (the only writer) and the decoder (a reader).

Positions: all rows share one counter `length`; prompts of different lengths are left-padded, and `valid`
(B, max_length) marks the positions that hold real tokens so attention can skip the padding. A token's position id
is its index, as in the reference: RoPE only sees differences of positions, so a padded row computes what it
computes alone, up to rounding.

Layout per layer: keys and values of shape (B, kv_heads, slots, head_dim), allocated once. Global layers keep
every position (slots = max_length, position p in slot p). Sliding layers see at most the W - 1 positions before
a query or a canvas, so they keep a ring of `ring_length` = W - 1 + L slots (L the canvas length): position p
lives in slot p mod ring. That bounds their memory by the window instead of the context (the released shape:
20 KiB per token plus 0.24 GiB per sequence in bf16, instead of 220 KiB per token).

The slots of the positions past `length` are scratch space: the decoder writes its canvas keys and values there
for the duration of one forward (they are never part of the cache's content), which saves a concatenation per
layer and step. On a ring they overwrite positions more than W - 1 before the canvas, which nothing reads again.
`max_length` must leave room for one canvas beyond the committed tokens.
"""

from __future__ import annotations

import torch

from .config import ModelConfig


class CacheFullError(ValueError):
    """A prompt or generation that does not fit the cache it was given."""


def ring_length(config: ModelConfig, max_length: int) -> int:
    """Slots of a sliding layer: the window before a canvas plus the canvas, or every position if fewer."""
    return min(max_length, config.sliding_window - 1 + config.canvas_length)


def layer_slots(config: ModelConfig, layer: int, max_length: int) -> int:
    return ring_length(config, max_length) if config.is_sliding(layer) else max_length


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int, max_length: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"cache needs batch_size >= 1 and max_length >= 1 (got {batch_size}, {max_length})")
        if max_length > config.max_position_embeddings:
            raise ValueError(f"a cache of {max_length} positions exceeds the model's maximum context of "
                             f"{config.max_position_embeddings}")
        self.config, self.batch_size, self.max_length = config, batch_size, max_length
        self.ring = ring_length(config, max_length)
        self.keys, self.values = [], []
        for layer in range(config.num_layers):
            shape = (batch_size, config.layer_kv_heads(layer), layer_slots(config, layer, max_length),
                     config.layer_head_dim(layer))
            self.keys.append(torch.zeros(shape, dtype=dtype, device=device))
            self.values.append(torch.zeros(shape, dtype=dtype, device=device))
        self.valid = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)
        self.length = 0
        self.padded = False  # any invalid slot below `length`: attention then needs a key mask

    @staticmethod
    def nbytes(config: ModelConfig, batch_size: int, max_length: int, dtype: torch.dtype) -> int:
        """What `KVCache(config, batch_size, max_length, dtype)` allocates: keys, values and the valid mask."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        kv = sum(2 * config.layer_kv_heads(i) * config.layer_head_dim(i) * layer_slots(config, i, max_length)
                 for i in range(config.num_layers))
        return batch_size * (kv * itemsize + max_length)

    @property
    def device(self) -> torch.device:
        return self.valid.device

    def reserve(self, n: int, what: str) -> None:
        if self.length + n > self.max_length:
            raise CacheFullError(f"{what} needs {self.length + n} cache slots but the cache holds {self.max_length}; "
                                 f"create it with a larger max_length")

    def reset(self) -> None:
        """Forget everything (the buffers are reused, nothing is reallocated)."""
        self.valid.zero_()
        self.length = 0
        self.padded = False

    def append_slots(self, n: int, valid: torch.Tensor | None = None) -> int:
        """Claim n slots for (B, n) tokens; `valid` (B, n) marks the real ones (None: all). Returns the first."""
        self.reserve(n, f"encoding {n} tokens")
        start = self.length
        if valid is None:
            self.valid[:, start:start + n] = True
        else:
            if valid.shape != (self.batch_size, n):
                raise ValueError(f"attention_mask has shape {tuple(valid.shape)}, expected {(self.batch_size, n)}")
            valid = valid.to(device=self.device, dtype=torch.bool)
            self.valid[:, start:start + n] = valid
            self.padded = self.padded or not bool(valid.all())
        self.length = start + n
        return start

    def ring_positions(self, end) -> torch.Tensor:
        """(ring,) the position each sliding-layer slot holds once positions [0, end) are written (an int or a
        0-d tensor): the latest p < end with p = slot mod ring; negative where the slot was never written."""
        slot = torch.arange(self.ring, device=self.device)
        return slot + self.ring * torch.div(end - 1 - slot, self.ring, rounding_mode="floor")

    @classmethod
    def over(cls, config: ModelConfig, keys: list[torch.Tensor], values: list[torch.Tensor], valid: torch.Tensor,
             length: int = 0, padded: bool = False) -> "KVCache":
        """A cache over existing tensors, not copied (`valid` (B, max_length) gives the shape)."""
        cache = object.__new__(cls)
        cache.config, (cache.batch_size, cache.max_length) = config, valid.shape
        cache.ring = ring_length(config, cache.max_length)
        cache.keys, cache.values, cache.valid = keys, values, valid
        cache.length, cache.padded = length, padded
        return cache

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A copy holding only `rows` (1-D index), for running the decoder on the rows still working."""
        return KVCache.over(self.config, [k.index_select(0, rows) for k in self.keys],
                            [v.index_select(0, rows) for v in self.values], self.valid.index_select(0, rows),
                            self.length, self.padded)
