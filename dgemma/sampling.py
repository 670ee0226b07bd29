"""Per-step token statistics and the acceptance rules (samplers) of block-diffusion decoding.

Every denoising step samples a token at every canvas position; a sampler decides which of those samples are
kept (accepted) for the next step, the rest being renoised with uniform tokens. The statistics are computed
in row chunks, so sampling never holds more than one chunk of float32 (rows, V) temporaries besides the
logits themselves (with V = 262,144 a full (256, V) float32 tensor is 268 MB per batch row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import DEFAULT_ENTROPY_BOUND

CHUNK_BYTES = 64 * 2**20

_FAST_MULTINOMIAL: bool | None = None  # CPU: does `_exponential_argmax` draw what multinomial does? checked once


def _exponential_argmax(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """torch.multinomial(probs, 1) on CPU, the same draws computed faster. The CPU kernel samples one token per
    row as argmax(p / q) with q ~ Exp(1) drawn serially as -log1p(-u) from the generator's float64 uniforms
    u, followed by a cast to p's dtype; drawing u with torch.rand in one call (`draw_uniforms`) and
    transforming it with vectorised ops consumes the same random stream and gives the same q, without the
    serial log per element."""
    q = torch.log1p(-u).neg().to(probs.dtype)
    return (probs / q).argmax(-1, keepdim=True)


def draw_uniforms(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, dtype=torch.float64, generator=generator, device=generator.device)


def _fast_multinomial_ok() -> bool:
    global _FAST_MULTINOMIAL
    if _FAST_MULTINOMIAL is None:
        probs = torch.softmax(torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)), -1)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        same = all(torch.equal(torch.multinomial(probs, 1, generator=g1),
                               _exponential_argmax(probs, draw_uniforms(probs.shape, g2))) for _ in range(3))
        _FAST_MULTINOMIAL = same and torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    return _FAST_MULTINOMIAL


def uniform_sampling(generator: torch.Generator) -> bool:
    """Whether multinomial sampling can be computed from uniforms drawn in advance (`draw_uniforms`): CPU."""
    return generator.device.type == "cpu" and _fast_multinomial_ok()


def fits_one_draw(rows: int, V: int, generator: torch.Generator) -> bool:
    """Whether a step's samples can come from one up-front draw of (rows, V) float64 uniforms within a chunk."""
    return rows * V * 8 <= CHUNK_BYTES and uniform_sampling(generator)


def chunk_stats(chunk: torch.Tensor, u: torch.Tensor | None, generator: torch.Generator | None,
                embed_weight: torch.Tensor | None, embed_scale: torch.Tensor | None):
    """(n, V) processed logits -> a sample (n,), its log-probability (n,), the entropy (n,) and the soft
    embeddings (n, H) or None. The sample is `torch.multinomial(softmax, 1, generator)`, computed from `u`,
    the (n, V) uniforms that call would draw (`draw_uniforms`), when given. Pure tensor code: the compiled
    engine runs it through torch.compile over a whole step."""
    probs = torch.softmax(chunk, dim=-1, dtype=torch.float32)
    pick = torch.multinomial(probs, 1, generator=generator) if u is None else _exponential_argmax(probs, u)
    soft = None
    if embed_weight is not None:
        if chunk.dtype != embed_weight.dtype:
            probs = torch.softmax(chunk.to(embed_weight.dtype), dim=-1, dtype=torch.float32)
        soft = torch.matmul(probs.to(embed_weight.dtype), embed_weight) * embed_scale
    del probs
    normalised = chunk - chunk.logsumexp(dim=-1, keepdim=True)
    logp = normalised.gather(1, pick)[:, 0]
    # Categorical.entropy: -(clamp(logits, min) * softmax(logits)).sum()
    entropy = -(normalised.clamp(min=torch.finfo(torch.float32).min) * torch.softmax(normalised, -1)).sum(-1)
    return pick[:, 0], logp, entropy, soft


@dataclass
class StepStats:
    sampled: torch.Tensor  # (B, L) a token drawn from softmax(processed logits) at every position
    argmax: torch.Tensor  # (B, L)
    entropy: torch.Tensor  # (B, L) float32, entropy of the processed distribution
    logp_sampled: torch.Tensor  # (B, L) float32, log-probability of the sampled token
    soft: torch.Tensor | None  # (B, L, H) self-conditioning soft embeddings for the next step
    fixed: torch.Tensor | None = None  # (B, L) clamped positions (kept whatever a sampler chooses), if any

    def scatter_rows(self, index: torch.Tensor, batch: int) -> "StepStats":
        """Stats of a sub-batch placed at rows `index` of a batch of `batch` rows (other rows zero)."""
        def grow(t):
            if t is None:
                return None
            full = t.new_zeros((batch, *t.shape[1:]))
            full[index] = t
            return full
        return StepStats(grow(self.sampled), grow(self.argmax), grow(self.entropy), grow(self.logp_sampled),
                         grow(self.soft))


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> None:
    """In place: keep the top-k tokens and/or the smallest set with cumulative probability >= top_p."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits.masked_fill_(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = (cum - sorted_logits.softmax(-1)) >= top_p  # tokens entirely beyond the nucleus
        logits.scatter_(-1, order, sorted_logits.masked_fill(drop, -math.inf))


def step_stats(processed: torch.Tensor, generator: torch.Generator, embed_weight: torch.Tensor | None,
               embed_scale: torch.Tensor | None, batch_rows: list[bool] | None = None, top_k: int | None = None,
               top_p: float | None = None) -> StepStats:
    """Sample, argmax, entropy and (optionally) soft embeddings from (A, L, V) processed logits.

    Matches the reference bit for bit: multinomial over softmax(float32) rows in order (chunking rows does not
    change the random stream on CPU), entropy as torch.distributions.Categorical computes it, soft embeddings
    as softmax(logits cast to the embedding dtype) @ E * sqrt(H).

    `batch_rows` (one flag per batch row) lets the engine skip the decoder for rows that are done: `processed`
    then holds only the True rows, and a False row still draws its L samples from a dummy distribution,
    because on CPU multinomial consumes the random stream independently of the probabilities — so the rows
    that are still running see exactly the random numbers they would see in the full batch."""
    A, L, V = processed.shape
    dev = processed.device
    chunk_rows = max(1, CHUNK_BYTES // (V * 4))
    sampled = torch.empty(A, L, dtype=torch.long, device=dev)
    entropy = torch.empty(A, L, dtype=torch.float32, device=dev)
    logp = torch.empty(A, L, dtype=torch.float32, device=dev)
    soft = None if embed_weight is None else torch.empty(A, L, embed_weight.shape[1], dtype=embed_weight.dtype,
                                                         device=dev)
    presample = uniform_sampling(generator) and processed.is_contiguous()
    a = 0
    for active in batch_rows if batch_rows is not None else [True] * A:
        if not active:
            torch.multinomial(torch.ones(1, V, device=dev).expand(L, V), 1, generator=generator)
            continue
        for i in range(0, L, chunk_rows):
            chunk = processed[a, i:i + chunk_rows]
            if top_k is not None or top_p is not None:
                filter_logits(chunk, top_k, top_p)  # in place, chunk by chunk: no full-size temporaries
            u = draw_uniforms(chunk.shape, generator) if presample else None
            rows = slice(i, i + chunk_rows)
            sampled[a, rows], logp[a, rows], entropy[a, rows], s = chunk_stats(chunk, u, generator, embed_weight,
                                                                               embed_scale)
            if soft is not None:
                soft[a, rows] = s
        a += 1
    return StepStats(sampled, processed.argmax(-1), entropy, logp, soft)


_COMPILED_CHUNK_STATS = None


def compiled_chunk_stats():
    """`chunk_stats` through torch.compile, made once (one graph per shape and dtype)."""
    global _COMPILED_CHUNK_STATS
    if _COMPILED_CHUNK_STATS is None:
        _COMPILED_CHUNK_STATS = torch.compile(chunk_stats, fullgraph=True, dynamic=False,
                                              options={"cpp_wrapper": True})
    return _COMPILED_CHUNK_STATS


def whole_step_stats(processed: torch.Tensor, generator: torch.Generator, embed_weight: torch.Tensor | None,
                     embed_scale: torch.Tensor | None, stats_fn) -> StepStats | None:
    """`step_stats` for every row at once through `stats_fn` (a compiled `chunk_stats`), when the step's
    uniforms fit in one chunk (small vocabularies); None when they do not, or the device draws differently."""
    A, L, V = processed.shape
    if not fits_one_draw(A * L, V, generator):
        return None
    u = draw_uniforms((A * L, V), generator)
    sampled, logp, entropy, soft = stats_fn(processed.view(A * L, V), u, None, embed_weight, embed_scale)
    return StepStats(sampled.view(A, L), processed.argmax(-1), entropy.view(A, L), logp.view(A, L),
                     None if soft is None else soft.view(A, L, -1))


class Sampler:
    """Decides which sampled positions are kept at a step. `step` counts down from `num_steps` to 1."""

    uses_step = False  # whether `accept` depends on the step (a compiled step would be one graph per step)

    def accept(self, stats: StepStats, step: int, num_steps: int) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class EntropyBoundSampler(Sampler):
    """The reference rule: sort positions by entropy, keep the largest prefix with cumsum(H) - H <= bound
    (an upper bound on the joint dependence of the kept tokens); the lowest-entropy position is always kept."""

    entropy_bound: float = DEFAULT_ENTROPY_BOUND

    def __post_init__(self):
        if not self.entropy_bound > 0:
            raise ValueError(f"entropy_bound must be > 0, got {self.entropy_bound}")

    def accept(self, stats, step, num_steps):
        sorted_h, order = torch.sort(stats.entropy, dim=-1)
        keep = torch.cumsum(sorted_h, dim=-1) - sorted_h <= self.entropy_bound
        # back to canvas order by gathering at each position's rank; the equivalent scatter into zeros is
        # miscompiled by inductor on CPU (torch 2.13) when a clamp mask is OR-ed in after it, for batches > 1
        return keep.gather(-1, torch.argsort(order, dim=-1))


@dataclass
class ConfidenceSampler(Sampler):
    """Keep every position whose sampled token has probability >= tau, and at least the most confident one."""

    tau: float = 0.9

    def __post_init__(self):
        if not 0 < self.tau <= 1:
            raise ValueError(f"confidence threshold tau must be in (0, 1], got {self.tau}")

    def accept(self, stats, step, num_steps):
        keep = stats.logp_sampled >= math.log(self.tau)
        best = stats.logp_sampled.argmax(-1, keepdim=True)
        return keep.scatter(-1, best, True)


@dataclass
class TopKScheduleSampler(Sampler):
    """Keep the k lowest-entropy free positions, k growing linearly so that every free position is kept at the
    last step. Clamped positions do not count: with 30 givens on an 81-cell canvas the schedule spreads the 51
    free cells over the steps, rather than spending its first steps on cells that are kept anyway."""

    uses_step = True

    def accept(self, stats, step, num_steps):
        B, L = stats.entropy.shape
        entropy, free = stats.entropy, torch.full((B, 1), L, device=stats.entropy.device)
        if stats.fixed is not None:
            entropy = entropy.masked_fill(stats.fixed, math.inf)  # ranked after every free position
            free = (~stats.fixed).sum(-1, keepdim=True)
        k = (free * (num_steps - step + 1) + num_steps - 1) // num_steps  # ceil(free * done / num_steps), (B, 1)
        keep = torch.arange(L, device=entropy.device) < k  # (B, L) in entropy order
        return torch.zeros_like(keep).scatter(-1, torch.argsort(entropy, dim=-1), keep)


SAMPLERS = {"entropy": EntropyBoundSampler, "confidence": ConfidenceSampler, "topk": TopKScheduleSampler}


def make_sampler(name: str, entropy_bound: float = DEFAULT_ENTROPY_BOUND, tau: float = 0.9) -> Sampler:
    if name == "entropy":
        return EntropyBoundSampler(entropy_bound)
    if name == "confidence":
        return ConfidenceSampler(tau)
    if name == "topk":
        return TopKScheduleSampler()
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
