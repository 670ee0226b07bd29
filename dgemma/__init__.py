"""dgemma: a fast, exact and hackable DiffusionGemma (block-diffusion Gemma 4 MoE)."""

from .cache import KVCache
from .config import ModelConfig, get_preset, PRESETS
from .model import DiffusionGemma

__all__ = ["DiffusionGemma", "KVCache", "ModelConfig", "PRESETS", "get_preset"]
__version__ = "0.1.0"
