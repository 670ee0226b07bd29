"""Block-diffusion decoding: token ids in, token ids and events out (DESIGN.md section 2).

For each canvas: start from uniform random tokens; at each step n = N..1 run the decoder, divide the logits by
the temperature t_min + (t_max - t_min) n / N, sample every position, let the sampler choose which samples to
keep, renoise the rest, and feed the step's distribution back as self-conditioning. A row stops when its
argmax canvas has been stable and its mean entropy is below a threshold; its argmax canvas is committed and
one encoder pass appends it to the cache. Random numbers are drawn from the engine's own generator in the
reference's order, so a seeded CPU run reproduces transformers' `generate` token for token.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .config import DEFAULT_ENTROPY_BOUND, GENERATION_DEFAULTS, SAMPLER_KEY
from .constraints import Constraints
from .sampling import (EntropyBoundSampler, Sampler, StepStats, compiled_tile_stats, draw_uniforms, fits_one_draw,
                       make_sampler, sample_step, tile_stats)
from .step_graph import StepGraphs, StepSettings, compiling_allowed

if TYPE_CHECKING:  # the model imports the engine (its generate), not the other way round
    from .model import DiffusionGemma


_D = GENERATION_DEFAULTS


@dataclass
class GenerationConfig:
    max_new_tokens: int = _D["max_new_tokens"]
    max_denoising_steps: int = _D["max_denoising_steps"]
    t_min: float = _D["t_min"]
    t_max: float = _D["t_max"]
    temperature: float | None = None  # a constant temperature instead of the schedule
    top_k: int | None = None
    top_p: float | None = None
    stability_threshold: int = _D["stability_threshold"]
    confidence_threshold: float = _D["confidence_threshold"]
    eos_token_id: tuple[int, ...] = tuple(_D["eos_token_id"])
    pad_token_id: int = _D["pad_token_id"]
    sampler: Sampler = field(default_factory=EntropyBoundSampler)
    # Rows whose sequence has ended do no decoder work (the reference keeps denoising them, discarding the
    # result, which also keeps the whole batch stepping): False reproduces the reference batch for batch.
    skip_finished_rows: bool = True

    @classmethod
    def from_checkpoint(cls, defaults: dict, sampler: str | None = None, entropy_bound: float | None = None,
                        tau: float | None = None, **fields) -> "GenerationConfig":
        """A checkpoint's settings (`model.generation_defaults`, from its generation_config.json: length, steps,
        temperature schedule, stopping thresholds, stop and pad ids, the entropy sampler's bound, and dgemma's
        own `dgemma_sampler`), then the arguments where given (None: not given). `sampler` names the acceptance
        rule (`make_sampler`; default the checkpoint's, else the reference's entropy bound)."""
        sampler = sampler or defaults.get(SAMPLER_KEY, "entropy")
        keys = ("max_new_tokens", "max_denoising_steps", "t_min", "t_max", "stability_threshold",
                "confidence_threshold", "eos_token_id", "pad_token_id")
        settings = {**{k: defaults[k] for k in keys if k in defaults},
                    **{k: v for k, v in fields.items() if v is not None}}
        if "eos_token_id" in settings:  # one id or several, as a list (JSON) or any sequence
            eos = settings["eos_token_id"]
            settings["eos_token_id"] = (eos,) if isinstance(eos, int) else tuple(eos)
        if entropy_bound is None:
            entropy_bound = (defaults.get("sampler_config") or {}).get("entropy_bound", DEFAULT_ENTROPY_BOUND)
        return cls(**settings, sampler=make_sampler(sampler, entropy_bound, 0.9 if tau is None else tau))

    def validate(self, vocab_size: int) -> None:
        def need(cond, msg):
            if not cond:
                raise ValueError(msg)
        need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        need(isinstance(self.max_denoising_steps, int) and self.max_denoising_steps >= 1,
             f"max_denoising_steps must be a positive integer, got {self.max_denoising_steps!r}")
        need(0 < self.t_min and 0 < self.t_max, f"t_min and t_max must be > 0, got {self.t_min}, {self.t_max}")
        need(self.temperature is None or self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.top_k is None or self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        need(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(self.stability_threshold >= 0, f"stability_threshold must be >= 0, got {self.stability_threshold}")
        need(0 <= self.pad_token_id < vocab_size, f"pad_token_id {self.pad_token_id} outside the vocabulary")


@dataclass
class StepEvent:
    """One denoising step of the current canvas."""
    canvas: int  # index of the canvas being generated
    step: int  # N..1, counting down
    draft: torch.Tensor  # (B, L) argmax canvas after this step
    accepted: torch.Tensor  # (B, L) positions whose samples were kept
    finished: torch.Tensor  # (B,) rows done denoising this canvas


@dataclass
class CanvasEvent:
    """A committed canvas (stop tokens applied: tokens after the first stop token are pad)."""
    canvas: int
    tokens: torch.Tensor  # (B, L)
    finished: torch.Tensor  # (B,) rows that will generate nothing more
    steps: int  # decoder passes spent on this canvas


@dataclass
class GenerateOutput:
    sequences: torch.Tensor  # (B, prompt + canvases * L), prompt included
    tokens_per_forward: torch.Tensor  # (B,) non-pad generated tokens / decoder passes of that row
    steps_per_canvas: list[int]
    decoder_passes: torch.Tensor  # (B,)


@dataclass
class InfillOutput:
    tokens: list[int]  # the gap's tokens (cut at a stop token)
    gap_length: int  # canvas positions given to the gap
    scores: dict[int, float]  # candidate gap length -> log p(gap + suffix | prefix) under the encoder, when searched
    tokens_per_forward: float


# Gap lengths tried when the caller does not know the gap: dense for short gaps, geometric beyond.
INFILL_GAPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 255)


def temperature_at(cfg: GenerationConfig, step) -> torch.Tensor:
    """The temperature at step `step` (an int, or an int tensor of steps) as a float32 tensor. The reference
    computes the schedule in float32 tensor arithmetic; so do we, for identical logits."""
    step = torch.as_tensor(step, dtype=torch.int32)
    if cfg.temperature is not None:
        return torch.full(step.shape, cfg.temperature)
    return cfg.t_min + (cfg.t_max - cfg.t_min) * (step / cfg.max_denoising_steps)


def seeded_generator(seed: int | None, device) -> torch.Generator:
    """The generator every random draw of a generation comes from: seeded, or from OS entropy."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def advance(cfg: GenerationConfig, step: int, stats: StepStats, current: torch.Tensor, argmax: torch.Tensor,
            soft: torch.Tensor | None, history: torch.Tensor, finished: torch.Tensor, passes: torch.Tensor,
            done: torch.Tensor, noise: torch.Tensor, fixed: torch.Tensor | None):
    """One denoising step's change of state: clamp the given positions, let the sampler choose the samples to
    keep, renoise the rest, hold rows that are finished, then update stability and stopping. `done`: rows whose
    sequence ended before this canvas. Returns accept, current, argmax, soft, history, finished and passes
    (decoder passes per row, this one counted). Eager on its own (compiled alone, its guard check cost what the
    eager ops do at small shapes); inside `whole_step` it is part of the step's graph."""
    if fixed is not None:  # clamped positions are known: zero entropy, never resampled, and no sampler's choice
        stats = StepStats(torch.where(fixed, current, stats.sampled), torch.where(fixed, current, stats.argmax),
                          stats.entropy.masked_fill(fixed, 0.0), stats.logp_sampled.masked_fill(fixed, -math.inf),
                          stats.soft, None if stats.margin is None else stats.margin.masked_fill(fixed, 1.0), fixed)
    accept = cfg.sampler.accept(stats, step, cfg.max_denoising_steps)
    if fixed is not None:  # kept whatever the sampler chose (a confidence or top-k rule may not pick them)
        accept = accept | fixed
    hold = finished[:, None]
    new_current = torch.where(hold, current, torch.where(accept, stats.sampled, noise))
    new_argmax = torch.where(hold, argmax, stats.argmax)
    new_soft = stats.soft if soft is None else torch.where(hold[..., None], soft, stats.soft)
    if cfg.stability_threshold == 0:
        stable = torch.ones_like(finished)
    else:
        stable = (history == new_argmax[None]).all(-1).all(0)
        history = torch.cat([history[1:], new_argmax[None]])
    passes = passes + ~(finished | done)
    finished = finished | (stable & (stats.entropy.mean(-1) < cfg.confidence_threshold))
    return accept, new_current, new_argmax, new_soft, history, finished, passes


def whole_step(model: DiffusionGemma, settings: StepSettings, temperature: torch.Tensor, current: torch.Tensor,
               cache, start: torch.Tensor, soft: torch.Tensor | None, u: torch.Tensor, noise: torch.Tensor,
               argmax: torch.Tensor, history: torch.Tensor, finished: torch.Tensor, passes: torch.Tensor,
               done: torch.Tensor, fixed: torch.Tensor | None, sets: torch.Tensor, index: torch.Tensor):
    """A whole denoising step as pure tensor code, for one compiled graph (CPU, a step's draws within one
    sampler tile): the static decoder forward, the sampling statistics at the (B,) temperatures from uniforms `u`
    (B*L, V) drawn beforehand, each position restricted to its allowed tokens `sets[index]` (S, V)[(B, L)], then
    `advance`. Returns what `advance` does. Only for samplers that ignore the step number."""
    hidden = model.denoise_static(current, cache, start, soft)
    B, L, H = hidden.shape
    temps = temperature.reshape(B, 1).expand(B, L).reshape(B * L, 1)
    sampled, top, logp, entropy, new_soft, margin = tile_stats(
        hidden.view(B * L, H), temps, u, None, model.embed_tokens.weight, model.embed_scale(),
        model.config.final_logit_softcapping, allowed=sets[index.reshape(-1)], margin=settings.sampler.uses_margin)
    stats = StepStats(sampled.view(B, L), top.view(B, L), entropy.view(B, L), logp.view(B, L), new_soft.view(B, L, H),
                      None if margin is None else margin.view(B, L))
    return advance(settings, 0, stats, current, argmax, soft, history, finished, passes, done, noise, fixed)


def draw_per_row(generators: list[torch.Generator], draw) -> torch.Tensor:
    """`draw(generator, rows)` for each run of consecutive batch rows sharing a generator, concatenated: one
    generator for the batch draws exactly what one call for every row would."""
    parts, i = [], 0
    while i < len(generators):
        j = i + 1
        while j < len(generators) and generators[j] is generators[i]:
            j += 1
        parts.append(draw(generators[i], j - i))
        i = j
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# What a model's compiled passes and step graphs are kept in, as long as the model lives.
_COMPILED: "weakref.WeakKeyDictionary[DiffusionGemma, dict]" = weakref.WeakKeyDictionary()


def compiled(model: DiffusionGemma, what: str):
    """`what` of `model` compiled, made once per model: "denoise" and "encode" (`denoise_static`, `encode_static`
    through torch.compile; CUDA graphs on GPU, on CPU a C++ wrapper that calls the kernels without a Python line
    each, 0.3-0.5 ms of a tiny model's 2 ms step), or "step" (`whole_step` as exported graphs, `StepGraphs`)."""
    made = _COMPILED.setdefault(model, {})
    if what not in made:
        if what == "step":
            made[what] = StepGraphs(model, whole_step)
        else:
            cuda = model.device.type == "cuda"
            fn = model.denoise_static if what == "denoise" else model.encode_static
            made[what] = torch.compile(fn, fullgraph=True, dynamic=False, mode="reduce-overhead" if cuda else None,
                                       options=None if cuda else {"cpp_wrapper": True})
    return made[what]


def known_inputs(known: bool):
    """Context for a call of a compiled function whose arguments are of the same kinds (types, settings, shapes)
    as in an earlier call that passed dynamo's full guard check, such as the third and later steps of a canvas.
    Only the guards that tell its compiled versions apart (tensor shapes, dtypes, whatever caused a recompile) are
    then checked: the full check covers every attribute of the model and the settings, about 0.1 ms a call, a
    tenth of a tiny model's step. Only under the default stance: a caller's own (say force_eager) is kept."""
    if not known or not compiling_allowed():
        return contextlib.nullcontext()
    return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)


def apply_stop_tokens(canvas: torch.Tensor, finished: torch.Tensor, stop_ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Committed tokens of a canvas: rows finished earlier become all pad; after a row's first stop token every
    token is pad. Marks rows that produced a stop token in `finished` (in place)."""
    tokens = canvas.clone()
    tokens[finished] = pad
    is_stop = torch.isin(tokens, stop_ids)
    tokens[is_stop.cumsum(-1) - is_stop.long() > 0] = pad
    finished |= is_stop.any(-1)
    return tokens


class Engine:
    """Generation over a `DiffusionGemma`; knows token ids only."""

    def __init__(self, model: DiffusionGemma, compile: bool = False):
        """`compile`: torch.compile the decoder forward (`model.denoise_static`, one graph for every canvas; CUDA
        graphs on GPU), the sampler's tile (`tile_stats`) and the encoder pass that commits a canvas
        (`model.encode_static`). On CPU, when a step's random draws fit in one sampler tile (small vocabularies),
        the whole step is one graph (`whole_step`, exported and called without dynamo: `StepGraphs`). Every row
        stays in the decoder batch until the canvas ends, as in the reference, so the shapes never change; the
        first steps pay for compilation. The compiled callables are attributes, so a benchmark can time the calls."""
        self.model = model
        self.static_denoise = compiled(model, "denoise") if compile else None
        self.static_encode = compiled(model, "encode") if compile else None
        self.denoise = model.denoise
        self.tile_fn = compiled_tile_stats() if compile else None
        self.step_graphs = compiled(model, "step") if compile and model.device.type == "cpu" else None
        self.whole_step = self.step_graphs  # what the loop calls (a benchmark wraps it to time the calls)
        # the allowed-token table of an unconstrained compiled step: one set, every token
        self.every_token = torch.ones(1, model.config.vocab_size, dtype=torch.bool, device=model.device)

    def one_graph(self, cfg: GenerationConfig, rows: int, generator: torch.Generator) -> bool:
        """Whether a step of `rows` canvases with these settings runs as one compiled graph (`whole_step`)."""
        return (self.whole_step is not None and cfg.top_k is None and cfg.top_p is None and not cfg.sampler.uses_step
                and fits_one_draw(rows * self.model.config.canvas_length, self.model.config.vocab_size, generator))

    def step_graph(self, settings: StepSettings, temperature: torch.Tensor, generators: list[torch.Generator],
                   cache, start: torch.Tensor, current, soft, argmax, history, finished, passes, done, fixed,
                   allowed: tuple):
        """A whole step in one graph: the uniforms and the renoising tokens are drawn first, per row in the
        reference's order. Returns what `advance` does."""
        L, V = current.shape[1], self.model.config.vocab_size
        u = draw_per_row(generators, lambda g, n: draw_uniforms((n * L, V), g))
        noise = self.renoising(generators, L)
        return self.whole_step(self.model, settings, temperature, current, cache, start, soft, u, noise, argmax,
                               history, finished, passes, done, fixed, *allowed)

    def sample_stats(self, hidden, temperature, generators, active=None, top_k=None, top_p=None,
                     allowed=None, margin: bool = False) -> StepStats:
        """`sample_step` through the compiled tile where there is one."""
        return sample_step(self.model, hidden, temperature, generators, active, top_k, top_p, self.tile_fn, allowed,
                           margin)

    def sample(self, cfg: GenerationConfig, step: int, hidden: torch.Tensor, temperature: torch.Tensor,
               generators: list[torch.Generator], current, soft, argmax, history, finished, passes, done, fixed,
               active: list[bool] | None = None, allowed: tuple | None = None):
        """The rest of a step from the decoder's hidden states (A, L, H) of the `active` rows: the statistics
        tile by tile (`allowed`: see `sample_step`), the renoising tokens, then `advance`, whose results it
        returns."""
        stats = self.sample_stats(hidden, temperature, generators, active, cfg.top_k, cfg.top_p, allowed,
                                  cfg.sampler.uses_margin)
        noise = self.renoising(generators, current.shape[1])
        return advance(cfg, step, stats, current, argmax, soft, history, finished, passes, done, noise, fixed)

    def renoising(self, generators: list[torch.Generator], L: int) -> torch.Tensor:
        """(B, L) uniform tokens for the positions a step does not keep, drawn after its samples, per row."""
        V, dev = self.model.config.vocab_size, self.model.device
        return draw_per_row(generators, lambda g, n: torch.randint(0, V, (n, L), device=dev, generator=g))

    def prefill(self, input_ids: torch.Tensor, cache, attention_mask: torch.Tensor | None = None,
                images: tuple | None = None) -> torch.Tensor:
        """Encode a prompt into the cache; returns its hidden states. Compiled and unpadded: the first P mod L
        tokens eagerly, then canvas-sized chunks through the commit graph (causal attention makes the split
        exact up to rounding), so prompts of any length share one graph. With images, eagerly (`images` as in
        `stream`)."""
        if self.static_encode is None or attention_mask is not None or images is not None:
            return self.model.encode(input_ids, cache, attention_mask, *(images or ()))
        L, P = self.model.config.canvas_length, input_ids.shape[1]
        head = P % L
        parts = [self.model.encode(input_ids[:, :head], cache)] if head else []
        parts += [self.append(input_ids[:, i:i + L], cache) for i in range(head, P, L)]
        return torch.cat(parts, dim=1)

    def append(self, tokens: torch.Tensor, cache, known: bool = False) -> torch.Tensor:
        """One encoder pass appends (B, n) unpadded tokens (a finished canvas, an AR token) to the cache and
        returns their hidden states; compiled, one graph per n for every position in the cache. `known`: see
        `known_inputs`."""
        if self.static_encode is None:
            return self.model.encode(tokens, cache)
        start = cache.append_slots(tokens.shape[1])  # contiguous: a graph is specialised on strides too
        with known_inputs(known):
            return self.static_encode(tokens.contiguous(), cache, torch.tensor(start, device=cache.device))

    def check_inputs(self, input_ids, attention_mask, cfg: GenerationConfig):
        model = self.model
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be a non-empty (batch, length) tensor, got shape {tuple(input_ids.shape)}")
        input_ids = input_ids.to(model.device, torch.long)
        V = model.config.vocab_size
        if bool(((input_ids < 0) | (input_ids >= V)).any()):
            raise ValueError(f"input_ids contain ids outside the vocabulary [0, {V})")
        cfg.validate(V)
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask, device=model.device).bool()
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                                 f"expected {tuple(input_ids.shape)}")
            if attention_mask.all():
                attention_mask = None
        return input_ids, attention_mask

    @torch.no_grad()
    def stream(self, input_ids, cfg: GenerationConfig | None = None, *, seed: int | None = None,
               attention_mask=None, canvas: torch.Tensor | None = None, clamp: torch.Tensor | None = None,
               constraints: Constraints | None = None, cache=None,
               images: tuple | None = None) -> Iterator[StepEvent | CanvasEvent | GenerateOutput]:
        """Yield a StepEvent per denoising step, a CanvasEvent per committed canvas, and finally the output.

        `canvas` (B, L) and `clamp` (B, L) bool give a starting first canvas whose clamped positions are fixed
        (infilling, editing): never renoised, always committed as given. `constraints` clamp positions and
        restrict others to allowed token sets, canvas by canvas (structured output, dgemma.constraints); the
        positions they leave free in the first canvas start from `canvas` when both are given. A `cache` that
        already holds earlier turns is extended (multi-turn chat): `input_ids` are then only the new tokens; on
        return it holds them and every committed canvas but the last. `images`: (soft tokens, mm_token_type_ids)
        for the prompt's image tokens (`DiffusionGemma.prompt_images`), encoded with it in the prefill."""
        cfg = cfg or GenerationConfig()
        model = self.model
        input_ids, attention_mask = self.check_inputs(input_ids, attention_mask, cfg)
        B, P = input_ids.shape
        L, V = model.config.canvas_length, model.config.vocab_size
        n_canvases = math.ceil(cfg.max_new_tokens / L)
        if cache is None:
            cache = model.new_cache(B, P + n_canvases * L)
        else:
            cache.reserve(P + n_canvases * L, f"a prompt of {P} tokens and {n_canvases} canvases of {L}")
        if self.static_denoise is not None and cache.device.type == "cuda":  # CUDA graphs read the cache in place
            for t in cache.keys + cache.values + [cache.valid]:
                torch._dynamo.mark_static_address(t)
        dev = model.device
        gen = seeded_generator(seed, self.model.device)
        gens = [gen] * B  # one generator, its draws in row order (the server gives each row its own)
        temperatures = temperature_at(cfg, torch.arange(cfg.max_denoising_steps + 1)).to(dev)  # [step], made once
        eos = torch.tensor(cfg.eos_token_id, dtype=torch.long, device=dev)
        if canvas is not None:
            canvas = torch.as_tensor(canvas, device=dev, dtype=torch.long).expand(B, L).clone()
            clamp = (torch.zeros(B, L, dtype=torch.bool, device=dev) if clamp is None
                     else torch.as_tensor(clamp, device=dev, dtype=torch.bool).expand(B, L))
        sequences = [input_ids]
        finished_seq = torch.zeros(B, dtype=torch.bool, device=dev)
        passes = torch.zeros(B, dtype=torch.long, device=dev)
        steps_per_canvas = []
        settings = StepSettings.of(cfg)  # what the whole-step graph reads of cfg
        # The compiled steps take no optional inputs: the first step's self-conditioning is an exact zero signal
        # (the block maps zeros to zeros, see SelfConditioning) and an unclamped canvas has an all-False clamp.
        # Likewise an unconstrained canvas allows every token: set 0 of a one-set table.
        zero_soft = unclamped = unrestricted = None
        if self.static_denoise is not None:
            zero_soft = torch.zeros(B, L, model.config.hidden_size, dtype=model.dtype, device=dev)
            unclamped = torch.zeros(B, L, dtype=torch.bool, device=dev)
            unrestricted = (self.every_token, torch.zeros(B, L, dtype=torch.long, device=dev))
        if constraints is not None:
            constraints.validate(L, V)
        if self.step_graphs is not None:
            self.step_graphs.check_weights()
        self.prefill(input_ids, cache, attention_mask, images)
        for c in range(n_canvases):
            current = torch.randint(0, V, (B, L), device=dev, generator=gen)  # drawn even when a canvas is given
            fixed = allowed = None
            if c == 0 and canvas is not None:
                current, fixed = canvas, clamp
            if constraints is not None:
                current, fixed, allowed = constraints.start(c, current, fixed)
            argmax, soft = current, zero_soft
            finished = finished_seq.clone() if cfg.skip_finished_rows else torch.zeros_like(finished_seq)
            rows, sub_cache, plan = None, cache, None  # the decoder runs on `rows` only, once some are done
            active = (~finished).tolist()
            history = torch.full((max(cfg.stability_threshold, 1), B, L), -1, dtype=torch.long, device=dev)
            steps = 0
            start = None if self.static_denoise is None else torch.tensor(cache.length, device=dev)  # 0-d, compiled
            whole = self.one_graph(cfg, B, gen)
            for step in range(cfg.max_denoising_steps, 0, -1):
                steps += 1
                temperature = temperatures[step].expand(B)
                if whole:  # compiled, the step in one graph
                    accept, current, argmax, soft, history, finished, passes = self.step_graph(
                        settings, temperature, gens, cache, start, current, soft, argmax, history, finished, passes,
                        finished_seq, unclamped if fixed is None else fixed, allowed or unrestricted)
                else:
                    if self.static_denoise is not None:  # compiled: every row, one shape
                        with known_inputs(steps > 2):
                            hidden = self.static_denoise(current, cache, start, soft)
                    else:
                        if B > 1 and not all(active) and (rows is None or len(rows) != sum(active)):
                            rows = torch.tensor([i for i, a in enumerate(active) if a], device=dev)
                            sub_cache, plan = cache.select(rows), None
                        if plan is None:  # positions, RoPE tables and masks: once per canvas (and batch)
                            plan = model.plan(sub_cache, cache.length, L, causal=False)
                        if rows is None:
                            hidden = self.denoise(current, cache, self_conditioning_embeds=soft, logits=False,
                                                  plan=plan)
                        else:
                            hidden = self.denoise(current[rows], sub_cache, logits=False, plan=plan,
                                                  self_conditioning_embeds=None if soft is None else soft[rows])
                    accept, current, argmax, soft, history, finished, passes = self.sample(
                        cfg, step, hidden, temperature, gens, current, soft, argmax, history, finished, passes,
                        finished_seq, fixed, None if rows is None else active, allowed)
                    del hidden
                yield StepEvent(c, step, argmax, accept, finished)
                active = (~finished).tolist()  # the one host sync per step: stop, or shrink the decoder batch
                if not any(active):
                    break
            steps_per_canvas.append(steps)
            if allowed is not None and constraints.repair is not None:
                argmax = constraints.repair(c, argmax)
            tokens = apply_stop_tokens(argmax, finished_seq, eos, cfg.pad_token_id)
            if c == n_canvases - 1:
                finished_seq[:] = True
            sequences.append(tokens)
            yield CanvasEvent(c, tokens, finished_seq.clone(), steps)
            if bool(finished_seq.all()):
                break
            self.append(tokens, cache)
        out = torch.cat(sequences, dim=1)
        generated = (out[:, P:] != cfg.pad_token_id).sum(-1)
        yield GenerateOutput(out, generated / passes, steps_per_canvas, passes)

    def generate(self, input_ids, cfg: GenerationConfig | None = None, **kwargs) -> GenerateOutput:
        for event in self.stream(input_ids, cfg, **kwargs):
            pass
        return event

    @torch.no_grad()
    def infill(self, prefix_ids, suffix_ids, gap_length: int | None = None, cfg: GenerationConfig | None = None,
               seed: int | None = None, max_gap: int | None = None) -> InfillOutput:
        """Fill the gap between a prefix (encoded by the encoder) and a suffix (clamped on the canvas after it).

        With `gap_length` the gap gets exactly that many canvas positions. Without it, several lengths are
        generated side by side (one batch row each) and the model chooses: the row whose prefix + gap + suffix
        the causal encoder finds most likely wins."""
        L = self.model.config.canvas_length
        prefix = torch.as_tensor(prefix_ids, dtype=torch.long).flatten()
        suffix = torch.as_tensor(suffix_ids, dtype=torch.long).flatten()
        if prefix.numel() == 0:
            raise ValueError("infill needs a non-empty prefix (at least a BOS token)")
        if gap_length is not None:
            if not 1 <= gap_length <= L:
                raise ValueError(f"gap length must be between 1 and the canvas length {L}, got {gap_length}")
            lengths = [gap_length]
        else:
            cap = min(max_gap or L - 1, L - 1)
            lengths = sorted({g for g in INFILL_GAPS if g <= cap} | {cap})
        cfg = cfg or GenerationConfig()
        cfg = GenerationConfig(**{**cfg.__dict__, "max_new_tokens": L})
        B = len(lengths)
        canvas = torch.zeros(B, L, dtype=torch.long)
        clamp = torch.zeros(B, L, dtype=torch.bool)
        for row, g in enumerate(lengths):
            part = suffix[:L - g]
            canvas[row, g:g + len(part)] = part
            clamp[row, g:g + len(part)] = True
        out = self.generate(prefix[None].expand(B, -1), cfg, seed=seed, canvas=canvas, clamp=clamp)
        P = prefix.numel()
        stops = set(cfg.eos_token_id) | {cfg.pad_token_id}
        gaps = []
        for row, g in enumerate(lengths):
            tokens = out.sequences[row, P:P + g].tolist()
            cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
            gaps.append(tokens[:cut])
        scores = {}
        best = 0
        if B > 1:
            shared = suffix[:L - max(lengths)].tolist()
            scores = dict(zip(lengths, self.sequence_logprob(prefix.tolist(), [gap + shared for gap in gaps])))
            best = max(range(B), key=lambda r: scores[lengths[r]])
        tpf = float(out.tokens_per_forward[best])
        return InfillOutput(gaps[best], lengths[best], scores, tpf)

    @torch.no_grad()
    def sequence_logprob(self, prefix: list[int], continuations: list[list[int]]) -> list[float]:
        """log p(continuation | prefix) under the causal encoder, for several continuations at once."""
        model = self.model
        width = max(len(c) for c in continuations)
        if width == 0:
            return [0.0] * len(continuations)
        ids = torch.full((len(continuations), len(prefix) + width), model.config.pad_token_id, dtype=torch.long)
        for row, c in enumerate(continuations):
            ids[row, :len(prefix) + len(c)] = torch.tensor(prefix + c)
        ids = ids.to(model.device)
        cache = model.new_cache(len(continuations), ids.shape[1])  # right padding: causal rows ignore it
        logp = torch.log_softmax(model.logits(model.encode(ids, cache))[:, len(prefix) - 1:-1], -1)
        picked = logp.gather(-1, ids[:, len(prefix):, None])[..., 0]
        return [picked[row, :len(c)].sum().item() for row, c in enumerate(continuations)]

    @torch.no_grad()
    def generate_ar(self, input_ids, max_new_tokens: int = 256, *, temperature: float = 0.0,
                    eos_token_id=(1, 106, 50), pad_token_id: int = 0, seed: int | None = None,
                    attention_mask=None, constraints: Constraints | None = None) -> GenerateOutput:
        """Autoregressive decoding of the same weights: the causal encoder plus the tied head, one token per
        forward (greedy when temperature is 0). The baseline for the diffusion-vs-AR comparison. `constraints`
        apply left to right, the generated tokens taken canvas-sized chunk by chunk: a clamped position gets its
        token, a restricted one the best of its set, and each chunk is repaired as a committed canvas is."""
        cfg = GenerationConfig(max_new_tokens=1, eos_token_id=tuple(eos_token_id), pad_token_id=pad_token_id)
        input_ids, attention_mask = self.check_inputs(input_ids, attention_mask, cfg)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        model = self.model
        B, P = input_ids.shape
        cache = model.new_cache(B, P + max_new_tokens)
        gen = seeded_generator(seed, self.model.device)
        eos = torch.tensor(eos_token_id, dtype=torch.long, device=model.device)
        out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=model.device)
        done = torch.zeros(B, dtype=torch.bool, device=model.device)
        hidden = self.prefill(input_ids, cache, attention_mask)[:, -1:]
        L = model.config.canvas_length
        for i in range(max_new_tokens):
            logits = model.logits(hidden)[:, -1]
            if i % L == 0:  # a new chunk: its constraints, made once
                given = None if constraints is None else constraints.canvas(i // L, B, model.device)
            if given is not None:
                sets, index = given[2]
                logits = logits.masked_fill(~sets[index[:, i % L]], -math.inf)
            if temperature > 0:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)[:, 0]
            else:
                nxt = logits.argmax(-1)
            if given is not None:
                nxt = torch.where(given[1][:, i % L], given[0][:, i % L], nxt)
            out[:, i] = torch.where(done, pad_token_id, nxt)
            done |= torch.isin(nxt, eos)
            if i + 1 == max_new_tokens or bool(done.all()):
                break
            hidden = self.append(out[:, i:i + 1], cache, known=i > 0)  # the same kinds of input as token 0's
        if constraints is not None and constraints.repair is not None:  # each chunk, as its canvas would be
            for c in range(min(constraints.tokens.shape[0], -(-(i + 1) // L))):
                chunk = out[:, c * L:(c + 1) * L]
                fixed = constraints.repair(c, torch.cat([chunk, chunk.new_full((B, L - chunk.shape[1]), pad_token_id)],
                                                        1))
                out[:, c * L:(c + 1) * L] = torch.where(chunk == pad_token_id, chunk, fixed[:, :chunk.shape[1]])
        generated = (out != pad_token_id).sum(-1)
        passes = torch.full((B,), i + 1, device=model.device)
        return GenerateOutput(torch.cat([input_ids, out], 1), generated / passes, [], passes)
