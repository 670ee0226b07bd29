"""Model configuration: one dataclass, read from and written to the reference `config.json`.

The reference nests the text model under `text_config` and expresses the global layers' different
attention shapes as `per_layer_config` overrides; we flatten that into per-layer lists so the model
code never has to ask which kind of layer it is in more than one place.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

SLIDING, FULL = "sliding_attention", "full_attention"

# A small vision tower description written into configs we create, so that transformers (which always builds
# a vision tower) can load our text-only checkpoints without allocating the 400M-parameter default one.
TINY_VISION_CONFIG = {
    "model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "patch_size": 16,
    "position_embedding_size": 64, "pooling_kernel_size": 3,
}

# The released tower's shape (issue #27: 27 layers of width 1152, 16-pixel patches, 3x3 pooling; the remaining sizes
# are the SigLIP-So400m ones it shares). A checkpoint's own config.json always wins over this.
RELEASED_VISION_CONFIG = {
    "model_type": "gemma4_vision", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 72, "patch_size": 16,
    "position_embedding_size": 10240, "pooling_kernel_size": 3, "standardize": True,
}

# The reference checkpoint's generation_config.json: every default of generation starts here (a checkpoint's own file
# overrides it key by key).
GENERATION_DEFAULTS = {
    "max_new_tokens": 256, "max_denoising_steps": 48, "t_min": 0.4, "t_max": 0.8, "stability_threshold": 1,
    "confidence_threshold": 0.005, "sampler_config": {"entropy_bound": 0.1, "_cls_name": "EntropyBoundSamplerConfig"},
    "eos_token_id": [1, 106, 50], "pad_token_id": 0, "bos_token_id": 2,
}
DEFAULT_ENTROPY_BOUND = GENERATION_DEFAULTS["sampler_config"]["entropy_bound"]
# generation_config.json key of our own: the acceptance rule a checkpoint decodes best with (dgemma.sampling's
# names); absent, the reference's entropy bound
SAMPLER_KEY = "dgemma_sampler"


class ConfigError(ValueError):
    """A config that does not describe a DiffusionGemma text model we can run."""


@dataclass
class ModelConfig:
    vocab_size: int = 262_144
    hidden_size: int = 2816
    intermediate_size: int = 2112  # dense GeGLU width (also the self-conditioning block's width)
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 8  # sliding layers
    head_dim: int = 256  # sliding layers
    global_head_dim: int = 512
    num_global_kv_heads: int = 2
    sliding_window: int = 1024
    layer_types: list[str] = field(default_factory=list)  # filled by __post_init__: every 6th layer and the last are full
    rope_parameters: dict = field(default_factory=lambda: {
        SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
    })
    num_experts: int = 128
    top_k_experts: int = 8
    moe_intermediate_size: int = 704
    rms_norm_eps: float = 1e-6
    final_logit_softcapping: float = 30.0
    max_position_embeddings: int = 262_144
    canvas_length: int = 256
    initializer_range: float = 0.02
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    # the vision tower's reference config (dgemma.vision.VisionConfig reads it); None: a text-only model
    vision_config: dict | None = None
    image_token_id: int = 258_880  # the soft-token placeholder; begin/end-of-image tokens wrap each image's run
    boi_token_id: int = 255_999
    eoi_token_id: int = 258_882
    # "vision" in the reference's text config: an image's tokens also see each other, whatever the causal order
    # or the window (dgemma.vision's docstring); None: they are causal like text
    bidirectional_images: bool = False

    def __post_init__(self):
        if not self.layer_types:
            self.layer_types = [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(self.num_layers)]
        self.layer_types = list(self.layer_types)
        self.layer_types[-1] = FULL  # the reference forces the last layer to be global
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        need(len(self.layer_types) == self.num_layers,
             f"layer_types has {len(self.layer_types)} entries but num_layers is {self.num_layers}")
        need(set(self.layer_types) <= {SLIDING, FULL}, f"unknown layer type in {sorted(set(self.layer_types))}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "global_head_dim", "num_global_kv_heads", "sliding_window", "num_experts",
                     "top_k_experts", "moe_intermediate_size", "canvas_length"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(self.top_k_experts <= self.num_experts,
             f"top_k_experts ({self.top_k_experts}) exceeds num_experts ({self.num_experts})")
        need(self.num_heads % self.num_kv_heads == 0 and self.num_heads % self.num_global_kv_heads == 0,
             "num_heads must be a multiple of num_kv_heads and num_global_kv_heads")
        need(self.head_dim % 2 == 0 and self.global_head_dim % 2 == 0, "head dims must be even for RoPE")
        for kind in set(self.layer_types):
            need(kind in self.rope_parameters, f"rope_parameters has no entry for {kind}")
            need(self.rope_parameters[kind].get("rope_type", "default") in ("default", "proportional"),
                 f"unsupported rope_type {self.rope_parameters[kind].get('rope_type')!r} for {kind}")

    # --- per-layer views -------------------------------------------------------------------------------
    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    def layer_head_dim(self, layer: int) -> int:
        return self.head_dim if self.is_sliding(layer) else self.global_head_dim

    def layer_kv_heads(self, layer: int) -> int:
        return self.num_kv_heads if self.is_sliding(layer) else self.num_global_kv_heads

    # --- parameter accounting (no allocation) --------------------------------------------------------------
    def layer_parameters(self, layer: int) -> tuple[int, int]:
        """(attention + dense + norms + router, one expert) parameter counts of one layer."""
        H, D, kv = self.hidden_size, self.layer_head_dim(layer), self.layer_kv_heads(layer)
        attn = H * self.num_heads * D * 2 + H * kv * D * (2 if self.is_sliding(layer) else 1) + 2 * D
        dense = 3 * H * self.intermediate_size
        norms = 7 * H
        router = H * self.num_experts + H + self.num_experts
        expert = 3 * H * self.moe_intermediate_size
        return attn + dense + norms + router, expert

    def num_parameters(self, active: bool = False) -> int:
        """Text parameters (embedding counted once: it is tied). `active` counts top-k experts per layer."""
        H = self.hidden_size
        total = self.vocab_size * H + H + (H + 3 * H * self.intermediate_size)  # embed, final norm, self-cond
        experts_used = self.top_k_experts if active else self.num_experts
        for layer in range(self.num_layers):
            shared, expert = self.layer_parameters(layer)
            total += shared + experts_used * expert
        return total

    # --- reference config.json -----------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict) -> "ModelConfig":
        if d.get("model_type") != "diffusion_gemma":
            raise ConfigError(f"model_type is {d.get('model_type')!r}, expected 'diffusion_gemma'")
        t = d.get("text_config")
        if not isinstance(t, dict):
            raise ConfigError("config has no text_config object")
        if t.get("use_bidirectional_attention") not in (None, "vision"):
            raise ConfigError(f"use_bidirectional_attention={t.get('use_bidirectional_attention')!r} is not "
                              "supported (None or 'vision')")
        if t.get("attention_bias"):
            raise ConfigError("attention_bias=true is not part of the DiffusionGemma architecture")
        if t.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise ConfigError(f"unsupported hidden_activation {t.get('hidden_activation')!r}")
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "num_experts", "top_k_experts", "moe_intermediate_size") if t.get(k) is None]
        if missing:
            raise ConfigError(f"text_config is missing {', '.join(missing)}")
        layers = t["num_hidden_layers"]
        layer_types = t.get("layer_types") or [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers)]
        overrides = {int(k): v for k, v in (t.get("per_layer_config") or {}).items()}
        # The reference expresses global layers' shapes as per-layer overrides; we require them to be uniform.
        global_dims = {(o.get("head_dim"), o.get("num_key_value_heads")) for i, o in overrides.items()
                       if layer_types[i] == FULL}
        if any(i < len(layer_types) and layer_types[i] == SLIDING and o for i, o in overrides.items()):
            raise ConfigError("per_layer_config overrides on sliding layers are not supported")
        if len(global_dims) > 1:
            raise ConfigError(f"global layers have differing per_layer_config overrides: {sorted(global_dims)}")
        g_dim, g_kv = global_dims.pop() if global_dims else (None, None)
        eos = t.get("eos_token_id", 1)
        return cls(
            vocab_size=t["vocab_size"], hidden_size=t["hidden_size"],
            intermediate_size=t.get("intermediate_size", 9216), num_layers=layers,
            num_heads=t["num_attention_heads"], num_kv_heads=t.get("num_key_value_heads", 4),
            head_dim=t.get("head_dim", 256),
            global_head_dim=g_dim or t.get("global_head_dim", 512),
            num_global_kv_heads=g_kv or t.get("num_key_value_heads", 4),
            sliding_window=t.get("sliding_window", 512), layer_types=layer_types,
            rope_parameters=t.get("rope_parameters") or cls().rope_parameters,
            num_experts=t["num_experts"], top_k_experts=t["top_k_experts"],
            moe_intermediate_size=t["moe_intermediate_size"], rms_norm_eps=t.get("rms_norm_eps", 1e-6),
            final_logit_softcapping=t.get("final_logit_softcapping", 30.0) or 30.0,
            max_position_embeddings=t.get("max_position_embeddings", 131_072),
            canvas_length=d.get("canvas_length") or 256, initializer_range=t.get("initializer_range", 0.02),
            pad_token_id=t.get("pad_token_id", 0) if t.get("pad_token_id") is not None else 0,
            eos_token_id=eos[0] if isinstance(eos, list) else (eos if eos is not None else 1),
            bos_token_id=t.get("bos_token_id", 2) if t.get("bos_token_id") is not None else 2,
            vision_config=d.get("vision_config"),
            image_token_id=d.get("image_token_id", 258_880), boi_token_id=d.get("boi_token_id", 255_999),
            eoi_token_id=d.get("eoi_token_id", 258_882),
            bidirectional_images=t.get("use_bidirectional_attention") == "vision",
        )

    def to_hf_dict(self) -> dict:
        overrides = {str(i): {"head_dim": self.global_head_dim, "num_key_value_heads": self.num_global_kv_heads}
                     for i, kind in enumerate(self.layer_types) if kind == FULL}
        text = {
            "model_type": "diffusion_gemma_text", "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": self.max_position_embeddings, "initializer_range": self.initializer_range,
            "rms_norm_eps": self.rms_norm_eps, "pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id, "tie_word_embeddings": True,
            "rope_parameters": copy.deepcopy(self.rope_parameters), "attention_bias": False,
            "attention_dropout": 0.0, "sliding_window": self.sliding_window, "layer_types": list(self.layer_types),
            "use_bidirectional_attention": "vision" if self.bidirectional_images else None,
            "num_experts": self.num_experts, "top_k_experts": self.top_k_experts,
            "moe_intermediate_size": self.moe_intermediate_size,
            "per_layer_config": overrides,
        }
        return {
            "architectures": ["DiffusionGemmaForBlockDiffusion"], "model_type": "diffusion_gemma",
            "canvas_length": self.canvas_length, "text_config": text,
            "vision_config": copy.deepcopy(self.vision_config or TINY_VISION_CONFIG),
            "tie_word_embeddings": True, "boi_token_id": self.boi_token_id, "eoi_token_id": self.eoi_token_id,
            "image_token_id": self.image_token_id, "initializer_range": self.initializer_range,
        }

    @classmethod
    def from_json_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        try:
            return cls.from_hf_dict(d)
        except (ConfigError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(f"{path}: {e}") from None

    def replace(self, **changes) -> "ModelConfig":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return ModelConfig(**{**asdict(self), **changes})


def _small(**kw) -> ModelConfig:
    """Small shapes keep the released model's structure: sliding+global layers, k=v globals, MoE beside dense."""
    return ModelConfig(**kw)


PRESETS: dict[str, ModelConfig] = {
    # The released checkpoint's shapes (google/diffusiongemma-26B-A4B-it).
    "diffusiongemma-26b-a4b": ModelConfig(vision_config=RELEASED_VISION_CONFIG, bidirectional_images=True),
    # Test-sized: every architectural feature present, runs in milliseconds on a CPU.
    "tiny": _small(vocab_size=256, hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4, num_kv_heads=2,
                   head_dim=16, global_head_dim=32, num_global_kv_heads=1, sliding_window=16,
                   layer_types=[SLIDING, FULL, SLIDING, FULL], num_experts=8, top_k_experts=2,
                   moe_intermediate_size=32, canvas_length=32, max_position_embeddings=4096),
    # CPU work: benchmarks and quick experiments at a size where Python overhead and FLOPs both matter.
    "small": _small(vocab_size=4096, hidden_size=256, intermediate_size=512, num_layers=6, num_heads=4,
                    num_kv_heads=2, head_dim=64, global_head_dim=128, num_global_kv_heads=1, sliding_window=128,
                    num_experts=16, top_k_experts=4, moe_intermediate_size=128, canvas_length=256,
                    max_position_embeddings=262_144),  # the released context, for long-prompt work on a CPU
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
