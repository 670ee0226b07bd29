"""The DiffusionGemma text model: one Gemma 4 MoE weight stack used twice (DESIGN.md section 1).

- `encode`: causal attention over new tokens; the only writer of the KV cache.
- `denoise`: bidirectional attention of a canvas over `[cached keys ; canvas keys]`, with the self-conditioning
  block on its input; reads the cache and leaves it unchanged.

Every numeric step follows the reference (transformers 5.23 `models/diffusion_gemma`), including where it
computes in float32 (norms, RoPE tables, router softmax, logits), so that float64 runs agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache
from .config import GENERATION_DEFAULTS, SLIDING, ModelConfig
from .layers import RMSNorm, apply_rope, rms_norm
from .moe import Experts
from .sampling import tied_logits
from .vision import ImageError, Vision, VisionConfig, place_images, prefill_pieces

# kv_fn(layer, k, v) -> (keys, values, mask): how a layer's new keys/values meet the ones it attends to.
KVFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


@dataclass
class PassPlan:
    """A pass's positions, RoPE tables and masks (`DiffusionGemma.plan`)."""
    start: int | torch.Tensor
    n: int
    end: int
    positions: torch.Tensor  # (1 or B, n)
    tables: dict  # layer kind -> (cos, sin)
    masks: dict  # layer kind -> mask or None
    wide: bool = False  # more new tokens than a ring keeps for them: sliding layers attend to [ring ; new keys]


def keys_visible(anchor, keys, real, own, window: int | None) -> torch.Tensor:
    """The one rule of which keys a query sees (broadcast over its tensor arguments): the keys it owns (itself,
    for the causal encoder; its whole canvas, for the decoder) and the real tokens before its anchor (itself, or
    its canvas's first position); on a sliding layer only the `window` - 1 positions before the anchor."""
    seen = real & (keys < anchor)
    if window is not None:
        seen = seen & (keys >= anchor - (window - 1))
    return seen | own


def rope_inv_freq(config: ModelConfig, kind: str) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,) in float32. "proportional" rotates the first
    partial_rotary_factor of the pairs with exponents over the full head_dim and leaves the rest unrotated."""
    params = config.rope_parameters[kind]
    head_dim = config.head_dim if kind == SLIDING else config.global_head_dim
    base, factor = params["rope_theta"], params.get("partial_rotary_factor", 1.0)
    if params.get("rope_type", "default") == "proportional":
        rotated, denom = int(factor * head_dim // 2), head_dim
    else:
        denom = int(head_dim * factor)
        rotated = denom // 2
    inv = 1.0 / (base ** (torch.arange(0, 2 * rotated, 2, dtype=torch.int64).float() / denom))
    return torch.cat([inv, torch.zeros(head_dim // 2 - rotated)]) / params.get("factor", 1.0)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """(B, n) positions -> cos, sin of shape (B, n, 1, head_dim), computed in float32 then cast."""
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    """Sliding layers: their own V projection. Global layers: V is K before k_norm and RoPE (no v_proj)."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        H, self.head_dim = config.hidden_size, config.layer_head_dim(layer)
        self.num_heads, self.num_kv_heads = config.num_heads, config.layer_kv_heads(layer)
        self.global_keys = not config.is_sliding(layer)
        self.eps = config.rms_norm_eps
        self.q_proj = nn.Linear(H, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(H, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(H, self.num_kv_heads * self.head_dim, bias=False) if config.is_sliding(layer) else None
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, H, bias=False)
        self.q_norm = RMSNorm(self.head_dim, self.eps)
        self.k_norm = RMSNorm(self.head_dim, self.eps)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """(B, n, H) -> q (B, heads, n, D), k and v (B, kv_heads, n, D)."""
        B, n, _ = x.shape
        q = apply_rope(self.q_norm(self.q_proj(x).view(B, n, -1, self.head_dim)), cos, sin)
        k_raw = self.k_proj(x).view(B, n, -1, self.head_dim)
        v = rms_norm(self.v_proj(x).view(B, n, -1, self.head_dim) if self.v_proj is not None else k_raw, None, self.eps)
        k = apply_rope(self.k_norm(k_raw), cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, q, keys, values, mask, ends: tuple[int, ...] | None = None) -> torch.Tensor:
        """`ends`: rows apart (see `DiffusionGemma.denoise_static`): on a global layer row b attends on its own to
        keys [0, ends[b]), the keys it would have alone. (The CPU kernel's sums change with the key count, even
        over masked keys.)"""
        B, _, n, _ = q.shape
        gqa = self.num_heads != self.num_kv_heads
        if ends is None or not self.global_keys:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0, enable_gqa=gqa)
        else:
            out = torch.cat([F.scaled_dot_product_attention(
                q[b:b + 1], keys[b:b + 1, :, :e], values[b:b + 1, :, :e], scale=1.0, enable_gqa=gqa,
                attn_mask=None if mask is None else mask[min(b, mask.shape[0] - 1)][None, ..., :e])
                for b, e in enumerate(ends)])
        return self.o_proj(out.transpose(1, 2).reshape(B, n, -1))


class MLP(nn.Module):
    """Gated GeLU(tanh) feed-forward; also the body of the self-conditioning block."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Router(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.eps, self.k = config.rms_norm_eps, config.top_k_experts
        self.root = config.hidden_size ** -0.5
        self.proj = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(config.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(config.num_experts))

    def forward(self, x: torch.Tensor):
        """(T, H) raw residual -> top-k weights (T, k) float32 and expert ids (T, k)."""
        scores = self.proj(rms_norm(x, None, self.eps) * self.scale * self.root)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        weights, index = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[index], index


class Block(nn.Module):
    """Attention, then a dense MLP and an MoE branch side by side; each output normed, summed, normed again."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.index = layer
        self.self_attn = Attention(config, layer)
        self.mlp = MLP(H, config.intermediate_size)
        self.router = Router(config)
        self.experts = Experts(config)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "post_feedforward_layernorm_1", "pre_feedforward_layernorm_2",
                     "post_feedforward_layernorm_2"):
            setattr(self, name, RMSNorm(H, eps))
        self.register_buffer("layer_scalar", torch.ones(1))  # decoder's
        self.register_buffer("encoder_layer_scalar", torch.ones(1))  # the encoder keeps its own

    def forward(self, x, cos, sin, kv_fn: KVFn, encoder: bool, ends: tuple[int, ...] | None = None) -> torch.Tensor:
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        keys, values, mask = kv_fn(self.index, k, v)
        x = x + self.post_attention_layernorm(self.self_attn.attend(q, keys, values, mask, ends))
        dense = self.post_feedforward_layernorm_1(self.mlp(self.pre_feedforward_layernorm(x)))
        flat = x.reshape(-1, x.shape[-1])
        weights, index = self.router(flat)
        moe = self.post_feedforward_layernorm_2(
            self.experts(self.pre_feedforward_layernorm_2(flat), index, weights, 1 if ends is None else len(ends))
            .view_as(x))
        x = x + self.post_feedforward_layernorm(dense + moe)
        return x * (self.encoder_layer_scalar if encoder else self.layer_scalar)


class SelfConditioning(nn.Module):
    """Turns the previous step's logits (as soft embeddings) into a signal added to the canvas embeddings."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pre_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.body = MLP(config.hidden_size, config.intermediate_size)
        self.eps = config.rms_norm_eps

    def forward(self, embeds: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        if soft is None:  # first step: a zero signal, and the body maps zero to exactly zero (no biases)
            return rms_norm(embeds, None, self.eps)
        return rms_norm(embeds + self.body(self.pre_norm(soft)), None, self.eps)


class DiffusionGemma(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_conditioning = SelfConditioning(config)
        # the image path (dgemma.vision); the loader drops it for a checkpoint that holds no tower weights
        self.vision = Vision(VisionConfig.from_hf_dict(config.vision_config), config.hidden_size) \
            if config.vision_config else None
        self.kinds = sorted(set(config.layer_types))
        for kind in self.kinds:
            self.register_buffer(f"inv_freq_{kind}", rope_inv_freq(config, kind), persistent=False)
        self._scale_cache: dict = {}
        self.prefill_chunk = 2048  # encode() splits longer inputs (without autograd) into chunks of this many tokens
        # where generation starts: the reference's defaults, or a loaded checkpoint's generation_config.json
        self.generation_defaults = dict(GENERATION_DEFAULTS)
        self.checkpoint_dir = None  # the directory it was loaded from (its tokenizer.json serves json_schema)
        self._tokenizer = None

    # --- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_preset, dtype: torch.dtype = torch.float32, device="cpu",
                        seed: int = 0, revision: str | None = None, quantize: str | None = None,
                        group_size: int | None = None, progress: bool = False) -> "DiffusionGemma":
        """A checkpoint directory in the reference layout (or dgemma's quantized one), a preset name (random
        weights drawn from `seed`), or a Hugging Face Hub id (`org/name`, at `revision` or `org/name@revision`)
        through the hub's cache. `quantize`: a dgemma.quantize scheme (int8, int4, fp8, mixed) applied weight by
        weight while loading or drawing, with `group_size` for int4 (default: the largest of 128, 64, 32 that
        divides every width). `progress`: a progress bar over the tensors read, on stderr."""
        from .checkpoint import load_model
        return load_model(cls, path_or_preset, dtype=dtype, device=device, seed=seed, revision=revision,
                          quantize=quantize, group_size=group_size, progress=progress)

    def save_pretrained(self, path, max_shard_bytes: int = 5 * 2**30) -> None:
        from .checkpoint import save_model
        save_model(self, path, max_shard_bytes=max_shard_bytes)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, assign=None) -> None:
        """The reference's initialisation: normal(0, initializer_range) matrices, unit norms and scales, drawn one
        weight at a time in parameter order. A quantized module stands for the float weights it holds; the
        loader's `assign(name, tensor)` takes each drawn weight (and quantizes those), so a quantized preset is
        the unquantized one quantized, without ever holding it whole. By default a weight goes into its
        parameter."""
        std = self.config.initializer_range
        for name, shape, like in self.weight_specs():
            t = torch.empty(shape, dtype=like.dtype, device=like.device)
            t.normal_(0.0, std, generator=generator) if len(shape) >= 2 else t.fill_(1.0)
            if name == "embed_tokens.weight":
                t[self.config.pad_token_id].zero_()
            if assign is None:
                self.get_parameter(name).copy_(t)
            else:
                assign(name, t)
        for layer in self.layers:
            layer.layer_scalar.fill_(1.0)
            layer.encoder_layer_scalar.fill_(1.0)
        if self.vision is not None:
            self.vision.vision_tower.reset_buffers(stored=True)
        self.reset_buffers()

    def weight_specs(self):
        """(name, shape, a tensor of its dtype and device) of every weight the reference initialises, in the
        unquantized model's parameter order; a quantized module's (see dgemma.quantize) in its place."""
        for prefix, module in self.named_modules():
            own = getattr(module, "shapes", None)  # a dgemma.quantize.Quantized module: its float weights
            items = ((n, s, getattr(module, n + "_scale")) for n, s in own.items()) if own is not None else \
                ((n, p.shape, p) for n, p in module.named_parameters(recurse=False))
            for n, shape, like in items:
                yield f"{prefix}.{n}" if prefix else n, tuple(shape), like

    def reset_buffers(self) -> None:
        """Recompute derived buffers (after building on the meta device)."""
        device = self.embed_tokens.weight.device
        for kind in self.kinds:
            setattr(self, f"inv_freq_{kind}", rope_inv_freq(self.config, kind).to(device))
        if self.vision is not None:
            self.vision.vision_tower.reset_buffers()
        self._scale_cache.clear()

    def _apply(self, fn, recurse=True):
        """Keep RoPE tables in float32 whatever `.to(dtype)` does to the weights."""
        result = super()._apply(fn, recurse)
        self.reset_buffers()
        return result

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        return KVCache(self.config, batch_size, max_length, dtype=self.dtype, device=self.device)

    # --- shared pieces -----------------------------------------------------------------------------------
    def embed_scale(self) -> torch.Tensor:
        """sqrt(hidden) rounded to the weights' dtype, as the reference's buffer is (53.07 -> 53.0 in bf16)."""
        key = (self.dtype, self.device)
        if key not in self._scale_cache:
            self._scale_cache[key] = torch.tensor(self.config.hidden_size ** 0.5, dtype=self.dtype,
                                                  device=self.device)
        return self._scale_cache[key]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids) * self.embed_scale()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return tied_logits(hidden, self.embed_tokens.weight, self.config.final_logit_softcapping)

    def soft_embeddings(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        w = self.embed_tokens.weight
        soft = torch.matmul(logits.softmax(dim=-1, dtype=torch.float32).to(w.dtype), w) * self.embed_scale()
        if mask is not None:  # per-example switch: False rows get exactly the "no previous logits" signal
            soft = soft * mask.to(soft.dtype)[:, None, None]
        return soft

    def rope(self, positions: torch.Tensor) -> dict:
        """Per layer kind, the RoPE tables (cos, sin) of (B, n) positions."""
        return {kind: rope_tables(positions, getattr(self, f"inv_freq_{kind}"), self.dtype) for kind in self.kinds}

    def run_layers(self, x: torch.Tensor, positions: torch.Tensor, kv_fn: KVFn, encoder: bool,
                   checkpoint: bool = False, tables: dict | None = None,
                   ends: tuple[int, ...] | None = None) -> torch.Tensor:
        """The weight stack over (B, n, H) inputs at (B, n) positions; returns final-normed hidden states.
        `tables`: the positions' `rope`, when already made. `ends`: rows apart (`denoise_static`)."""
        tables = tables or self.rope(positions)
        for layer in self.layers:
            cos, sin = tables[self.config.layer_types[layer.index]]
            if checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, kv_fn, encoder, ends, use_reentrant=False)
            else:
                x = layer(x, cos, sin, kv_fn, encoder, ends)
        return self.norm(x)

    # --- attention: one mask rule, one pass for encoder and decoder ----------------------------------------
    def wide_pass(self, cache: KVCache, start, n: int, causal: bool) -> bool:
        """Whether n new tokens outgrow what a sliding layer's ring keeps for them (a prompt piece holding a long
        image, which cannot be split): they then attend to [the ring as it was ; their own keys]."""
        return (causal and isinstance(start, int) and cache.ring < cache.max_length
                and n > cache.ring - (self.config.sliding_window - 1))

    def attention_masks(self, cache: KVCache, start, n: int, causal: bool, end: int,
                        groups: torch.Tensor | None = None, wide: bool = False) -> dict:
        """Per layer kind, which keys each of n new tokens at positions start + [0, n) sees, once their keys are
        written: (B, 1, n, keys) for the encoder, (B, 1, 1, keys) for a canvas (one rule for all its positions).
        The keys are a sliding layer's ring (with the new keys after it when `wide`, see `wide_pass`), or positions
        [0, end) of a global layer. `start` is an int, a 0-d tensor (compiled passes) or one per row (B,) (the
        server's rows). `groups` (B, n): the new tokens' image ids (`vision.image_groups`, -1 for text); a token
        also sees every key of its own image. None: every key is seen."""
        dev = cache.device
        # the common eager case: no padding and no keys beyond the new tokens, so global layers see them all
        sees_all = isinstance(start, int) and not cache.padded and (n == 1 or not causal) and end == start + n
        s = torch.as_tensor(start, device=dev).reshape(-1, 1, 1)  # (1 or B, 1, 1)
        q = s + torch.arange(n, device=dev)[:, None]  # (., n, 1) the queries' positions
        masks = {}
        for kind in self.kinds:
            if kind == SLIDING:
                kp = cache.ring_positions(s + n)  # (., 1, ring) the position each slot holds, < 0 if none
                if wide:
                    kp = torch.cat([cache.ring_positions(s), q.transpose(1, 2)], dim=-1)
                real = cache.valid.gather(1, kp.clamp(min=0).flatten(1).expand(cache.batch_size, -1))[:, None]
                real = real & (kp >= 0)
            elif sees_all:
                masks[kind] = None
                continue
            else:
                kp = torch.arange(end, device=dev)
                real = cache.valid[:, None, :end]
            own = (kp == q) if causal else (kp >= s) & (kp < s + n)
            if groups is not None:  # the keys' image ids: those of new tokens, -1 for every other key
                rel = (kp - s).expand(groups.shape[0], 1, -1)
                kg = groups[:, None].gather(2, rel.clamp(0, n - 1))
                kg = torch.where((rel >= 0) & (rel < n), kg, -1)
                own = own | ((groups[:, :, None] == kg) & (groups[:, :, None] >= 0))
            seen = keys_visible(q if causal else s, kp, real, own, self.config.sliding_window if kind == SLIDING
                                else None)
            masks[kind] = seen[:, None]
        return masks

    def plan(self, cache: KVCache, start, n: int, causal: bool, end: int | None = None,
             groups: torch.Tensor | None = None) -> "PassPlan":
        """What a pass over n new tokens at positions start + [0, n) needs besides its inputs: the positions, their
        RoPE tables and the masks. The same for every denoising step of a canvas, so the engine makes it once
        per canvas. `start` and `end` as in `_pass`, `groups` as in `attention_masks`."""
        if end is None:
            end = start + n if isinstance(start, int) else cache.max_length
        dev = cache.device
        positions = torch.as_tensor(start, device=dev).reshape(-1, 1) + torch.arange(n, device=dev)  # (1 or B, n)
        wide = self.wide_pass(cache, start, n, causal)
        return PassPlan(start, n, end, positions, self.rope(positions),
                        self.attention_masks(cache, start, n, causal, end, groups, wide), wide)

    def _pass(self, x: torch.Tensor, cache: KVCache, start, causal: bool, end: int | None = None,
              plan: "PassPlan | None" = None, ends: tuple[int, ...] | None = None,
              groups: torch.Tensor | None = None) -> torch.Tensor:
        """The layers over (B, n, H) inputs at positions start + [0, n): their keys and values are written there
        (a sliding layer's slot is the position mod its ring), then each token attends to what `attention_masks`
        lets it see among its layer's ring or positions [0, end). `causal`: the encoder; else the decoder (the
        canvas sees itself whole; its sliding window is anchored at its start). `start`: an int (eager, `end`
        defaults to start + n), a 0-d tensor or (B,) per-row starts (`end` defaults to the whole cache, so a
        compiled graph has one shape for every position). Masked-out slots add work but no change beyond
        rounding. Past `cache.length` the slots are scratch: the decoder's canvas keys live there for one pass."""
        plan = plan or self.plan(cache, start, x.shape[1], causal, end, groups)
        start, n, end, positions, masks = plan.start, plan.n, plan.end, plan.positions, plan.masks
        rows = torch.arange(cache.batch_size, device=x.device)[:, None] if positions.shape[0] > 1 else None

        def kv_fn(layer, k, v):
            sliding = self.config.is_sliding(layer)
            keys, values = cache.keys[layer], cache.values[layer]
            mask = masks[self.config.layer_types[layer]]
            if sliding and plan.wide:  # attend to [ring as it was ; new], then keep the newest `ring` in it
                seen = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
                tail = min(n, cache.ring)
                slots = positions[0, n - tail:] % cache.ring
                keys.index_copy_(2, slots, k[:, :, n - tail:])
                values.index_copy_(2, slots, v[:, :, n - tail:])
                return (*seen, mask)
            if isinstance(start, int) and not sliding:
                keys[:, :, start:start + n], values[:, :, start:start + n] = k, v
            else:
                slots = positions % cache.ring if sliding else positions
                if slots.shape[0] == 1:
                    keys.index_copy_(2, slots[0], k)
                    values.index_copy_(2, slots[0], v)
                else:  # per-row positions
                    keys[rows, :, slots], values[rows, :, slots] = k.transpose(1, 2), v.transpose(1, 2)
            if not sliding:
                keys, values = keys[:, :, :end], values[:, :, :end]
            return keys, values, mask

        return self.run_layers(x, positions, kv_fn, encoder=causal, tables=plan.tables, ends=ends)

    # --- encoder: causal, appends to the cache ------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None = None,
               image_embeds: torch.Tensor | None = None, mm_token_type_ids: torch.Tensor | None = None):
        """Run the causal encoder over (B, n) new tokens, appending their keys/values to `cache`.

        `attention_mask` (B, n) marks real tokens (left padding = 0). `image_embeds` (N, H): `encode_images`
        soft tokens for the N image-token positions of `input_ids`, row by row; `mm_token_type_ids` (B, n) marks
        the images' tokens (1) as the reference's processor does (default: the image-token positions). Returns
        the final-normed hidden states (B, n, H); `model.logits` of them are the next-token logits."""
        self._check_ids(input_ids, cache, "input_ids")
        x, groups = self.embed(input_ids), None
        if image_embeds is not None:
            x, groups = place_images(self.config, input_ids, x, image_embeds, mm_token_type_ids)
        n = input_ids.shape[1]
        # Long prompts in pieces: each piece's queries meet only the keys they may see (the window on sliding
        # layers, the causal prefix on global ones) instead of an (n, n) masked product, and no (n, n) mask.
        # A ring (sliding layers) holds the window and one canvas: a piece is at most a canvas long there, or one
        # whole image (a `wide_pass`), whose tokens must all be there together.
        chunk = self.prefill_chunk if self.prefill_chunk and not torch.is_grad_enabled() else n
        if cache.ring < cache.max_length:
            chunk = min(chunk, cache.ring - (self.config.sliding_window - 1))
        cache.reserve(n, f"encoding {n} tokens")
        out = []
        for a, b in prefill_pieces(n, chunk, groups):
            start = cache.append_slots(b - a, None if attention_mask is None else attention_mask[:, a:b])
            out.append(self._pass(x[:, a:b], cache, start, causal=True,
                                  groups=None if groups is None else groups[:, a:b]))
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def encode_images(self, pixel_values: torch.Tensor, image_position_ids: torch.Tensor) -> torch.Tensor:
        """`dgemma.vision.ImageProcessor` output -> soft tokens (N, H) in the text width, every image's in order."""
        if self.vision is None:
            raise ImageError("this checkpoint has no vision tower: it cannot take images")
        return self.vision(pixel_values, image_position_ids)

    def encode_static(self, input_ids: torch.Tensor, cache: KVCache, start: torch.Tensor) -> torch.Tensor:
        """`encode` of (B, n) tokens without padding in one shape for every `start` (committing canvases in a
        compiled engine). The caller claims the slots first (`cache.append_slots`); returns the hidden states."""
        return self._pass(self.embed(input_ids), cache, start, causal=True)

    # --- decoder: bidirectional over [cache ; canvas], cache unchanged ------------------------------------
    def denoise(self, canvas_ids: torch.Tensor, cache: KVCache, self_conditioning_logits: torch.Tensor | None = None,
                self_conditioning_mask: torch.Tensor | None = None,
                self_conditioning_embeds: torch.Tensor | None = None, logits: bool = True,
                plan: "PassPlan | None" = None) -> torch.Tensor:
        """(B, L) canvas -> (B, L, V) float32 logits. The canvas sees every cached token on global layers and the
        window-1 tokens before it on sliding layers (the window is anchored at the canvas start). `logits=False`:
        the final-normed hidden states (B, L, H) instead, for a sampler that computes logits tile by tile.
        `plan`: this canvas's `plan(cache, cache.length, L, causal=False)`, made once for all its steps.

        Self-conditioning comes from the previous step's logits, or, to spare the engine a second (B, L, V)
        tensor, from soft embeddings it already computed (`soft_embeddings` of those logits)."""
        self._check_ids(canvas_ids, cache, "canvas_ids")
        B, L = canvas_ids.shape
        cache.reserve(L, f"a canvas of {L} tokens")
        soft = self_conditioning_embeds
        if self_conditioning_logits is not None:
            if self_conditioning_logits.shape != (B, L, self.config.vocab_size):
                raise ValueError(f"self_conditioning_logits has shape {tuple(self_conditioning_logits.shape)}, "
                                 f"expected {(B, L, self.config.vocab_size)}")
            soft = self.soft_embeddings(self_conditioning_logits, self_conditioning_mask)
        hidden = self.denoise_static(canvas_ids, cache, cache.length, soft, plan=plan)
        return self.logits(hidden) if logits else hidden

    def denoise_static(self, canvas_ids: torch.Tensor, cache: KVCache, start,
                       self_conditioning_embeds: torch.Tensor | None = None, end: int | None = None,
                       plan: "PassPlan | None" = None, ends: tuple[int, ...] | None = None) -> torch.Tensor:
        """The decoder's final-normed hidden states (B, L, H) of a canvas at positions start + [0, L), without
        checks: `start` a 0-d tensor gives one shape for every canvas, for torch.compile and CUDA graphs (gpt-fast
        style); (B,) starts one per row. The caller checks the cache has room (`cache.reserve`).

        `ends` (one per row, each at most the pass's end): rows apart, for a server whose answers must not depend
        on their batch-mates. Row b's global layers attend to keys [0, ends[b]) alone and its experts run alone,
        so with the ends it would have by itself (its own length plus the canvas) its hidden states are those of
        the row alone, bit for bit, where the other matmuls' rounding does not depend on the batch size."""
        x = self.self_conditioning(self.embed(canvas_ids), self_conditioning_embeds)
        return self._pass(x, cache, start, causal=False, end=end, plan=plan, ends=ends)

    # --- generation (the engine lives in dgemma.engine; these are the documented entry points) -------------
    def generate(self, input_ids, *, max_new_tokens: int | None = None, max_denoising_steps: int | None = None,
                 entropy_bound: float | None = None, t_min: float | None = None, t_max: float | None = None,
                 stability_threshold: int | None = None, confidence_threshold: float | None = None,
                 eos_token_id=None, pad_token_id: int | None = None, seed: int | None = None, attention_mask=None,
                 sampler: str | None = None, tau: float | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, canvas=None, clamp=None, constraints=None,
                 json_schema: dict | None = None, tokenizer=None, skip_finished_rows: bool = True,
                 stream: bool = False, compile: bool = False, pixel_values=None, image_position_ids=None,
                 mm_token_type_ids=None):
        """Block-diffusion generation (see dgemma.engine). Settings left at None come from the checkpoint's
        generation_config.json (`generation_defaults`). Returns `GenerateOutput` (sequences with the prompt,
        tokens_per_forward per row, steps per canvas), or with `stream=True` an iterator of step/canvas events
        ending with that output. `compile`: the decoder runs compiled (see `Engine`). `constraints`
        (dgemma.constraints.Constraints): clamped and restricted positions of the first canvases. `json_schema`:
        output valid against this schema (dgemma.json_schema; its layout sets the length), with `tokenizer` or the
        one beside the checkpoint. `pixel_values`, `image_position_ids` (dgemma.vision.ImageProcessor) and
        `mm_token_type_ids`: images in the prompt, one run of image tokens per image, as the reference takes them;
        they feed only the prefill."""
        from .engine import Engine, GenerationConfig
        images = self.prompt_images(input_ids, pixel_values, image_position_ids, mm_token_type_ids)
        if json_schema is not None:
            from .json_schema import plan
            if constraints is not None:
                raise ValueError("give json_schema or constraints, not both")
            ids = torch.as_tensor(input_ids)
            constraints, max_new_tokens = plan(json_schema, tokenizer or self.tokenizer(), self.config,
                                               ids.shape[-1], max_new_tokens)
        cfg = GenerationConfig.from_checkpoint(
            self.generation_defaults, sampler, entropy_bound, tau, max_new_tokens=max_new_tokens,
            max_denoising_steps=max_denoising_steps, t_min=t_min, t_max=t_max, temperature=temperature, top_k=top_k,
            top_p=top_p, stability_threshold=stability_threshold, confidence_threshold=confidence_threshold,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, skip_finished_rows=skip_finished_rows)
        events = Engine(self, compile=compile).stream(input_ids, cfg, seed=seed, attention_mask=attention_mask,
                                                      canvas=canvas, clamp=clamp, constraints=constraints,
                                                      images=images)
        if stream:
            return events
        for event in events:
            pass
        return event

    def prompt_images(self, input_ids, pixel_values, image_position_ids, mm_token_type_ids) -> tuple | None:
        """(soft tokens, mm_token_type_ids) for `encode`, or None for a text prompt; ImageError when the prompt's
        image tokens and the images do not go together."""
        ids = torch.as_tensor(input_ids)
        tokens = int((ids == self.config.image_token_id).sum())
        if pixel_values is None:
            if tokens and self.vision is not None:
                raise ImageError(f"the prompt has {tokens} image tokens but no pixel_values were given")
            return None
        if image_position_ids is None:
            raise ImageError("pixel_values need their image_position_ids (both come from the image processor)")
        return self.encode_images(pixel_values, image_position_ids), mm_token_type_ids

    def tokenizer(self):
        """The tokenizer.json beside the checkpoint this model was loaded from."""
        from .tokenizer import Tokenizer
        if self._tokenizer is None:
            if self.checkpoint_dir is None or not (Path(self.checkpoint_dir) / "tokenizer.json").is_file():
                raise ValueError("this model has no tokenizer.json beside its weights (a preset, or a checkpoint "
                                 "without one): pass tokenizer=")
            self._tokenizer = Tokenizer.from_dir(self.checkpoint_dir)
        return self._tokenizer

    def generate_ar(self, input_ids, *, max_new_tokens: int | None = None, temperature: float = 0.0,
                    eos_token_id=None, pad_token_id: int | None = None, seed: int | None = None, attention_mask=None):
        """Autoregressive decoding of the same weights (encoder + tied head), for comparison. Length, stop and pad
        ids left at None come from `generation_defaults`."""
        from .engine import Engine, GenerationConfig
        cfg = GenerationConfig.from_checkpoint(self.generation_defaults, max_new_tokens=max_new_tokens,
                                               eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        return Engine(self).generate_ar(input_ids, cfg.max_new_tokens, temperature=temperature,
                                        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, seed=seed,
                                        attention_mask=attention_mask)

    def _check_ids(self, ids: torch.Tensor, cache: KVCache, name: str) -> None:
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be a 2-D integer tensor (batch, length), got {tuple(ids.shape)} {ids.dtype}")
        if ids.shape[0] != cache.batch_size:
            raise ValueError(f"{name} has batch size {ids.shape[0]} but the cache was made for {cache.batch_size}")
        if ids.shape[1] == 0:
            raise ValueError(f"{name} is empty")

