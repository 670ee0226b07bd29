"""Per-step token statistics and the acceptance rules (samplers) of block-diffusion decoding.

Every denoising step samples a token at every canvas position; a sampler decides which of those samples are
kept (accepted) for the next step, the rest being renoised with uniform tokens. The statistics are computed
from the decoder's hidden states tile by tile: a tile's logits, their softmax, the sample, entropy and soft
embedding, then the next tile. No (B, L, V) tensor exists: with V = 262,144 one canvas row of float32 logits
would be 268 MB, a tile of a CPU step is 4 MiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import DEFAULT_ENTROPY_BOUND

# float32 logits per tile: a CPU tile's transient (logits, probabilities, uniforms, entropy terms) is about seven
# times this (bench/sampler_memory.py). Each tile reads the whole head twice (logits, soft embeddings):
# at V = 262,144 (1.5 GB in bf16) a 256-position step took 17.6 s in 4 MiB tiles (4 rows), 7.4 s in 16 MiB and
# 6.0 s in 32 MiB ones on a 2-core EPYC; 8 MiB keeps a sequence-step's transient under 64 MB (issue #22).
TILE_BYTES = {"cpu": 8 * 2**20, "cuda": 256 * 2**20}

_FAST_MULTINOMIAL: bool | None = None  # CPU: does `_exponential_argmax` draw what multinomial does? checked once


def tied_logits(hidden: torch.Tensor, weight: torch.Tensor, cap: float) -> torch.Tensor:
    """The tied head, then `cap * tanh(logits / cap)` in float32 (in place: one (.., V) tensor)."""
    return F.linear(hidden, weight).float().div_(cap).tanh_().mul_(cap)


def tile_rows(V: int, device) -> int:
    return max(1, TILE_BYTES.get(torch.device(device).type, TILE_BYTES["cpu"]) // (4 * V))


def _exponential_argmax(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """torch.multinomial(probs, 1) on CPU, the same draws computed faster. The CPU kernel samples one token per
    row as argmax(p / q) with q ~ Exp(1) drawn serially as -log1p(-u) from the generator's float64 uniforms
    u, followed by a cast to p's dtype; drawing u with torch.rand in one call (`draw_uniforms`) and
    transforming it with vectorised ops consumes the same random stream and gives the same q, without the
    serial log per element. `u` is overwritten."""
    q = u.neg_().log1p_().neg_().to(probs.dtype)
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
    """Whether a step's samples can come from one up-front draw of (rows, V) uniforms: one tile, on a CPU."""
    return rows <= tile_rows(V, "cpu") and uniform_sampling(generator)


def tile_stats(hidden: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor | None,
               generator: torch.Generator | None, weight: torch.Tensor, scale: torch.Tensor, cap: float,
               top_k: int | None = None, top_p: float | None = None, allowed: torch.Tensor | None = None,
               margin: bool = False):
    """(n, H) final-normed hidden states of n canvas positions and their (n, 1) temperatures -> a sample (n,),
    the argmax (n,), the sample's log-probability (n,), the entropy (n,), the soft embeddings (n, H) of the
    processed distribution (softcapped logits / temperature, top-k / top-p filtered) and, when `margin`, the
    top-1 minus top-2 probability (n,) (else None: a full-vocabulary top-k a sampler may not need). The sample is
    `torch.multinomial(softmax, 1, generator)`, computed from `u`, the (n, V) uniforms that call would draw
    (`draw_uniforms`, overwritten), when given. `allowed` (n, V) bool restricts each position to its allowed
    tokens (structured output, dgemma.constraints): the others get logit -inf before anything reads the logits,
    as a transformers logits processor's mask does. Pure tensor code: compiled per tile shape or over a step.
    Matches the reference bit for bit: entropy as torch.distributions.Categorical computes it, soft embeddings as
    softmax(logits cast to the embedding dtype) @ E * sqrt(H)."""
    logits = tied_logits(hidden, weight, cap).div_(temperature)
    if allowed is not None:
        logits.masked_fill_(~allowed, -math.inf)
    if top_k is not None or top_p is not None:
        filter_logits(logits, top_k, top_p)
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    pick = torch.multinomial(probs, 1, generator=generator) if u is None else _exponential_argmax(probs, u)
    gap = None
    if margin:
        top2 = probs.topk(2, dim=-1).values
        gap = top2[:, 0] - top2[:, 1]
    if logits.dtype != weight.dtype:
        probs = torch.softmax(logits.to(weight.dtype), dim=-1, dtype=torch.float32)
    soft = torch.matmul(probs.to(weight.dtype), weight) * scale
    del probs
    argmax = logits.argmax(-1)
    normalised = logits - logits.logsumexp(dim=-1, keepdim=True)
    del logits
    logp = normalised.gather(1, pick)[:, 0]
    # Categorical.entropy: -(clamp(logits, min) * softmax(logits)).sum(), in place
    p = torch.softmax(normalised, -1)
    entropy = normalised.clamp_(min=torch.finfo(torch.float32).min).mul_(p).sum(-1).neg_()
    return pick[:, 0], argmax, logp, entropy, soft, gap


@dataclass
class StepStats:
    sampled: torch.Tensor  # (B, L) a token drawn from softmax(processed logits) at every position
    argmax: torch.Tensor  # (B, L)
    entropy: torch.Tensor  # (B, L) float32, entropy of the processed distribution
    logp_sampled: torch.Tensor  # (B, L) float32, log-probability of the sampled token
    soft: torch.Tensor  # (B, L, H) self-conditioning soft embeddings for the next step
    margin: torch.Tensor | None = None  # (B, L) float32, top-1 minus top-2 probability, if the sampler asks
    fixed: torch.Tensor | None = None  # (B, L) clamped positions (kept whatever a sampler chooses), if any


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


def sample_step(model, hidden: torch.Tensor, temperature: torch.Tensor, generators: list[torch.Generator],
                active: list[bool] | None = None, top_k: int | None = None, top_p: float | None = None,
                tile_fn=None, allowed=None, margin: bool = False) -> StepStats:
    """The step's statistics (`tile_stats`) for every position of a batch, tile by tile, from the decoder's
    hidden states (A, L, H) of its active rows. `temperature` (B,) and `generators` are per batch row (one
    generator may serve several rows: its draws then run in row order, as the reference's do). `active` (one
    flag per batch row) lets the engine skip the decoder for rows that are done: such a row still draws its
    L * V uniforms, because on CPU multinomial consumes the random stream independently of the probabilities,
    so the running rows see exactly the random numbers they would see in the full batch; its statistics are
    zeros. `tile_fn`: a compiled `tile_stats` (no top-k / top-p). `allowed`: (sets (S, V) bool, index (B, L)
    long), each position's allowed tokens `sets[index]` (see dgemma.constraints), or None. `margin`: also
    compute `StepStats.margin`."""
    A, L, H = hidden.shape
    B, dev = len(generators), hidden.device
    active = [True] * B if active is None else active
    weight, scale, cap = model.embed_tokens.weight, model.embed_scale(), model.config.final_logit_softcapping
    V = weight.shape[0]
    t = tile_rows(V, dev)
    presample = uniform_sampling(generators[0])
    flat = hidden.reshape(A * L, H)
    temps = temperature.float().reshape(B)[[b for b in range(B) if active[b]]].repeat_interleave(L)[:, None]
    out = (torch.zeros(B * L, dtype=torch.long, device=dev), torch.zeros(B * L, dtype=torch.long, device=dev),
           torch.zeros(B * L, device=dev), torch.zeros(B * L, device=dev),
           torch.zeros(B * L, H, dtype=weight.dtype, device=dev))
    if margin:
        out += (torch.zeros(B * L, device=dev),)
    fn = tile_fn if tile_fn is not None and presample and top_k is None and top_p is None else tile_stats
    runs = []  # [generator, first row b0, end row b1, active, its first active row a0]: rows that draw as one
    a = 0
    for b, g in enumerate(generators):
        if runs and runs[-1][0] is g and runs[-1][2] == b and runs[-1][3] == active[b] and active[b]:
            runs[-1][2] = b + 1
        else:
            runs.append([g, b, b + 1, active[b], a])
        a += active[b]
    for g, b0, b1, on, a0 in runs:
        for i in range(0, (b1 - b0) * L, t):
            n = min(t, (b1 - b0) * L - i)
            if not on:  # the rows' draws, discarded
                if presample:
                    draw_uniforms((n, V), g)
                else:
                    torch.multinomial(torch.ones(1, V, device=dev).expand(n, V), 1, generator=g)
                continue
            src, dst = slice(a0 * L + i, a0 * L + i + n), slice(b0 * L + i, b0 * L + i + n)
            u = draw_uniforms((n, V), g) if presample else None
            mask = None if allowed is None else allowed[0][allowed[1].reshape(-1)[dst]]
            for buf, val in zip(out, fn(flat[src], temps[src], u, None if presample else g, weight, scale, cap,
                                        top_k, top_p, mask, margin)):
                buf[dst] = val
    sampled, argmax, logp, entropy, soft = out[:5]
    return StepStats(sampled.view(B, L), argmax.view(B, L), entropy.view(B, L), logp.view(B, L),
                     soft.view(B, L, H), out[5].view(B, L) if margin else None)


_COMPILED_TILE_STATS = None


def compiled_tile_stats():
    """`tile_stats` through torch.compile, made once (one graph per tile shape and dtype)."""
    global _COMPILED_TILE_STATS
    if _COMPILED_TILE_STATS is None:
        _COMPILED_TILE_STATS = torch.compile(tile_stats, fullgraph=True, dynamic=False,
                                             options={"cpp_wrapper": True})
    return _COMPILED_TILE_STATS


class Sampler:
    """Decides which sampled positions are kept at a step. `step` counts down from `num_steps` to 1."""

    uses_step = False  # whether `accept` depends on the step (a compiled step would be one graph per step)
    uses_margin = False  # whether `accept` reads StepStats.margin

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
    """Keep the k most certain free positions, k growing linearly so that every free position is kept at the
    last step. Clamped positions do not count: with 30 givens on an 81-cell canvas the schedule spreads the 51
    free cells over the steps, rather than spending its first steps on cells that are kept anyway. Certainty is
    low entropy (`score="entropy"`) or a large top-1 minus top-2 probability (`score="margin"`: Kim et al. 2025
    found it much better than top-1 probability on Sudoku, where two digits often compete for a cell)."""

    score: str = "entropy"
    uses_step = True

    def __post_init__(self):
        if self.score not in ("entropy", "margin"):
            raise ValueError(f"unknown top-k score {self.score!r}; choose entropy or margin")

    @property
    def uses_margin(self) -> bool:
        return self.score == "margin"

    def accept(self, stats, step, num_steps):
        B, L = stats.entropy.shape
        rank = stats.entropy if self.score == "entropy" else -stats.margin  # ascending: most certain first
        free = torch.full((B, 1), L, device=rank.device)
        if stats.fixed is not None:
            rank = rank.masked_fill(stats.fixed, math.inf)  # ranked after every free position
            free = (~stats.fixed).sum(-1, keepdim=True)
        k = (free * (num_steps - step + 1) + num_steps - 1) // num_steps  # ceil(free * done / num_steps), (B, 1)
        keep = torch.arange(L, device=rank.device) < k  # (B, L) in rank order
        return torch.zeros_like(keep).scatter(-1, torch.argsort(rank, dim=-1), keep)


SAMPLERS = {"entropy": EntropyBoundSampler, "confidence": ConfidenceSampler, "topk": TopKScheduleSampler,
            "margin": TopKScheduleSampler}


def make_sampler(name: str, entropy_bound: float = DEFAULT_ENTROPY_BOUND, tau: float = 0.9) -> Sampler:
    if name == "entropy":
        return EntropyBoundSampler(entropy_bound)
    if name == "confidence":
        return ConfidenceSampler(tau)
    if name in ("topk", "margin"):
        return TopKScheduleSampler("entropy" if name == "topk" else "margin")
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
