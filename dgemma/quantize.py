"""Weight-only quantization (issue #23): int8 per output channel, the first scheme.

`quantize_(model, "int8")` replaces, in every layer, the attention and dense-MLP projections with `Int8Linear` and
the routed experts with `Int8Experts`: int8 weights with one scale per output row (symmetric, max-abs / 127).
The embeddings (and so the tied head), the routers, the norms and the self-conditioning block keep their dtype:
they are a small share of the weights and the head's and router's rounding moves every logit and every routing.

Kernels: on a CPU a float32 or bf16 linear runs `torch._weight_int8pack_mm` (int8 weights, the scale applied to
the output); elsewhere, and in float64, the weights are dequantized for the call. The experts are dequantized
for each pass (a transient copy of one layer's experts), so that the grouped matmul stays one grouped matmul; an
int8 grouped kernel is the next step, to be chosen by measurement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .moe import Experts

SCHEMES = ("int8",)


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N, K) weights -> int8 (..., N, K) and the scales (..., N) in w's dtype: w ~ q * scale[..., None],
    each row's largest |w| mapped to 127 (an all-zero row gets scale 1)."""
    wf = w.float()
    scale = wf.abs().amax(-1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(wf / scale[..., None]).clamp_(-127, 127).to(torch.int8)
    return q, scale.to(w.dtype)


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights and a scale per output channel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear quantizes bias-free linear layers only")
        q, scale = int8_rows(linear.weight.detach())
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The dequantized (N, K) weights."""
        return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.device.type == "cpu" and x2.dtype in (torch.float32, torch.bfloat16) and x2.dtype == self.scale.dtype:
            y = torch._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scale)
        else:
            y = F.linear(x2, self.weight(x2.dtype))
        return y.view(*shape[:-1], y.shape[-1])


class Int8Experts(Experts):
    """`Experts` with int8 weights (a scale per expert and output row), dequantized for each pass."""

    def __init__(self, experts: Experts):
        nn.Module.__init__(self)
        self.aligned = experts.aligned
        for name in ("gate_up_proj", "down_proj"):
            q, scale = int8_rows(getattr(experts, name).detach())
            self.register_buffer(f"{name}_q", q)
            self.register_buffer(f"{name}_scale", scale)

    @property
    def gate_up_proj(self) -> torch.Tensor:
        return self.gate_up_proj_q.to(self.gate_up_proj_scale.dtype) * self.gate_up_proj_scale[..., None]

    @property
    def down_proj(self) -> torch.Tensor:
        return self.down_proj_q.to(self.down_proj_scale.dtype) * self.down_proj_scale[..., None]


def quantize_(model, scheme: str = "int8"):
    """Quantize `model` in place (see the module docstring); returns it. Refuses an unknown scheme and a model
    already quantized."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if getattr(model, "quantization", None):
        raise ValueError(f"the model is already quantized ({model.quantization['scheme']}): quantize the "
                         "original weights instead")
    for layer in model.layers:
        for module, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                if getattr(module, name) is not None:
                    setattr(module, name, Int8Linear(getattr(module, name)))
        layer.experts = Int8Experts(layer.experts)
    model.quantization = {"scheme": scheme}
    return model


def weight_stats(model) -> dict:
    """The model's weight bytes (what its state dict holds: parameters and persistent buffers, the vision tower's
    included) and the share of its text weights (by element count) held quantized."""
    tensors = model.state_dict(keep_vars=True)
    scales = {f"{m}.{b}" for m, mod in model.named_modules() if isinstance(mod, (Int8Linear, Int8Experts))
              for b, _ in mod.named_buffers(recurse=False) if b.endswith("scale")}
    quantized = sum(t.numel() for t in tensors.values() if t.dtype == torch.int8)
    total = sum(t.numel() for name, t in tensors.items() if name not in scales and not name.startswith("vision."))
    return {"weight_bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
            "quantized_fraction": quantized / total}
