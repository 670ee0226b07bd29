"""Image input: the Gemma 4 vision tower, the embedder into the text width, and the image processor (PIL + numpy).

Pixels to soft tokens, as the reference computes them (transformers 5.23 `models/gemma4`, used by
`models/diffusion_gemma`):
- the processor resizes an image, keeping its aspect ratio, to multiples of pooling x patch pixels within a
  budget of `max_soft_tokens` x pooling^2 patches, cuts it into patch-size squares (pixels in [0, 1]) and pads the
  list to the budget with (-1, -1) positions;
- the tower embeds each patch with its (x, y) position, runs bidirectional layers with a 2-D rotary embedding,
  averages each pooling x pooling block of patches into one soft token and scales by sqrt(width);
- the embedder norms (no scale) and projects into the text hidden size.

The soft tokens then replace the image-token positions of the encoder's input, without the text embedding
scale, and feed only the prefill. How an image's tokens attend to each other there (`bidirectional_images`, the
text config's `use_bidirectional_attention: "vision"`) is where public implementations differ:
- dgemma follows the reference's `generate`, the path its users run: in every layer a query sees its causal
  (sliding-causal) keys OR every key of its own image, whatever the window;
- the reference's direct `forward` builds no image mask at all (plain causal);
- Google's JAX code and vLLM allow the image block only on sliding layers, and only inside the window.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, apply_rope, rms_norm

SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)
MAX_IMAGE_PIXELS = 50_000_000  # a larger image is refused before it is decoded (a decompression bomb, or a mistake)


class ImageError(ValueError):
    """An image that cannot be used: not an image, too large, or not matching its prompt."""


@dataclass
class VisionConfig:
    """The reference's `vision_config` (Gemma4VisionConfig); its defaults are that class's, so a config.json that
    leaves a key out reads as the reference reads it."""
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_layers: int = 16
    num_heads: int = 12
    num_kv_heads: int = 12
    head_dim: int = 64
    patch_size: int = 16
    pooling_kernel_size: int = 3
    position_embedding_size: int = 10 * 1024
    rms_norm_eps: float = 1e-6
    rope_theta: float = 100.0
    use_clipped_linears: bool = False
    standardize: bool = False

    @classmethod
    def from_hf_dict(cls, d: dict) -> "VisionConfig":
        from .config import ConfigError
        if d.get("model_type", "gemma4_vision") != "gemma4_vision":
            raise ConfigError(f"vision_config model_type is {d.get('model_type')!r}, expected 'gemma4_vision'")
        if d.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh" or d.get("attention_bias"):
            raise ConfigError("vision_config: only gelu_pytorch_tanh and no attention bias are supported")
        rope = d.get("rope_parameters") or {}
        if rope.get("rope_type", "axial") != "axial":
            raise ConfigError(f"vision_config: rope_type {rope.get('rope_type')!r} is not supported (axial)")
        names = {"hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
                 "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                 "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "patch_size": "patch_size",
                 "pooling_kernel_size": "pooling_kernel_size", "position_embedding_size": "position_embedding_size",
                 "rms_norm_eps": "rms_norm_eps", "use_clipped_linears": "use_clipped_linears",
                 "standardize": "standardize"}
        cfg = cls(**{ours: d[theirs] for ours, theirs in names.items() if d.get(theirs) is not None})
        cfg.rope_theta = rope.get("rope_theta", cfg.rope_theta)
        if cfg.head_dim % 4 or cfg.num_heads % cfg.num_kv_heads:
            raise ConfigError(f"vision_config: head_dim {cfg.head_dim} must be a multiple of 4 (two rotary axes) and "
                              f"num_attention_heads a multiple of num_key_value_heads")
        return cfg

    def num_parameters(self, text_hidden: int = 0) -> int:
        """The tower's parameters, and with `text_hidden` its embedder's projection into that width."""
        H, D, p = self.hidden_size, self.head_dim, self.patch_size
        attn = H * D * (2 * self.num_heads + 2 * self.num_kv_heads) + 2 * D
        layer = attn + 3 * H * self.intermediate_size + 4 * H
        return 3 * p * p * H + 2 * self.position_embedding_size * H + self.num_layers * layer + H * text_hidden


class ClippableLinear(nn.Module):
    """A bias-free linear whose input and output are clamped to stored bounds when the config asks for it."""

    def __init__(self, cfg: VisionConfig, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False)
        self.clipped = cfg.use_clipped_linears
        if self.clipped:
            for name, value in (("input_min", -math.inf), ("input_max", math.inf), ("output_min", -math.inf),
                                ("output_max", math.inf)):
                self.register_buffer(name, torch.tensor(value))

    def forward(self, x):
        if not self.clipped:
            return self.linear(x)
        return torch.clamp(self.linear(torch.clamp(x, self.input_min, self.input_max)), self.output_min,
                           self.output_max)


def rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The first half of each head rotates with the x position, the second half with the y position."""
    h = x.shape[-1] // 2
    return torch.cat([apply_rope(x[..., :h], cos[..., :h], sin[..., :h]),
                      apply_rope(x[..., h:], cos[..., h:], sin[..., h:])], dim=-1)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        H, D = cfg.hidden_size, cfg.head_dim
        self.head_dim, self.gqa, self.eps = D, cfg.num_heads != cfg.num_kv_heads, cfg.rms_norm_eps
        self.q_proj = ClippableLinear(cfg, H, cfg.num_heads * D)
        self.k_proj = ClippableLinear(cfg, H, cfg.num_kv_heads * D)
        self.v_proj = ClippableLinear(cfg, H, cfg.num_kv_heads * D)
        self.o_proj = ClippableLinear(cfg, cfg.num_heads * D, H)
        self.q_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(D, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        B, n, _ = x.shape
        shape = (B, n, -1, self.head_dim)
        q = rope_2d(self.q_norm(self.q_proj(x).view(shape)), cos, sin).transpose(1, 2)
        k = rope_2d(self.k_norm(self.k_proj(x).view(shape)), cos, sin).transpose(1, 2)
        v = rms_norm(self.v_proj(x).view(shape), None, self.eps).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0, enable_gqa=self.gqa)
        return self.o_proj(out.transpose(1, 2).reshape(B, n, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = ClippableLinear(cfg, cfg.hidden_size, cfg.intermediate_size)
        self.up_proj = ClippableLinear(cfg, cfg.hidden_size, cfg.intermediate_size)
        self.down_proj = ClippableLinear(cfg, cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class VisionLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        H, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            setattr(self, name, RMSNorm(H, eps))

    def forward(self, x, cos, sin, mask):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class PatchEmbedder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.input_proj = nn.Linear(3 * cfg.patch_size ** 2, cfg.hidden_size, bias=False)
        self.position_embedding_table = nn.Parameter(torch.ones(2, cfg.position_embedding_size, cfg.hidden_size))

    def forward(self, pixel_values, positions, padding):
        """Pixels in [0, 1] are mapped to [-1, 1] (the tower's only normalisation); x and y embeddings add."""
        x = self.input_proj((2 * (pixel_values - 0.5)).to(self.input_proj.weight.dtype))
        p = positions.clamp(min=0)
        pos = F.embedding(p[..., 0], self.position_embedding_table[0]) + \
            F.embedding(p[..., 1], self.position_embedding_table[1])
        return x + torch.where(padding[..., None], 0.0, pos)


class VisionTower(nn.Module):
    """Patches (B, M, 3 p^2) at positions (B, M, 2) -> soft tokens (N, hidden) of every image's real pooled
    blocks, image after image. State-dict names are the reference's under `model.encoder.vision_tower.`."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedder = PatchEmbedder(cfg)
        self.encoder = nn.ModuleDict({"layers": nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.num_layers))})
        if cfg.standardize:
            self.register_buffer("std_bias", torch.zeros(cfg.hidden_size))
            self.register_buffer("std_scale", torch.ones(cfg.hidden_size))
        self.register_buffer("inv_freq", torch.empty(cfg.head_dim // 4), persistent=False)
        self.reset_buffers()

    def reset_buffers(self, stored: bool = False) -> None:
        """The rotary frequencies in float32 (whatever the weights' dtype); with `stored`, also the stored
        buffers' neutral values (standardisation, clip bounds), for random weights built on the meta device."""
        half = self.cfg.head_dim // 2
        dev = self.patch_embedder.input_proj.weight.device
        self.inv_freq = 1.0 / self.cfg.rope_theta ** (torch.arange(0, half, 2, device=dev).float() / half)
        if stored:
            for name, buf in self.named_buffers():
                leaf = name.rpartition(".")[2]
                if leaf != "inv_freq":
                    buf.fill_({"std_bias": 0.0, "std_scale": 1.0, "input_min": -math.inf, "output_min": -math.inf,
                               "input_max": math.inf, "output_max": math.inf}[leaf])

    def rope(self, positions: torch.Tensor, dtype):
        """(B, M, 2) positions -> cos, sin (B, M, 1, head_dim): [x freqs twice, y freqs twice], in float32."""
        f = positions[..., None].float() * self.inv_freq  # (B, M, 2, D/4)
        emb = torch.cat([f[:, :, 0], f[:, :, 0], f[:, :, 1], f[:, :, 1]], dim=-1)[:, :, None]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        k = self.cfg.pooling_kernel_size
        B, M, _ = pixel_values.shape
        padding = (positions == -1).all(-1)  # (B, M)
        x = self.patch_embedder(pixel_values, positions, padding)
        cos, sin = self.rope(positions, x.dtype)
        # every patch sees every real patch of its image; without padding no mask, so the fused kernel can run
        mask = (~padding)[:, None, None, :] if bool(padding.any()) else None
        for layer in self.encoder["layers"]:
            x = layer(x, cos, sin, mask)
        # average each k x k block of patches into one soft token, in float32 as the reference does
        out_len = M // (k * k)
        x = x.masked_fill(padding[..., None], 0.0)
        p = positions.clamp(min=0)
        width = p[..., 0].max(dim=-1, keepdim=True)[0] + 1
        block = torch.div(p[..., 0], k, rounding_mode="floor") + (width // k) * torch.div(p[..., 1], k,
                                                                                          rounding_mode="floor")
        weights = F.one_hot(block.long(), out_len).float() / (k * k)  # (B, M, out_len)
        pooled = (weights.transpose(1, 2) @ x.float()).to(x.dtype)
        real = ~(weights == 0).all(dim=1)  # (B, out_len): blocks that hold a patch
        soft = pooled.float()[real] * self.cfg.hidden_size ** 0.5
        if self.cfg.standardize:
            soft = (soft - self.std_bias.float()) * self.std_scale.float()
        return soft.to(x.dtype)


class MultimodalEmbedder(nn.Module):
    def __init__(self, cfg: VisionConfig, text_hidden: int):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        self.embedding_projection = nn.Linear(cfg.hidden_size, text_hidden, bias=False)

    def forward(self, soft):
        return self.embedding_projection(rms_norm(soft, None, self.eps))


class Vision(nn.Module):
    """The tower and its embedder: `model.vision(pixel_values, image_position_ids)` -> (N, text hidden)."""

    def __init__(self, cfg: VisionConfig, text_hidden: int):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = VisionTower(cfg)
        self.embed_vision = MultimodalEmbedder(cfg, text_hidden)

    def forward(self, pixel_values: torch.Tensor, image_position_ids: torch.Tensor) -> torch.Tensor:
        p, k = self.cfg.patch_size, self.cfg.pooling_kernel_size
        pixel_values, positions = torch.as_tensor(pixel_values), torch.as_tensor(image_position_ids)
        if pixel_values.dim() != 3 or pixel_values.shape[-1] != 3 * p * p or pixel_values.shape[1] % (k * k):
            raise ImageError(f"pixel_values must be (images, patches, {3 * p * p}) with patches a multiple of "
                             f"{k * k}, got {tuple(pixel_values.shape)}")
        if positions.shape != (*pixel_values.shape[:2], 2) or positions.is_floating_point():
            raise ImageError(f"image_position_ids must be integer (images, patches, 2) = "
                             f"{(*pixel_values.shape[:2], 2)}, got {tuple(positions.shape)} {positions.dtype}")
        if int(positions.max()) >= self.cfg.position_embedding_size:
            raise ImageError(f"image_position_ids reach {int(positions.max())}, beyond the tower's "
                             f"{self.cfg.position_embedding_size} positions")
        dev = self.embed_vision.embedding_projection.weight.device
        return self.embed_vision(self.vision_tower(pixel_values.to(dev), positions.to(dev, torch.long)))


def image_groups(mask: torch.Tensor) -> torch.Tensor:
    """(B, n) image-token mask -> (B, n) group ids: each run of image tokens its own id (0, 1, ...), text -1."""
    starts = mask & ~F.pad(mask[:, :-1], (1, 0), value=False)
    return torch.where(mask, torch.cumsum(starts.long(), dim=1) - 1, -1)


def place_images(config, input_ids: torch.Tensor, x: torch.Tensor, image_embeds: torch.Tensor,
                 mm_token_type_ids=None):
    """The (B, n, H) input embeddings `x` with soft tokens at the image-token positions (no embedding scale on
    them), and the tokens' image groups where `config` has images attend to themselves (else None)."""
    where = input_ids == config.image_token_id
    count, H = int(where.sum()), config.hidden_size
    if image_embeds.dim() != 2 or image_embeds.shape[1] != H or image_embeds.shape[0] != count:
        raise ImageError(f"the prompt has {count} image tokens but the images give "
                         f"{image_embeds.shape[0] if image_embeds.dim() == 2 else '?'} soft tokens of width "
                         f"{image_embeds.shape[-1]} (expected {count} x {H})")
    x = x.masked_scatter(where[..., None], image_embeds.to(x.dtype))
    if not config.bidirectional_images:
        return x, None
    if mm_token_type_ids is not None:
        kinds = torch.as_tensor(mm_token_type_ids, device=x.device)
        if kinds.shape != input_ids.shape:
            raise ImageError(f"mm_token_type_ids has shape {tuple(kinds.shape)}, expected {tuple(input_ids.shape)}")
        where = (kinds == 1) | (kinds == 2)
    return x, image_groups(where)


def prefill_pieces(n: int, chunk: int, groups: torch.Tensor | None) -> list[tuple[int, int]]:
    """[a, b) pieces of at most `chunk` tokens covering [0, n), except that no piece boundary falls inside an image
    (`groups`): a piece ends before an image that would cross its end, or holds that whole image."""
    inside = set()  # boundaries b with tokens b - 1 and b in the same image, in any row
    if groups is not None:
        same = (groups[:, 1:] == groups[:, :-1]) & (groups[:, 1:] >= 0)
        inside = set((same.any(0).nonzero()[:, 0] + 1).tolist())
    pieces, a = [], 0
    while a < n:
        b = min(a + chunk, n)
        while b > a and b in inside:
            b -= 1
        if b == a:  # an image starts at a and is longer than a piece
            b = min(a + chunk, n)
            while b in inside:
                b += 1
        pieces.append((a, b))
        a = b
    return pieces


# --- the image processor ----------------------------------------------------------------------------------
def open_image(source):
    """A PIL image from a path, bytes or a PIL image; ImageError names what is wrong."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(source, Image.Image):
        image, name = source, "image"
    else:
        name = str(source) if isinstance(source, (str, Path)) else "image data"
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ImageError(f"{name}: not an image ({e.__class__.__name__})") from None
    w, h = image.size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {w}x{h} pixels is above the cap of {MAX_IMAGE_PIXELS:,}")
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{name}: cannot decode the image ({e})") from None
    return image


def to_rgb(image):
    """RGB, with any transparency composited onto white (as the reference's processor does)."""
    from PIL import Image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def fitted_size(height: int, width: int, patch: int, max_patches: int, pooling: int) -> tuple[int, int]:
    """The largest (height, width), multiples of pooling x patch, with the image's aspect ratio and at most
    max_patches patches; a side that would round to zero gets one block and the other the ratio's share."""
    factor = math.sqrt(max_patches * patch ** 2 / (height * width))
    side = pooling * patch
    h, w = int(math.floor(factor * height / side)) * side, int(math.floor(factor * width / side)) * side
    longest = (max_patches // pooling ** 2) * side
    if h == 0 and w == 0:
        raise ImageError(f"a {width}x{height} image cannot be resized to whole {side}-pixel blocks")
    if h == 0:
        h, w = side, min(int(math.floor(width / height)) * side, longest)
    elif w == 0:
        h, w = min(int(math.floor(height / width)) * side, longest), side
    if h * w > max_patches * patch ** 2:
        raise ImageError(f"a {width}x{height} image does not fit {max_patches} patches of {patch} pixels")
    return h, w


class ImageProcessor:
    """Images -> `pixel_values` (B, M, 3 p^2) float32, `image_position_ids` (B, M, 2) and
    `num_soft_tokens_per_image`, as the reference's PIL processor returns them (M = max_soft_tokens x pooling^2;
    padding patches are zeros at (-1, -1))."""

    def __init__(self, patch_size: int = 16, pooling_kernel_size: int = 3, max_soft_tokens: int = 280):
        self.patch_size, self.pooling = patch_size, pooling_kernel_size
        self.max_soft_tokens = check_budget(max_soft_tokens)

    @classmethod
    def for_config(cls, cfg: VisionConfig, max_soft_tokens: int = 280) -> "ImageProcessor":
        return cls(cfg.patch_size, cfg.pooling_kernel_size, max_soft_tokens)

    def __call__(self, images, max_soft_tokens: int | None = None) -> dict:
        from PIL import Image
        budget = check_budget(max_soft_tokens or self.max_soft_tokens)
        p, max_patches = self.patch_size, budget * self.pooling ** 2
        images = images if isinstance(images, (list, tuple)) else [images]
        pixels, positions, counts = [], [], []
        for source in images:
            image = to_rgb(open_image(source))
            h, w = fitted_size(image.height, image.width, p, max_patches, self.pooling)
            if (h, w) != (image.height, image.width):
                image = image.resize((w, h), resample=Image.BICUBIC)
            arr = (np.asarray(image).astype(np.float64) * (1 / 255)).astype(np.float32).transpose(2, 0, 1)
            hp, wp = h // p, w // p
            patches = arr.reshape(3, hp, p, wp, p).transpose(1, 3, 2, 4, 0).reshape(hp * wp, -1)
            gx, gy = np.meshgrid(np.arange(wp), np.arange(hp), indexing="xy")
            pos = np.stack([gx, gy], axis=-1).reshape(hp * wp, 2)
            counts.append(hp * wp // self.pooling ** 2)
            pad = max_patches - hp * wp
            pixels.append(np.pad(patches, ((0, pad), (0, 0))))
            positions.append(np.pad(pos, ((0, pad), (0, 0)), constant_values=-1))
        return {"pixel_values": torch.from_numpy(np.stack(pixels)),
                "image_position_ids": torch.from_numpy(np.stack(positions)).long(),
                "num_soft_tokens_per_image": counts}


def check_budget(max_soft_tokens: int) -> int:
    if max_soft_tokens not in SOFT_TOKEN_BUDGETS:
        raise ImageError(f"max_soft_tokens must be one of {', '.join(map(str, SOFT_TOKEN_BUDGETS))}, "
                         f"got {max_soft_tokens}")
    return max_soft_tokens


def image_prompt(counts: list[int], boi: int, image: int, eoi: int) -> list[list[int]]:
    """Each image's token run: begin-of-image, one image token per soft token, end-of-image."""
    return [[boi] + [image] * n + [eoi] for n in counts]


IMAGE_MARKER = "<|image|>"  # where a chat template puts an image (dgemma.chat_format.MEDIA)


def encode_with_images(tokenizer, text: str, runs: list[list[int]]) -> list[int]:
    """Token ids of `text` with each image marker replaced by its image's run, in order, as the reference's
    processor expands the marker in the text before tokenizing."""
    parts = text.split(IMAGE_MARKER)
    if len(parts) - 1 != len(runs):
        raise ImageError(f"the prompt has {len(parts) - 1} image markers but {len(runs)} images were given")
    ids = tokenizer.encode(parts[0])
    for run, part in zip(runs, parts[1:]):
        ids += run + tokenizer.encode(part)
    return ids


@dataclass
class PromptImages:
    """Images read for a prompt: each one's token run and the soft tokens of all of them."""
    runs: list[list[int]]
    soft: torch.Tensor  # (sum of the runs' image tokens, text hidden)

    @classmethod
    def read(cls, model, sources, max_soft_tokens: int = 280) -> "PromptImages":
        """Open, process and encode `sources` (paths, bytes or PIL images) for `model` (a DiffusionGemma)."""
        if model.vision is None:
            raise ImageError("this checkpoint has no vision tower: it cannot take images")
        inputs = ImageProcessor.for_config(model.vision.cfg, max_soft_tokens)(list(sources))
        c = model.config
        runs = image_prompt(inputs["num_soft_tokens_per_image"], c.boi_token_id, c.image_token_id, c.eoi_token_id)
        with torch.no_grad():
            soft = model.encode_images(inputs["pixel_values"], inputs["image_position_ids"])
        return cls(runs, soft)
