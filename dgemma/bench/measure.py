"""The measurements: models built on shared weights, and dgemma's decoding, the reference's `generate` and AR
decoding timed on them. transformers is imported only here, inside the reference comparison, and only when it is
installed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .hardware import PeakMemory, sync, timed

STOP_IDS = (1, 106, 50)


# ---------------------------------------------------------------------------------------------------------------
# building the models: the reference first (when wanted), ours sharing its tensors (no second copy)
# ---------------------------------------------------------------------------------------------------------------
def reference_available() -> bool:
    try:
        import transformers  # noqa: F401
        from transformers import DiffusionGemmaForBlockDiffusion  # noqa: F401
    except Exception:
        return False
    return True


def build_models(model_id: str, dtype: torch.dtype, device, seed: int = 0, with_reference: bool = True,
                 quantize: str | None = None, group_size: int | None = None):
    """(ours, reference or None). A preset gets random weights from `seed`; with a reference, the reference is
    built (or loaded) first and ours takes its tensors, so both run on the very same weights in one copy.
    `quantize` (without a reference): ours quantized weight by weight as it is built."""
    from ..checkpoint import from_reference_key, build_model, _assign
    from ..model import DiffusionGemma
    from ..commands.info import load_config

    dev = torch.device(device)
    if not with_reference:
        return DiffusionGemma.from_pretrained(model_id, dtype=dtype, device=dev, seed=seed, quantize=quantize,
                                              group_size=group_size), None
    if quantize:
        raise ValueError("a quantized model is built without the reference")
    import transformers
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    transformers.logging.set_verbosity_error()
    experts = "eager" if dtype == torch.float64 else "grouped_mm"  # grouped_mm has no float64 kernel
    config = load_config(model_id)[0]
    if Path(model_id).is_dir():
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(  # no device_map: that needs `accelerate`
            model_id, dtype=dtype, experts_implementation=experts).to(dev).eval()
    else:
        hf = DiffusionGemmaConfig.from_dict(config.to_hf_dict())
        torch.manual_seed(seed)
        with torch.device(dev):
            ref = DiffusionGemmaForBlockDiffusion._from_config(hf, dtype=dtype, experts_implementation=experts)
        ref.eval()
        with torch.no_grad():  # as dgemma's init: the pad embedding is zero
            ref.model.decoder.embed_tokens.weight[config.pad_token_id].zero_()
    ours = build_model(DiffusionGemma, config, dtype)
    for key, tensor in ref.state_dict().items():
        if key.startswith(("model.encoder.vision_tower.", "model.encoder.embed_vision.")):
            continue
        name = from_reference_key(key)
        if name is not None:
            _assign(ours, name, tensor.detach())
    ours.reset_buffers()
    for name, t in list(ours.named_parameters()) + list(ours.named_buffers()):
        if t.is_meta:
            raise RuntimeError(f"reference model has no tensor for dgemma's {name}")
    ours.eval()
    return ours, ref


# ---------------------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------------------
def make_prompt(batch: int, length: int, vocab: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(3, vocab, (batch, length), generator=g).to(device)


def measure_prefill(model, prompt: torch.Tensor, reps: int = 3, compile: bool = False) -> float:
    """The prompt into a fresh cache, as the engine does it (`compile`: in compiled canvas-sized chunks)."""
    from ..engine import Engine
    B, P = prompt.shape
    cache = model.new_cache(B, P)
    engine = Engine(model, compile=compile)

    def run():
        cache.reset()
        with torch.no_grad():
            engine.prefill(prompt, cache)
    return timed(run, model.device, reps=reps)[0]


def measure_dgemma(model, prompt, *, new_tokens: int, steps: int, seed: int, reps: int = 2,
                   compile: bool = False) -> dict:
    """End-to-end generation timed from outside (median of `reps` after a warm-up, which also compiles with
    `compile`), then `reps` instrumented runs that split each step into decoder forward, sampling and bookkeeping
    and record the time to first canvas (the run with the fastest median step is kept: the one least disturbed
    by other load)."""
    from ..engine import CanvasEvent, Engine, GenerationConfig, StepEvent
    dev = model.device
    cfg = GenerationConfig(max_new_tokens=new_tokens, max_denoising_steps=steps, eos_token_id=STOP_IDS,
                           pad_token_id=0)
    engine = Engine(model, compile=compile)

    def run():
        return engine.generate(prompt, cfg, seed=seed)
    with PeakMemory(dev) as mem:
        total, out = timed(run, dev, reps=reps)
    B, P = prompt.shape
    generated = int((out.sequences[:, P:] != 0).sum())
    positions = B * (out.sequences.shape[1] - P)

    # instrumented runs: a second engine whose decoder forward and sampling calls are timed (sync'd on CUDA,
    # so a little slower)
    spent = {"forward": 0.0, "sampling": 0.0, "graph": 0.0, "encoder": 0.0}
    inside = set()

    def wrap(fn, what):
        def inner(*a, **k):
            if what in inside:  # (a prefill that appends: counted once)
                return fn(*a, **k)
            inside.add(what)
            sync(dev)
            t = time.perf_counter()
            try:
                r = fn(*a, **k)
                sync(dev)
            finally:
                inside.discard(what)
            spent[what] += time.perf_counter() - t
            return r
        return inner
    timed_engine = Engine(model, compile=compile)
    if compile:
        timed_engine.static_denoise = wrap(timed_engine.static_denoise, "forward")
        if timed_engine.whole_step is not None:
            timed_engine.whole_step = wrap(timed_engine.whole_step, "graph")
    else:
        timed_engine.denoise = wrap(timed_engine.denoise, "forward")
    timed_engine.sample_stats = wrap(timed_engine.sample_stats, "sampling")
    # the encoder passes (the prompt's prefill, a finished canvas's append) fall between step events: their time
    # is taken out of the step they precede
    timed_engine.prefill = wrap(timed_engine.prefill, "encoder")
    timed_engine.append = wrap(timed_engine.append, "encoder")
    best = None
    for _ in range(max(1, reps)):  # the instrumented run with the fastest median step is kept
        for key in spent:
            spent[key] = 0.0
        step_times, ttft, n_steps = [], None, 0
        events = timed_engine.stream(prompt, cfg, seed=seed)
        sync(dev)
        t0 = last = time.perf_counter()
        encoder = 0.0
        for event in events:
            sync(dev)
            now = time.perf_counter()
            if isinstance(event, StepEvent):
                step_times.append(now - last - (spent["encoder"] - encoder))
                n_steps += 1
            if isinstance(event, CanvasEvent) and ttft is None:
                ttft = now - t0
            last, encoder = now, spent["encoder"]
        run = (statistics.median(step_times), step_times, ttft, n_steps, dict(spent))
        if best is None or run[0] < best[0]:
            best = run
    step, step_times, ttft, n_steps, spent = best
    fwd, smp, graph = spent["forward"] / n_steps, spent["sampling"] / n_steps, spent["graph"] / n_steps
    split = {}
    if graph:  # forward, sampling and acceptance ran as one graph: time the forward and sampling apart
        alone = measure_step(model, B, model.config.canvas_length, P, seed=seed, reps=reps, compile=True)
        fwd, smp = alone["forward_s"], alone["sampling_s"]
        split = {"graph_s": graph, "split_timed_apart": True}
    return {**split,
        "total_s": total, "generated_tokens": generated, "committed_positions": positions,
        "tokens_per_s": positions / total, "nonpad_tokens_per_s": generated / total,
        "steps_per_canvas": list(out.steps_per_canvas),
        "tokens_per_forward": float(out.tokens_per_forward.float().mean()),
        "step_s": step, "step_mean_s": sum(step_times) / len(step_times), "forward_s": fwd, "sampling_s": smp,
        "bookkeeping_s": max(0.0, sum(step_times) / n_steps - (graph or fwd + smp)), "ttft_s": ttft,
        "peak_memory_bytes": mem.peak, "peak_extra_bytes": mem.extra, "sequences": out.sequences.cpu(),
    }


def measure_reference(ref, prompt, *, new_tokens: int, steps: int, seed: int, reps: int = 2,
                      compile_static: bool = False) -> dict:
    """The reference's `generate` with the recipe that makes seeded runs comparable (torch.manual_seed(seed))."""
    dev = prompt.device
    kw = dict(max_new_tokens=new_tokens, max_denoising_steps=steps, eos_token_id=list(STOP_IDS), pad_token_id=0)
    if compile_static:
        kw["cache_implementation"] = "static"

    def run():
        torch.manual_seed(seed)
        with torch.no_grad():
            return ref.generate(prompt, **kw)
    with PeakMemory(dev) as mem:
        total, out = timed(run, dev, reps=reps)
    B, P = prompt.shape
    positions = B * (out.sequences.shape[1] - P)
    return {"total_s": total, "tokens_per_s": positions / total, "committed_positions": positions,
            "tokens_per_forward": float(out.tokens_per_forward.float().mean()),
            "peak_memory_bytes": mem.peak, "peak_extra_bytes": mem.extra, "sequences": out.sequences.cpu()}


def reference_generate(ref, prompt, new_tokens, steps, seed, **extra):
    torch.manual_seed(seed)
    with torch.no_grad():
        return ref.generate(prompt, max_new_tokens=new_tokens, max_denoising_steps=steps,
                            eos_token_id=list(STOP_IDS), pad_token_id=0, **extra)


def paired_times(fn_a, fn_b, device, reps: int = 3) -> tuple[float, float, list[float]]:
    """Median wall seconds of two callables timed alternately (a, b, a, b, ...) after one warm-up each, and the
    ratio b / a of each pair, sorted: its spread shows how far the machine's noise moves the comparison."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb), sorted(b / a for a, b in zip(ta, tb))


def compare_sequences(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    """Token identity of two generations: identical, fraction of equal tokens, first differing position."""
    if ours.shape != ref.shape:
        return {"identical": False, "agreement": 0.0, "first_mismatch": None,
                "detail": f"shapes differ: {tuple(ours.shape)} vs {tuple(ref.shape)}"}
    eq = ours == ref
    bad = (~eq).nonzero()
    first = None if len(bad) == 0 else [int(x) for x in bad[0]]
    return {"identical": bool(eq.all()), "agreement": float(eq.float().mean()), "first_mismatch": first,
            "detail": "identical" if first is None else f"first difference at (row, position) {tuple(first)}"}


def measure_ar(model, prompt, *, new_tokens: int, reps: int = 2, compile: bool = False) -> dict:
    """Greedy AR decoding of the same weights with no stop tokens (every row makes `new_tokens` tokens);
    `compile`: its one-token encoder passes compiled, as the diffusion decoder is."""
    from ..engine import Engine
    dev = model.device
    B, P = prompt.shape
    engine = Engine(model, compile=compile)

    def run(n=new_tokens):
        return engine.generate_ar(prompt, max_new_tokens=n, eos_token_id=())
    with PeakMemory(dev) as mem:
        total, out = timed(run, dev, reps=reps)
    n = out.sequences.shape[1] - P
    # per token: the same call making one token (prefill + head) against making n, so both pay the same overheads
    per_token = (total - timed(lambda: run(1), dev, reps=reps)[0]) / max(1, n - 1) if n > 1 else total
    return {"total_s": total, "tokens": B * n, "tokens_per_s": B * n / total, "token_latency_s": per_token,
            "decode_tokens_per_s": B / per_token, "peak_extra_bytes": mem.extra}


def measure_step(model, batch: int, canvas: int, context: int, seed: int = 0, reps: int = 3,
                 compile: bool = False) -> dict:
    """One denoising step (with self-conditioning) at a given batch, canvas length and cached context:
    decoder forward and sampling timed separately (no full generation: used by the scaling sweeps). `compile`:
    the compiled static-shape decoder (`Engine(compile=True)`), compiled by the untimed first call."""
    from ..engine import Engine
    from ..sampling import EntropyBoundSampler
    dev, V = model.device, model.config.vocab_size
    engine = Engine(model, compile=compile)
    cache = model.new_cache(batch, context + canvas)
    g = torch.Generator(device=dev).manual_seed(seed)
    gens, temperature = [g] * batch, torch.ones(batch, device=dev)
    with torch.no_grad():
        model.encode(torch.randint(3, V, (batch, context), device=dev, generator=g), cache)
        cur = torch.randint(0, V, (batch, canvas), device=dev, generator=g)
        soft = engine.sample_stats(model.denoise(cur, cache, logits=False), temperature, gens).soft
        if compile:
            start = torch.tensor(cache.length, device=dev)
            forward = lambda: engine.static_denoise(cur, cache, start, soft)  # noqa: E731
        else:
            forward = lambda: engine.denoise(cur, cache, self_conditioning_embeds=soft, logits=False)  # noqa: E731
        fwd, hidden = timed(forward, dev, reps=reps)
        sampler = EntropyBoundSampler()

        def sample():
            return sampler.accept(engine.sample_stats(hidden, temperature, gens), 1, 1)
        smp, _ = timed(sample, dev, reps=reps)
    return {"forward_s": fwd, "sampling_s": smp, "step_s": fwd + smp}
