"""The routed experts of a MoE layer: every expert's weights as 3-D tensors, the tokens' assignments sorted by
expert and computed as one grouped matmul (or, for small experts under torch.compile, densely)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _expert_mlp(xs: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, counts: torch.Tensor,
                grouped: bool) -> torch.Tensor:
    """Rows of xs (grouped by expert, counts[e] rows for expert e) through their expert's gated MLP. With R * E
    counts, xs is R equal parts (rows apart, see `Experts.forward`), each grouped by expert and computed alone."""
    E = gate_up.shape[0]
    if grouped:
        parts = []
        for c, xr in zip(counts.view(-1, E), xs.chunk(counts.numel() // E)):
            offs = c.cumsum(0, dtype=torch.int32)
            gate, up = torch._grouped_mm(xr, gate_up.transpose(1, 2), offs=offs).chunk(2, dim=-1)
            parts.append(torch._grouped_mm(F.gelu(gate, approximate="tanh") * up, down.transpose(1, 2), offs=offs))
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    parts = []  # float64 and odd shapes: one matmul per expert that has tokens (needs the counts on the host)
    for i, xe in enumerate(xs.split(counts.tolist())):
        if len(xe):
            gate, up = F.linear(xe, gate_up[i % E]).chunk(2, dim=-1)
            parts.append(F.linear(F.gelu(gate, approximate="tanh") * up, down[i % E]))
    return torch.cat(parts)


@torch.library.custom_op("dgemma::expert_mlp", mutates_args=())
def expert_mlp_op(xs: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, counts: torch.Tensor,
                  grouped: bool) -> torch.Tensor:
    """`_expert_mlp` as one opaque op for torch.compile: its shapes are known without running it, whereas the
    grouped matmul has no float32 meta kernel and the per-expert loop reads the counts on the host."""
    return _expert_mlp(xs, gate_up, down, counts, grouped)


@expert_mlp_op.register_fake
def _(xs, gate_up, down, counts, grouped):
    return xs.new_empty(xs.shape[0], down.shape[1])


# Under torch.compile, MoE layers whose dense compute (all experts on all tokens) is at most this many FLOPs run
# densely: about where the routed path's fixed costs (sort, gather, a matmul per expert) cost as much on a CPU.
DENSE_EXPERT_FLOPS = 32e6


class Experts(nn.Module):
    """All experts' weights as 3-D tensors, computed grouped: assignments sorted by expert, one grouped matmul."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E, H, I = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, I))
        # torch._grouped_mm needs float32/bf16/fp16 and 16-byte aligned rows
        self.aligned = H % 8 == 0 and I % 8 == 0

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, rows: int = 1) -> torch.Tensor:
        """`rows` > 1: the T tokens are that many equal batch rows, computed apart (grouped by row, then by
        expert): a row's matmuls then have the shapes they have alone, and so its rounding (a CPU matmul's sums
        depend on its row count)."""
        return self.routed(x, index, weights, rows, *self.weights())

    def routed(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, rows: int,
               gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """`forward` with the experts' weights given: (E, 2I, H) and (E, H, I), `index` in 0..E-1."""
        T, K = index.shape
        E, two_i, H = gate_up.shape
        if torch.compiler.is_compiling() and 2 * T * E * (two_i + two_i // 2) * H <= DENSE_EXPERT_FLOPS:
            return self.dense(x, index, weights, gate_up, down)
        flat = index.reshape(-1)
        if rows > 1:
            flat = flat + E * torch.arange(rows, device=flat.device).repeat_interleave(T * K // rows)
        order = flat.argsort(stable=True)
        xs = x[order // K]  # (T*K, H), grouped by (row and) expert
        # tokens per expert; not bincount, whose output size depends on the data (a host sync on GPU)
        counts = torch.zeros(rows * E, dtype=flat.dtype, device=flat.device).index_add_(
            0, flat, torch.ones_like(flat))
        grouped = self.aligned and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        mlp = expert_mlp_op if torch.compiler.is_compiling() else _expert_mlp  # (the op has no backward)
        ys = mlp(xs, gate_up, down, counts, grouped)
        ys = (ys * weights.reshape(-1)[order, None]).to(x.dtype)
        out = torch.empty_like(ys)
        out[order] = ys
        return out.view(T, K, -1).sum(1)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up (E, 2I, H), down (E, H, I)) in the compute dtype."""
        return self.gate_up_proj, self.down_proj

    def dense(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, gate_up: torch.Tensor,
              down: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, the unselected ones weighted by zero: more FLOPs, but for small experts
        one fused graph beats the routed path's sort, gather and per-expert matmul loop. Adding exact zeros
        leaves the weighted sum as the routed path computes it (for two experts per token, bit for bit)."""
        gate, up = torch.einsum("th,eoh->eto", x, gate_up).chunk(2, dim=-1)  # (E, T, I) each
        ys = torch.einsum("eti,ehi->eth", F.gelu(gate, approximate="tanh") * up, down)  # (E, T, H)
        w = torch.zeros(ys.shape[:2][::-1], dtype=weights.dtype, device=x.device).scatter(1, index, weights)
        return (ys * w.t()[..., None]).to(x.dtype).sum(0)
