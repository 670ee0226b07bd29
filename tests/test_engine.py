"""Generation engine: reference-exact sampling, batching, clamping, stop tokens, samplers, streaming."""

import math

import pytest
import torch

import dgemma
from dgemma import DiffusionGemma
from dgemma.engine import CanvasEvent, GenerateOutput, GenerationConfig, StepEvent, apply_stop_tokens
from dgemma.sampling import (ConfidenceSampler, EntropyBoundSampler, StepStats, TopKScheduleSampler, sample_step,
                             tile_stats)

from .reference import load_reference, make_reference


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref-engine")
    make_reference("a", canvas_length=8, seed=3).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("settings", [
    # near-greedy and accept-all: rows become stable and confident early, at different steps
    dict(max_denoising_steps=10, t_min=0.01, t_max=0.02, confidence_threshold=0.5, entropy_bound=5.0),
    dict(max_denoising_steps=6),  # the released defaults otherwise (nothing stops early on a random model)
    dict(max_denoising_steps=8, confidence_threshold=3.0, stability_threshold=2, t_min=0.2, t_max=1.5,
         entropy_bound=0.5),
])
def test_reference_exact_tokens(checkpoint, dtype, settings):
    ref, ours = load_reference(checkpoint, dtype), DiffusionGemma.from_pretrained(checkpoint, dtype=dtype)
    prompt = torch.randint(3, 128, (1, 19), generator=torch.Generator().manual_seed(0))  # window is 8
    prompt = prompt.repeat(2, 1)  # rows differ through sampling; the reference runs them as one batch too
    ref_kw = {k: v for k, v in settings.items() if k != "entropy_bound"}
    if "entropy_bound" in settings:
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig
        ref_kw["sampler_config"] = EntropyBoundSamplerConfig(entropy_bound=settings["entropy_bound"])
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        r = ref.generate(prompt, max_new_tokens=32, eos_token_id=[1, 106, 50], pad_token_id=0, **ref_kw)
        o = ours.generate(prompt, max_new_tokens=32, seed=seed, **settings)
        # skipping rows whose sequence ended departs from the reference's batch only once a row has ended
        o_ref_mode = ours.generate(prompt, max_new_tokens=32, seed=seed, skip_finished_rows=False, **settings)
        assert torch.equal(r.sequences, o_ref_mode.sequences), f"seed {seed}"
        if not (o.sequences[:, 19:] == 0).any():
            assert torch.equal(o.sequences, o_ref_mode.sequences)
        assert torch.allclose(r.tokens_per_forward.double(), o_ref_mode.tokens_per_forward.double())
    if "entropy_bound" in settings and settings["entropy_bound"] == 5.0:
        assert min(o.steps_per_canvas) < settings["max_denoising_steps"]  # early stopping was exercised
        assert o.decoder_passes[0] != o.decoder_passes[1]


def test_three_canvases_without_stop_tokens_match_reference(checkpoint):
    ref, ours = load_reference(checkpoint, torch.float64), DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    prompt = torch.randint(3, 128, (1, 11), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    r = ref.generate(prompt, max_new_tokens=24, max_denoising_steps=5, eos_token_id=[127], pad_token_id=0)
    o = ours.generate(prompt, max_new_tokens=24, max_denoising_steps=5, eos_token_id=[127], seed=7)
    assert torch.equal(r.sequences, o.sequences)
    assert o.sequences.shape[1] == 11 + 24 and len(o.steps_per_canvas) == 3


def test_the_sliding_ring_wraps_several_times_and_matches_reference(checkpoint):
    """A prompt 4x the window, then 5 canvases: the sliding layers' ring (window 8 - 1 + canvas 8 = 15 slots) wraps
    four times, and the tokens are the reference's, whose sliding layers keep every position."""
    ref, ours = load_reference(checkpoint, torch.float64), DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    prompt = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(4))
    cache = ours.new_cache(2, 32 + 40)
    assert cache.ring == 15 and cache.keys[0].shape[2] == 15 and cache.keys[1].shape[2] == 72  # sliding, global
    torch.manual_seed(3)
    r = ref.generate(prompt, max_new_tokens=40, max_denoising_steps=4, eos_token_id=[127], pad_token_id=0)
    o = ours.generate(prompt, max_new_tokens=40, max_denoising_steps=4, eos_token_id=[127], seed=3)
    assert torch.equal(r.sequences, o.sequences) and len(o.steps_per_canvas) == 5


def test_kv_cache_of_the_released_shape_and_a_context_beyond_the_model():
    """The released shape in bf16: 20 KiB per token on the global layers plus 0.24 GiB per sequence of sliding
    rings (DESIGN.md section 6), so 256K tokens fit in about 5.2 GiB; computed, not allocated. A cache or a
    generation beyond the model's maximum context is refused before anything is allocated, naming both numbers."""
    from dgemma import KVCache, get_preset
    cfg = get_preset("diffusiongemma-26b-a4b")
    one, two = (KVCache.nbytes(cfg, 1, n, torch.bfloat16) for n in (100_000, 200_000))
    per_token = (two - one) / 100_000
    assert 20 * 1024 <= per_token <= 21 * 1024  # 20 KiB of keys and values, one byte of padding mask
    assert one - 100_000 * per_token <= 0.25 * 2**30
    assert KVCache.nbytes(cfg, 1, 262_144, torch.bfloat16) <= 6 * 2**30
    tiny = DiffusionGemma.from_pretrained("tiny")
    with pytest.raises(ValueError, match="4352 positions exceeds the model's maximum context of 4096"):
        tiny.generate(torch.full((1, 4000), 5), max_new_tokens=352)


def test_left_padded_rows_match_rows_run_alone(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float32)
    prompts = [torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 12, 9)]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):], mask[i, width - len(p):] = p, 1
    canvas = torch.randint(0, 128, (3, 8), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        cache = model.new_cache(3, width + 16)
        model.encode(batch, cache, mask)
        batched = model.denoise(canvas, cache)
        model.encode(canvas, cache)
        batched2 = model.denoise(canvas.flip(1), cache, batched)
        for i, p in enumerate(prompts):
            alone_cache = model.new_cache(1, len(p) + 16)
            model.encode(p[None], alone_cache)
            alone = model.denoise(canvas[i:i + 1], alone_cache)
            torch.testing.assert_close(batched[i:i + 1], alone, atol=2e-5, rtol=1e-5)
            model.encode(canvas[i:i + 1], alone_cache)
            alone2 = model.denoise(canvas[i:i + 1].flip(1), alone_cache, alone)
            torch.testing.assert_close(batched2[i:i + 1], alone2, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["entropy", "confidence", "topk"])
def test_clamped_positions_never_change(checkpoint, sampler):
    """Whatever the sampler would choose, clamped positions are kept (a random model is never confident enough
    for the confidence sampler, and the top-k schedule keeps one position at its first step)."""
    model = DiffusionGemma.from_pretrained(checkpoint)
    canvas = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(4))
    clamp = torch.zeros(2, 8, dtype=torch.bool)
    clamp[:, 5:] = True
    clamp[1, 0] = True
    events = list(model.generate(torch.randint(3, 128, (2, 6)), max_new_tokens=8, max_denoising_steps=12, seed=0,
                                 canvas=canvas, clamp=clamp, eos_token_id=[127], stream=True, sampler=sampler,
                                 tau=0.999))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert len(steps) >= 2
    for e in steps:
        assert torch.equal(e.draft[clamp], canvas[clamp])
        assert e.accepted[clamp].all()
    assert torch.equal(events[-1].sequences[:, 6:][clamp], canvas[clamp])


def test_stop_tokens_pad_everything_after_the_first_stop():
    canvas = torch.tensor([[5, 6, 1, 7, 106, 8], [5, 6, 7, 8, 9, 10], [3, 3, 3, 3, 3, 3]])
    finished = torch.tensor([False, False, True])
    tokens = apply_stop_tokens(canvas, finished, torch.tensor([1, 106, 50]), pad=0)
    assert tokens.tolist() == [[5, 6, 1, 0, 0, 0], [5, 6, 7, 8, 9, 10], [0, 0, 0, 0, 0, 0]]
    assert finished.tolist() == [True, False, True]


def test_generation_stops_at_stop_token_and_counts_tokens_per_forward(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    out = model.generate(torch.randint(3, 128, (1, 5)), max_new_tokens=40, max_denoising_steps=4, seed=0,
                         eos_token_id=list(range(128)))  # every token stops: one canvas, then done
    assert len(out.steps_per_canvas) == 1 and out.sequences.shape[1] == 5 + 8
    assert (out.sequences[0, 6:] == 0).all() and out.tokens_per_forward.item() == pytest.approx(1 / 4)


def stats_from_entropy(entropy, logp=None):
    entropy = torch.tensor(entropy)
    return StepStats(sampled=torch.zeros_like(entropy, dtype=torch.long), argmax=torch.zeros_like(entropy, dtype=torch.long),
                     entropy=entropy, logp_sampled=torch.tensor(logp) if logp is not None else -entropy, soft=None)


def test_entropy_bound_sampler_rule():
    # sorted: 0.01, 0.02, 0.05, 0.3, 1.0 -> cumsum - H: 0, .01, .03, .08, .38 -> bound 0.1 keeps four
    stats = stats_from_entropy([[1.0, 0.02, 0.3, 0.01, 0.05]])
    assert EntropyBoundSampler(0.1).accept(stats, 5, 10).tolist() == [[False, True, True, True, True]]
    assert EntropyBoundSampler(0.005).accept(stats, 5, 10).tolist() == [[False, False, False, True, False]]
    with pytest.raises(ValueError, match="entropy_bound"):
        EntropyBoundSampler(0.0)


def test_generation_config_from_a_checkpoint():
    """A checkpoint's generation_config.json settings, its entropy bound included, unless given explicitly."""
    defaults = {"max_denoising_steps": 32, "t_min": 1.5, "t_max": 2.0, "confidence_threshold": 0.01,
                "sampler_config": {"entropy_bound": 0.3}, "unrelated": 7}
    cfg = GenerationConfig.from_checkpoint(defaults)
    assert (cfg.max_denoising_steps, cfg.t_min, cfg.t_max, cfg.confidence_threshold) == (32, 1.5, 2.0, 0.01)
    assert cfg.sampler == EntropyBoundSampler(0.3) and cfg.stability_threshold == 1
    cfg = GenerationConfig.from_checkpoint(defaults, "entropy", 0.7, max_denoising_steps=8, t_min=None)
    assert cfg.sampler == EntropyBoundSampler(0.7) and cfg.max_denoising_steps == 8 and cfg.t_min == 1.5
    assert GenerationConfig.from_checkpoint({}).sampler == EntropyBoundSampler(0.1)
    assert GenerationConfig.from_checkpoint(defaults, "confidence", tau=0.5).sampler == ConfidenceSampler(0.5)
    assert isinstance(GenerationConfig.from_checkpoint(defaults, "topk").sampler, TopKScheduleSampler)
    with pytest.raises(ValueError, match="unknown sampler"):
        GenerationConfig.from_checkpoint(defaults, "greedy")


def test_model_generate_starts_from_the_checkpoints_generation_config(monkeypatch):
    """`model.generate` from Python runs the bundled Sudoku model's own settings (32 steps at 2.0 to 1.5, stable
    for 5), not the reference's (48 steps at 0.8 to 0.4); an explicit argument wins over its key alone."""
    from pathlib import Path

    import dgemma.engine
    seen, real = [], dgemma.engine.Engine.stream
    monkeypatch.setattr(dgemma.engine.Engine, "stream", lambda self, ids, cfg, **kw: seen.append(cfg) or real(
        self, ids, cfg, **kw))
    model = DiffusionGemma.from_pretrained(Path(dgemma.__file__).parent / "assets" / "sudoku")
    ids = torch.tensor([[2, 5, 6]])
    first = next(model.generate(ids, max_new_tokens=1, seed=0, stream=True))
    cfg = seen[-1]
    assert first.step == 32 and (cfg.max_denoising_steps, cfg.t_max, cfg.t_min) == (32, 2.0, 1.5)
    assert (cfg.stability_threshold, cfg.confidence_threshold, cfg.eos_token_id) == (5, 100.0, (1, 106, 50))
    model.generate(ids, max_new_tokens=1, seed=0, max_denoising_steps=3, t_max=2.5, eos_token_id=7)
    cfg = seen[-1]
    assert (cfg.max_denoising_steps, cfg.t_max, cfg.t_min, cfg.eos_token_id) == (3, 2.5, 1.5, (7,))
    preset = DiffusionGemma.from_pretrained("tiny")  # no file: the reference's defaults
    preset.generate(torch.tensor([[2, 5]]), max_new_tokens=1, seed=0, max_denoising_steps=1)
    assert (seen[-1].t_max, seen[-1].t_min, seen[-1].max_denoising_steps) == (0.8, 0.4, 1)


def test_confidence_sampler_rule():
    logp = [[math.log(0.95), math.log(0.5), math.log(0.91), math.log(0.2)], [math.log(0.3)] * 3 + [math.log(0.4)]]
    stats = stats_from_entropy([[0.0] * 4] * 2, logp)
    assert ConfidenceSampler(0.9).accept(stats, 3, 10).tolist() == [[True, False, True, False],
                                                                    [False, False, False, True]]


def test_topk_schedule_keeps_growing_prefix():
    stats = stats_from_entropy([[0.5, 0.1, 0.9, 0.3]])
    sampler = TopKScheduleSampler()
    assert sampler.accept(stats, 4, 4).tolist() == [[False, True, False, False]]
    assert sampler.accept(stats, 2, 4).tolist() == [[True, True, False, True]]
    assert sampler.accept(stats, 1, 4).all()


def test_topk_schedule_counts_only_free_positions():
    # row 0: positions 0 and 2 clamped (entropy 0, as the engine sets them), free ones 0.5 and 0.3; row 1 all free
    stats = stats_from_entropy([[0.0, 0.5, 0.0, 0.3], [0.4, 0.2, 0.6, 0.1]])
    stats.fixed = torch.tensor([[True, False, True, False], [False] * 4])
    sampler = TopKScheduleSampler()
    # first of 2 steps: half the free positions each, the lowest-entropy free ones, never a clamped one
    assert sampler.accept(stats, 2, 2).tolist() == [[False, False, False, True], [False, True, False, True]]
    assert sampler.accept(stats, 1, 2).tolist() == [[False, True, False, True], [True] * 4]


def test_sampler_tiles_compute_what_the_whole_logits_give(monkeypatch):
    """`sample_step`, tile by tile from hidden states, against the reference's computation on the whole (B, L, V)
    logits: multinomial draws in row order, Categorical's entropy, the argmax, the soft embeddings. Tiles of 3
    positions (crossing batch rows) and one tile for everything give the same."""
    model = DiffusionGemma.from_pretrained("tiny", seed=0)
    V, H = model.config.vocab_size, model.config.hidden_size
    hidden = torch.randn(2, 5, H, generator=torch.Generator().manual_seed(1))
    temperature = torch.tensor([0.7, 1.3])
    logits = model.logits(hidden) / temperature[:, None, None]
    sampled = torch.multinomial(torch.softmax(logits, -1).view(-1, V), 1, generator=torch.Generator().manual_seed(0))
    for tile_bytes in (3 * 4 * V, 2**30):
        monkeypatch.setitem(dgemma.sampling.TILE_BYTES, "cpu", tile_bytes)
        g = torch.Generator().manual_seed(0)
        stats = sample_step(model, hidden, temperature, [g, g])
        assert torch.equal(stats.sampled.view(-1, 1), sampled)
        torch.testing.assert_close(stats.entropy, torch.distributions.Categorical(logits=logits).entropy())
        assert torch.equal(stats.argmax, logits.argmax(-1))
        torch.testing.assert_close(stats.soft, model.soft_embeddings(logits))


def test_sampler_holds_no_tensor_beyond_a_tile_at_the_released_vocabulary(monkeypatch):
    """At V = 262,144 a canvas row of float32 logits is 32 MiB here (L = 32); with 4 MiB tiles (smaller than the
    default, so the canvas spans several) the largest tensor the sampler makes is one tile's float64 uniforms
    (twice a tile of float32 logits, 8 MiB)."""
    monkeypatch.setitem(dgemma.sampling.TILE_BYTES, "cpu", 4 * 2**20)
    from torch.utils._python_dispatch import TorchDispatchMode
    from dgemma.config import get_preset
    cfg = get_preset("tiny").replace(vocab_size=262_144, num_layers=1, layer_types=["sliding_attention"])
    model = DiffusionGemma(cfg)
    model.embed_tokens.weight.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    hidden = torch.randn(1, cfg.canvas_length, cfg.hidden_size)

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            given = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                     if isinstance(a, torch.Tensor)}
            for t in torch.utils._pytree.tree_leaves(out):  # new tensors, not views of the inputs (the weights)
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given:
                    Largest.largest = max(Largest.largest, t.untyped_storage().nbytes())
            return out
    with Largest():
        stats = sample_step(model, hidden, torch.ones(1), [torch.Generator().manual_seed(0)])
    assert Largest.largest <= 2 * dgemma.sampling.TILE_BYTES["cpu"] < 4 * cfg.canvas_length * cfg.vocab_size
    assert stats.sampled.shape == (1, cfg.canvas_length) and bool((stats.entropy > 0).all())


def test_stream_events_agree_with_output(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    events = list(model.generate(torch.randint(3, 128, (2, 7)), max_new_tokens=24, max_denoising_steps=5, seed=3,
                                 eos_token_id=[127], stream=True))
    out = events[-1]
    assert isinstance(out, GenerateOutput)
    canvases = [e for e in events if isinstance(e, CanvasEvent)]
    assert torch.equal(torch.cat([c.tokens for c in canvases], 1), out.sequences[:, 7:])
    for c in canvases:
        last = [e for e in events if isinstance(e, StepEvent) and e.canvas == c.canvas][-1]
        assert torch.equal(last.draft, c.tokens)  # no stop token in play: the committed canvas is the last draft
        assert c.steps == sum(isinstance(e, StepEvent) and e.canvas == c.canvas for e in events)
    assert out.steps_per_canvas == [c.steps for c in canvases]


def test_bad_inputs_are_rejected(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(torch.tensor([[5, 999]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.tensor([[5, 6]]), max_new_tokens=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        model.generate(torch.tensor([[5, 6]]), sampler="greedy")
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))


def test_generate_ar_is_greedy_decoding_of_the_encoder(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    prompt = torch.randint(3, 128, (1, 6))
    out = model.generate_ar(prompt, max_new_tokens=5, eos_token_id=[127])
    seq = prompt
    for _ in range(5):  # no cache: recompute the whole sequence each time
        cache = model.new_cache(1, seq.shape[1])
        with torch.no_grad():
            nxt = model.logits(model.encode(seq, cache))[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out.sequences, seq)


def test_infill_with_given_gap_keeps_suffix_and_fills_exactly(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    from dgemma.engine import Engine, GenerationConfig
    out = Engine(model).infill([2, 10, 11], [20, 21, 22], gap_length=3, seed=0,
                               cfg=GenerationConfig(max_denoising_steps=4, eos_token_id=(127,)))
    assert out.gap_length == 3 and len(out.tokens) == 3 and out.scores == {}


def test_infill_search_picks_the_most_likely_gap(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    from dgemma.engine import Engine, GenerationConfig
    engine = Engine(model)
    out = engine.infill([2, 10, 11], [20, 21], max_gap=5, seed=0,
                        cfg=GenerationConfig(max_denoising_steps=4, eos_token_id=(127,)))
    assert set(out.scores) == {1, 2, 3, 4, 5}
    assert out.scores[out.gap_length] == max(out.scores.values())
    # the score is the encoder's log-likelihood: check one against a direct computation
    direct = engine.sequence_logprob([2, 10, 11], [out.tokens + [20, 21][:8 - 5]])[0]
    assert direct == pytest.approx(out.scores[out.gap_length], abs=1e-4)


def test_chat_style_cache_reuse_equals_fresh_prefill(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint)
    from dgemma.engine import Engine, GenerationConfig
    engine = Engine(model)
    cfg = GenerationConfig(max_new_tokens=16, max_denoising_steps=3, eos_token_id=(127,))
    cache = model.new_cache(1, 64)
    first = engine.generate(torch.tensor([[2, 5, 6, 7]]), cfg, seed=1, cache=cache)
    assert cache.length == 4 + 8  # prompt and all canvases but the last
    turn = torch.tensor([[9, 9, 4]])
    last_canvas = first.sequences[:, -8:]
    reused = engine.generate(torch.cat([last_canvas, turn], 1), cfg, seed=2, cache=cache)
    fresh = engine.generate(torch.cat([first.sequences, turn], 1), cfg, seed=2)
    assert torch.equal(reused.sequences[:, -16:], fresh.sequences[:, -16:])


def test_rows_done_denoising_leave_the_decoder_batch(checkpoint):
    model = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    prompt = torch.randint(3, 128, (1, 19), generator=torch.Generator().manual_seed(0)).repeat(3, 1)
    settings = dict(max_new_tokens=8, max_denoising_steps=10, t_min=0.01, t_max=0.02, confidence_threshold=0.5,
                    entropy_bound=5.0, eos_token_id=[127], seed=1)
    full = model.generate(prompt, **settings)
    sizes, real = [], model.denoise
    model.denoise = lambda canvas, *a, **k: sizes.append(canvas.shape[0]) or real(canvas, *a, **k)
    again = model.generate(prompt, **settings)
    assert torch.equal(full.sequences, again.sequences)
    assert sizes[0] == 3 and min(sizes) < 3  # rows that stopped early cost no decoder work
    assert sum(sizes) == int(full.decoder_passes.sum())


def test_top_k_and_top_p_restrict_the_samples():
    """An identity head (and a softcap too wide to matter) makes the hidden states the logits."""
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 200))
    for top_k, top_p, allowed in [(2, None, {0, 1}), (None, 0.7, {0, 1}), (None, 0.85, {0, 1, 2}), (1, None, {0})]:
        sampled = tile_stats(logp, torch.ones(200, 1), None, torch.Generator().manual_seed(0), torch.eye(4),
                             torch.tensor(1.0), 1e6, top_k=top_k, top_p=top_p)[0]
        assert set(sampled.tolist()) == allowed


def test_margin_is_top1_minus_top2_of_the_processed_distribution_and_ranks_the_topk_schedule():
    """Row A (0.5, 0.3, 0.15, 0.05) has the larger margin, row B (0.45, 0.44, 0.1, 0.01) the lower entropy: the
    two scores keep different positions, so a sampler that ignored its score would fail one of the two checks."""
    from dgemma.sampling import TopKScheduleSampler, make_sampler
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.45, 0.44, 0.1, 0.01]])
    out = tile_stats(probs.log(), torch.ones(2, 1), None, torch.Generator().manual_seed(0), torch.eye(4),
                     torch.tensor(1.0), 1e6, margin=True)
    torch.testing.assert_close(out[5], torch.tensor([0.2, 0.01]), atol=1e-5, rtol=0)  # float32 round-off only
    assert out[3][1] < out[3][0]  # B has the lower entropy
    assert tile_stats(probs.log(), torch.ones(2, 1), None, torch.Generator(), torch.eye(4), torch.tensor(1.0),
                      1e6)[5] is None  # not asked for: no full-vocabulary top-k
    stats = StepStats(out[0][None], out[1][None], out[3][None], out[2][None], None, out[5][None])
    assert make_sampler("topk").accept(stats, 2, 2).tolist() == [[False, True]]
    assert make_sampler("margin").accept(stats, 2, 2).tolist() == [[True, False]]
    assert make_sampler("margin").uses_margin and not make_sampler("topk").uses_margin
    with pytest.raises(ValueError, match="unknown top-k score"):
        TopKScheduleSampler("probability")


# The compiled-engine tests share one two-layer model per expert path and one kind of call (batch, prompt, canvases,
# settings), so a graph is compiled once for the session: compiling is most of their cost on a cold cache.
COMPILED_CALL = dict(max_new_tokens=24, max_denoising_steps=10, t_min=0.01, t_max=0.02, entropy_bound=5.0,
                     confidence_threshold=0.5)


@pytest.fixture(scope="module")
def compiled_models(tmp_path_factory):
    """Dense experts in the graph, or routed through the opaque expert op: a step graph is per model, its
    expert path fixed in it when it is built."""
    import dgemma.moe
    path = tmp_path_factory.mktemp("ref-compiled")
    make_reference("c", canvas_length=8, seed=3).save_pretrained(path)
    models = {flops: DiffusionGemma.from_pretrained(path, dtype=torch.float64)
              for flops in (dgemma.moe.DENSE_EXPERT_FLOPS, 0.0)}
    return {**models, "path": path}


def compiled_prompt():
    prompt = torch.randint(3, 128, (2, 13), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :4] = 0
    return prompt, mask


def test_compiled_engine_gives_the_same_tokens_with_one_graph_per_input_kind(compiled_models, monkeypatch):
    """Engine(compile=True) against the eager engine in float64: the same tokens over left padding, early stops
    and three canvases, for both expert paths (dense in the graph, and routed through the opaque expert op), and
    no recompilation as the cache grows or from the first step to the next. On CPU with a small vocabulary a
    whole step is one exported graph (`StepGraphs`, called without dynamo) and the canvas commits another;
    without it (CUDA, or here: the whole-step graph withheld) the decoder forward and the sampling statistics are
    compiled apart. AR decoding compiles its one-token encoder pass."""
    from torch._dynamo.utils import counters

    import dgemma.engine
    import dgemma.moe
    import dgemma.step_graph
    dense = dgemma.moe.DENSE_EXPERT_FLOPS
    prompt, mask = compiled_prompt()
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    built, real_build = [], dgemma.step_graph.StepGraphs.build
    monkeypatch.setattr(dgemma.step_graph.StepGraphs, "build", lambda self, *a: built.append(a[0]) or real_build(self, *a))
    real_one_graph = dgemma.engine.Engine.one_graph
    for seed, dense_flops, whole_step, padded in ((0, dense, True, True), (1, 0.0, True, True),
                                                  (2, dense, False, True), (3, dense, True, False)):
        model = compiled_models[dense_flops]
        monkeypatch.setattr(dgemma.moe, "DENSE_EXPERT_FLOPS", dense_flops)
        monkeypatch.setattr(dgemma.engine.Engine, "one_graph", real_one_graph if whole_step else lambda *a: False)
        settings = dict(COMPILED_CALL, eos_token_id=[127], seed=seed,
                        attention_mask=mask if padded else None)  # unpadded: the prompt is prefilled in chunks too
        eager = model.generate(prompt, **settings)
        compiled = model.generate(prompt, compile=True, **settings)
        assert torch.equal(eager.sequences, compiled.sequences), f"seed {seed}"
        assert eager.steps_per_canvas == compiled.steps_per_canvas and len(eager.steps_per_canvas) == 3
        assert torch.equal(eager.decoder_passes, compiled.decoder_passes)
        assert (eager.decoder_passes < 30).all()  # rows stopped early and kept their state while the other ran on
    assert len(built) == 2  # one step graph per model: dense and routed experts
    # dynamo: 2 commits (one per expert path) + 1 decoder forward + 1 sampling (the commit graph is reused, also
    # for the prompt's canvas-sized chunks)
    assert counters["stats"]["unique_graphs"] - graphs == 4
    model = compiled_models[dense]
    for m in (mask, None):
        ar = dgemma.engine.Engine(model).generate_ar(prompt, 12, attention_mask=m, eos_token_id=(127,))
        ar_compiled = dgemma.engine.Engine(model, compile=True).generate_ar(prompt, 12, attention_mask=m,
                                                                            eos_token_id=(127,))
        assert torch.equal(ar.sequences, ar_compiled.sequences)


def test_step_graphs_are_looked_up_by_the_settings_they_read(compiled_models, monkeypatch):
    """A setting baked into the step graph (the stopping threshold: 1e-30 is never met) picks its own graph when
    one for another threshold exists, and switching back reuses the first. The lookup is what is tested here, so
    `build` makes the step module without compiling it."""
    import dgemma.step_graph
    model = DiffusionGemma.from_pretrained(compiled_models["path"], dtype=torch.float64)  # no graphs yet
    built = []

    def build(self, settings, args):
        built.append(settings)
        return dgemma.step_graph._Step(self.step_fn, self.model, settings)
    monkeypatch.setattr(dgemma.step_graph.StepGraphs, "build", build)
    prompt, _ = compiled_prompt()
    settings = {**COMPILED_CALL, "eos_token_id": [], "seed": 0}  # no stop: three canvases
    outs = [model.generate(prompt, compile=True, **{**settings, "confidence_threshold": threshold})
            for threshold in (0.5, 1e-30, 0.5)]
    assert [s.confidence_threshold for s in built] == [0.5, 1e-30]
    assert outs[1].steps_per_canvas == [10] * 3  # the graph of the threshold never met ran every step
    assert torch.equal(outs[0].sequences, outs[2].sequences)
    assert torch.equal(outs[0].sequences, model.generate(prompt, **settings).sequences)


def test_step_graphs_follow_replaced_weights(compiled_models):
    """A step graph holds the tensors it was built with: replacing a parameter (not copying into it) must not
    leave the compiled engine on the old weights."""
    model = DiffusionGemma.from_pretrained(compiled_models["path"], dtype=torch.float64)  # its weights are replaced
    prompt, _ = compiled_prompt()
    settings = dict(COMPILED_CALL, eos_token_id=[127], seed=2)
    before = model.generate(prompt, compile=True, **settings)
    proj = model.layers[0].self_attn.q_proj
    proj.weight = torch.nn.Parameter(torch.randn(proj.weight.shape, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(0)))
    eager = model.generate(prompt, **settings)
    compiled = model.generate(prompt, compile=True, **settings)
    assert not torch.equal(eager.sequences, before.sequences)  # the new weights do change the tokens
    assert torch.equal(eager.sequences, compiled.sequences)


def test_compiled_engine_clamps_like_the_eager_one(compiled_models):
    """The compiled step with a clamp mask (infilling, editing): the same tokens as eagerly, with the canvas and
    mask given once for every row (expanded over the batch) and once row by row (a contiguous tensor of the same
    shape must not run a graph specialised on the expanded one's strides)."""
    import dgemma.moe
    model = compiled_models[dgemma.moe.DENSE_EXPERT_FLOPS]
    L = model.config.canvas_length
    g = torch.Generator().manual_seed(3)
    prompt, _ = compiled_prompt()
    canvas = torch.randint(3, 128, (L,), generator=g)
    clamp = torch.zeros(L, dtype=torch.bool)
    clamp[L // 2:] = True
    settings = dict(COMPILED_CALL, eos_token_id=[], seed=5)  # no stop: every canvas is committed
    for c, m in ((canvas, clamp), (canvas.repeat(2, 1), clamp.repeat(2, 1))):
        eager = model.generate(prompt, canvas=c, clamp=m, **settings)
        compiled = model.generate(prompt, canvas=c, clamp=m, compile=True, **settings)
        assert torch.equal(eager.sequences, compiled.sequences)
        assert torch.equal(compiled.sequences[:, 13 + L // 2:13 + L], canvas[L // 2:].expand(2, -1))


def test_compiled_engine_keeps_the_callers_compiler_stance(checkpoint):
    """Under torch.compiler.set_stance("force_eager") a compiled engine runs eagerly throughout: skipping guards
    from the third step (`known_inputs`) must not switch compilation back on mid-canvas."""
    model = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    prompt = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(2))
    settings = dict(max_new_tokens=16, max_denoising_steps=6, eos_token_id=[127], seed=4)
    eager = model.generate(prompt, **settings)
    with torch.compiler.set_stance("force_eager"):
        compiled = model.generate(prompt, compile=True, **settings)
    assert torch.equal(eager.sequences, compiled.sequences) and eager.steps_per_canvas == compiled.steps_per_canvas


@pytest.mark.parametrize("prompt_length, room", [(3, 8), (3, 16), (20, 16)])
def test_static_passes_match_the_growing_ones(checkpoint, prompt_length, room):
    """denoise_static and encode_static (what the compiled engine runs) against denoise and encode in float64,
    left padding included: with the sliding window gathered (starting before slot 0, or not), and over the
    whole cache when the window would not be smaller. The encoder's window slides with each query."""
    model = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    g = torch.Generator().manual_seed(prompt_length)
    prompt = torch.randint(3, 128, (2, prompt_length), generator=g)
    mask = torch.ones(2, prompt_length, dtype=torch.long)
    mask[1, :2] = 0
    cache = model.new_cache(2, prompt_length + room)
    model.encode(prompt, cache, mask)
    canvas = torch.randint(0, 128, (2, model.config.canvas_length), generator=g)
    soft = torch.randn(2, model.config.canvas_length, model.config.hidden_size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        growing = model.denoise(canvas, cache, self_conditioning_embeds=soft, logits=False)
        static = model.denoise_static(canvas, cache, torch.tensor(cache.length), soft)
    torch.testing.assert_close(static, growing, rtol=0, atol=1e-9)

    other = model.new_cache(2, prompt_length + room)
    model.encode(prompt, other, mask)
    with torch.no_grad():
        growing = model.encode(canvas, cache)
        start = other.append_slots(canvas.shape[1])
        static = model.encode_static(canvas, other, torch.tensor(start))
    torch.testing.assert_close(static, growing, rtol=0, atol=1e-9)
    for a, b in zip(cache.keys + cache.values, other.keys + other.values):
        torch.testing.assert_close(b[:, :, :other.length], a[:, :, :cache.length], rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dense_experts_match_the_routed_experts(dtype):
    """The compiled graph's dense MoE (every expert on every token, zero weight where not routed) computes what
    the routed path does."""
    model = DiffusionGemma.from_pretrained("tiny", dtype=dtype, seed=3)
    block = model.layers[0]
    x = torch.randn(40, model.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        for p in block.experts.parameters():
            p.mul_(20)  # outputs of order 1, so the tolerances mean something
        weights, index = block.router(x)
        routed = block.experts(x, index, weights)
        dense = block.experts.dense(x, index, weights, block.experts.gate_up_proj, block.experts.down_proj)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dense, routed, **tol)
    assert routed.abs().max() > 0.5
