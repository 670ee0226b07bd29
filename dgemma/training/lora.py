"""LoRA adapters on the shared weight stack (so encoder and decoder both see them), kept unmerged.

`attach(model, rank, alpha, targets)` wraps the targeted nn.Linear modules of every layer; `detach(model)` puts the
original modules back (weights untouched); `save(model, dir)` writes adapter.safetensors + adapter_config.json;
`load(model, dir)` attaches and fills them. Default targets: q/k/v/o and the dense MLP (router never)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WEIGHTS, CONFIG = "adapter.safetensors", "adapter_config.json"


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator=None):
        super().__init__()
        self.base, self.rank, self.alpha = base, rank, alpha
        self.scale = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        with torch.no_grad():
            self.lora_a.normal_(0.0, 1.0 / rank, generator=generator)

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def _targets(model, targets):
    for i, layer in enumerate(model.layers):
        for parent_name, parent in (("self_attn", layer.self_attn), ("mlp", layer.mlp)):
            for name in targets:
                mod = getattr(parent, name, None)
                if isinstance(mod, (nn.Linear, LoRALinear)):
                    yield f"layers.{i}.{parent_name}.{name}", parent, name, mod


def attach(model, rank: int = 16, alpha: float = 32.0, targets=DEFAULT_TARGETS, seed: int = 0) -> list[nn.Parameter]:
    """Wrap the targets; freeze everything else. Returns the adapter parameters."""
    unknown = set(targets) - set(DEFAULT_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; known: {', '.join(DEFAULT_TARGETS)}")
    if rank < 1:
        raise ValueError("LoRA rank must be >= 1")
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for _, parent, name, mod in list(_targets(model, targets)):
        if isinstance(mod, LoRALinear):
            raise ValueError("an adapter is already attached; detach it first")
        wrapped = LoRALinear(mod, rank, alpha, g)
        setattr(parent, name, wrapped)
        params += [wrapped.lora_a, wrapped.lora_b]
    model.lora_config = {"rank": rank, "alpha": alpha, "targets": list(targets)}
    return params


def detach(model) -> None:
    for _, parent, name, mod in list(_targets(model, DEFAULT_TARGETS)):
        if isinstance(mod, LoRALinear):
            setattr(parent, name, mod.base)
    model.__dict__.pop("lora_config", None)


def save(model, path) -> None:
    path = Path(path); path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, _, _, mod in _targets(model, DEFAULT_TARGETS):
        if isinstance(mod, LoRALinear):
            tensors[f"{key}.lora_a"] = mod.lora_a.detach().contiguous().cpu()
            tensors[f"{key}.lora_b"] = mod.lora_b.detach().contiguous().cpu()
    if not tensors:
        raise ValueError("no adapter attached")
    save_file(tensors, str(path / WEIGHTS), metadata={"format": "pt"})
    (path / CONFIG).write_text(json.dumps(model.lora_config, indent=2))


def load(model, path) -> None:
    """Attach the adapter saved at `path` and fill it."""
    path = Path(path)
    for f in (CONFIG, WEIGHTS):
        if not (path / f).is_file():
            raise FileNotFoundError(f"adapter file {path / f} does not exist")
    cfg = json.loads((path / CONFIG).read_text())
    attach(model, cfg["rank"], cfg["alpha"], cfg["targets"])
    load_weights(model, path)


def load_weights(model, path) -> None:
    """Fill the attached adapter with the weights saved at `path` (resuming a LoRA run)."""
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"adapter file {path / WEIGHTS} does not exist")
    tensors = load_file(str(path / WEIGHTS))
    with torch.no_grad():
        for key, _, _, mod in _targets(model, DEFAULT_TARGETS):
            if isinstance(mod, LoRALinear):
                for part in ("lora_a", "lora_b"):
                    name = f"{key}.{part}"
                    if name not in tensors:
                        raise ValueError(f"{path / WEIGHTS}: missing {name}")
                    getattr(mod, part).copy_(tensors[name])
