"""A whole CPU denoising step as one compiled graph, called without dynamo.

torch.compile checks its guards at every call. For a step whose arguments include the model (about 100
parameters) and the generation settings that costs about 0.1 ms a call, a tenth of a tiny model's step, even
with the checks cut to those that tell compiled versions apart. Here the step is traced once per kind of call
with torch.export, compiled by inductor (`torch._inductor.compile`, the FX graph cache included), and later calls
go straight to the compiled code. The trace is non-strict: a strict one (through dynamo) would give torch.compile's
own graph, whose kernels ran 5% faster on the small preset, but it resets every dynamo cache in the process. What a guard would have checked is the lookup key instead: the settings the
step reads (`StepSettings`), the shapes and dtypes, and the identity of the model's tensors. Module-level constants read while tracing (such as `moe.DENSE_EXPERT_FLOPS`) are fixed
when a graph is built.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from .cache import KVCache
from .sampling import Sampler


@dataclass(frozen=True)
class StepSettings:
    """What a denoising step reads of a GenerationConfig (`advance`): a graph is built per distinct value. Made
    once per generation; `key` is its value as a graph's lookup key."""
    sampler: Sampler
    max_denoising_steps: int
    stability_threshold: int
    confidence_threshold: float

    @classmethod
    def of(cls, cfg) -> "StepSettings":
        return cls(cfg.sampler, cfg.max_denoising_steps, cfg.stability_threshold, cfg.confidence_threshold)

    @functools.cached_property
    def key(self) -> str:  # the samplers are plain dataclasses, so not hashable: their repr is the value
        return repr(self)


class _Step(torch.nn.Module):
    """The step over a flat tuple of tensors, as torch.export wants it and the compiled graph is called: the
    cache comes as its tensors."""

    def __init__(self, step_fn: Callable, model, settings: StepSettings):
        super().__init__()
        self.model, self.step_fn, self.settings = model, step_fn, settings

    def forward(self, *tensors):
        (temperature, current, start, u, noise, argmax, history, finished, passes, done, valid, fixed, soft, sets,
         index), rest = tensors[:15], tensors[15:]
        n = len(rest) // 2
        cache = KVCache.over(self.model.config, list(rest[:n]), list(rest[n:]), valid)
        return self.step_fn(self.model, self.settings, temperature, current, cache, start, soft, u, noise, argmax,
                            history, finished, passes, done, fixed, sets, index)


class StepGraphs:
    """`step_fn(model, settings, temperature, current, cache, start, soft, u, noise, argmax, history, finished,
    passes, done, fixed, sets, index)` compiled per kind of call, and called with the same arguments. `soft`,
    `fixed` and the allowed-token table `sets` are always tensors (the engine gives the first step an exact zero
    signal, an unclamped canvas an all-False mask and an unconstrained one a single all-True set), so one graph
    serves every step of every canvas. Under a compiler stance other than the default (say
    `force_eager`) it runs eagerly."""

    def __init__(self, model, step_fn: Callable):
        self.model, self.step_fn = model, step_fn
        self.graphs: dict[tuple, Callable] = {}
        self.weights: tuple = ()

    def check_weights(self) -> None:
        """Drop the graphs if the model's tensors were replaced (a graph holds the ones it was built with).
        Once per generation: it walks every parameter."""
        weights = tuple(id(t) for t in self.model.parameters()) + tuple(id(t) for t in self.model.buffers())
        if weights != self.weights:
            self.graphs.clear()
            self.weights = weights

    def __call__(self, model, settings: StepSettings, temperature, current, cache, start, soft, u, noise, argmax,
                 history, finished, passes, done, fixed, sets, index):
        if not compiling_allowed():
            return self.step_fn(model, settings, temperature, current, cache, start, soft, u, noise, argmax,
                                history, finished, passes, done, fixed, sets, index)
        # contiguous, so that the shapes in the key fix the strides a graph is specialised on (a clamp mask
        # may come expanded); the cache's tensors are its own
        step = (temperature, current, start, u, noise, argmax, history, finished, passes, done, cache.valid, fixed,
                soft, sets, index)
        args = (*_distinct(t.contiguous() for t in step), *cache.keys, *cache.values)
        key = (settings.key, tuple(current.shape), tuple(start.shape), tuple(u.shape), cache.max_length,
               cache.keys[0].dtype, model.embed_tokens.weight.dtype, history.shape[0], sets.shape[0])
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self.build(settings, args)
        return graph(*args)

    def build(self, settings: StepSettings, args: tuple) -> Callable:
        module = _Step(self.step_fn, self.model, settings)
        exported = torch.export.export(module, args, strict=False)
        # A plain graph over the flat tensors: no input checks and no pytree packing around each call, and
        # nothing unpicklable, so inductor's FX graph cache works.
        gm = exported.module(check_guards=False)
        gm = torch.fx.GraphModule(gm, gm.graph)
        gm.graph._codegen = torch.fx.graph.CodeGen()
        gm.recompile()
        return torch._inductor.compile(gm, list(args), options={"cpp_wrapper": True})


def _distinct(tensors) -> list[torch.Tensor]:
    """The tensors, each one whose storage an earlier one shares copied. An export traced on aliased inputs
    (a canvas's first step passes its canvas as both `current` and `argmax`) reads one for both in every later
    call, when they differ."""
    out, seen = [], set()
    for t in tensors:
        if t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out.append(t)
    return out


def compiling_allowed() -> bool:
    """Whether torch.compiler's stance is the default one (a caller's `force_eager` is kept)."""
    stance = getattr(torch._dynamo.eval_frame, "_stance", None)
    return stance is None or (stance.stance, stance.backend) == ("default", None)
