"""Helpers that drive the reference implementation (transformers 5.23) for parity tests.

transformers is a test-only dependency: nothing under dgemma/ imports it.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DynamicCache  # noqa: E402

SLIDING, FULL = "sliding_attention", "full_attention"
TINY_VISION = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, head_dim=8)

SHAPES = {
    # two global layers, window 8, top-2 of 4 experts
    "a": dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1, sliding_window=8,
              num_experts=4, top_k_experts=2, moe_intermediate_size=16, layer_types=[SLIDING, FULL, SLIDING, FULL]),
    # default 5:1 layer pattern (6 layers: one global, last), top-3 of 8, MHA on sliding layers, odd hidden size
    "b": dict(vocab_size=96, hidden_size=40, intermediate_size=24, num_hidden_layers=6, num_attention_heads=2,
              num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, sliding_window=5,
              num_experts=8, top_k_experts=3, moe_intermediate_size=8),
    # "a" cut to one sliding and one global layer: the compiled-engine tests, whose compile time grows with depth
    "c": dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, global_head_dim=16, num_global_key_value_heads=1, sliding_window=8,
              num_experts=4, top_k_experts=2, moe_intermediate_size=16, layer_types=[SLIDING, FULL]),
}


def make_reference(shape: str, canvas_length: int, seed: int = 0) -> DiffusionGemmaForBlockDiffusion:
    """A random reference model whose scales and layer scalars are perturbed away from 1 so bugs show."""
    cfg = DiffusionGemmaConfig(text_config=dict(SHAPES[shape]), vision_config=dict(TINY_VISION),
                               canvas_length=canvas_length)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.mul_(2.0)  # larger weights make routing and attention sharper than init's
        for layer in model.model.encoder.language_model.layers:
            layer.layer_scalar.fill_(0.9)
        for layer in model.model.decoder.layers:
            layer.layer_scalar.fill_(1.1)
    return model


def load_reference(path, dtype) -> DiffusionGemmaForBlockDiffusion:
    # grouped_mm has no float64 kernel, so the reference's eager expert loop is used
    return DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=dtype, experts_implementation="eager").eval()


def new_cache(model) -> DynamicCache:
    return DynamicCache(config=model.config.get_text_config())


def encoder_logits(model, input_ids, cache, full_mask=None):
    """Encoder pass over new tokens; `full_mask` (B, cached + new) marks real tokens, None = no padding."""
    out = model.model.encoder(input_ids=input_ids, attention_mask=full_mask, past_key_values=cache)
    logits = model.lm_head(out.last_hidden_state).float()
    return 30.0 * torch.tanh(logits / 30.0)


def decoder_logits(model, canvas, cache, sc_logits=None, cache_mask=None):
    """Decoder pass; `cache_mask` (B, cached) marks real cached tokens, None = no padding."""
    dmask = None
    if cache_mask is not None:
        dmask = torch.nn.functional.pad(cache_mask.bool(), (0, canvas.shape[1]), value=True)
    return model(past_key_values=cache, decoder_input_ids=canvas, self_conditioning_logits=sc_logits,
                 decoder_attention_mask=dmask).logits


# a tower of two layers (GQA, clipped linears, standardised output) on 4-pixel patches, and image token ids inside
# shape "a"'s vocabulary; the text config asks for the reference's bidirectional image attention
VISION = dict(model_type="gemma4_vision", hidden_size=24, intermediate_size=40, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, patch_size=4, pooling_kernel_size=3,
              position_embedding_size=64, use_clipped_linears=True, standardize=True)
IMAGE_IDS = dict(image_token_id=120, boi_token_id=121, eoi_token_id=122)


def make_vision_reference(canvas_length: int = 8, seed: int = 0) -> DiffusionGemmaForBlockDiffusion:
    """`make_reference("a")` with a perturbed vision tower: clip bounds that bind, a standardisation that is not
    the identity, every weight away from its init."""
    text = dict(SHAPES["a"], use_bidirectional_attention="vision")
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=dict(VISION), canvas_length=canvas_length,
                               **IMAGE_IDS)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.mul_(2.0)
        tower = model.model.encoder.vision_tower
        tower.std_bias.copy_(torch.randn_like(tower.std_bias) * 0.5)
        tower.std_scale.copy_(1 + torch.rand_like(tower.std_scale))
        for name, buf in tower.named_buffers():
            if name.endswith(("input_min", "output_min")):
                buf.fill_(-1.5)
            elif name.endswith(("input_max", "output_max")):
                buf.fill_(1.5)
    return model
