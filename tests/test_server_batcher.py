"""The serving engine in process: per-request generators make a request's tokens independent of its batch-mates,
and with locking off they are `model.generate`'s tokens (exactly in float64, where batching adds no rounding)."""

from __future__ import annotations

import threading

import pytest
import torch

from dgemma import DiffusionGemma
from dgemma.config import get_preset
from dgemma.cache import KVCache
from dgemma.engine import Engine, GenerationConfig
from dgemma.sampling import make_sampler
from dgemma.serving.batcher import BatchEngine, Request, SamplingParams

STOP = (1, 106, 50)


@pytest.fixture(scope="module")
def model():
    cfg = get_preset("tiny").replace(vocab_size=512, canvas_length=16, sliding_window=8)
    m = DiffusionGemma(cfg).to(torch.float64)
    m.init_weights(torch.Generator().manual_seed(0))
    return m.eval()


def run_all(model, jobs, lock_after, max_batch=8, engine=None, **kw):
    """jobs: [(prompt, SamplingParams, suffix)] queued together before the loop starts; returns [(tokens, done
    info)]. `kw`: more BatchEngine settings; `engine`: a list that receives the engine."""
    eng = BatchEngine(model, max_batch=max_batch, max_queue=64, lock_after=lock_after,
                      **{"context_length": 256, **kw})
    results = [None] * len(jobs)
    events = [threading.Event() for _ in jobs]

    def emitter(i):
        tokens = []

        def emit(kind, payload):
            if kind == "tokens":
                tokens.extend(payload)
            elif kind in ("done", "error"):
                results[i] = (tokens, payload)
                events[i].set()
        return emit
    for i, (prompt, params, suffix) in enumerate(jobs):
        eng.submit(Request(prompt, params, emitter(i), suffix=suffix))
    eng.start()
    for e in events:
        assert e.wait(600)
    eng.shutdown()
    if engine is not None:
        engine.append(eng)
    return results


def jobs(**stopping):
    """Six requests of different lengths; `stopping` overrides the stable-and-confident stopping rule."""
    out = []
    for i, n in enumerate((3, 12, 30, 5, 21, 9)):
        prompt = [2] + [100 + (7 * i + j) % 400 for j in range(n)]
        gen = GenerationConfig(max_new_tokens=(10, 40, 16, 33, 48, 20)[i], max_denoising_steps=(5, 8, 6, 5, 7, 4)[i],
                               eos_token_id=STOP, top_k=(None, 50)[i % 2], **stopping)
        out.append((prompt, SamplingParams(gen, seed=10 + i), None))
    return out


@pytest.mark.parametrize("lock_after", [0, 2])
def test_batched_equals_alone(model, lock_after):
    together = run_all(model, jobs(), lock_after, max_batch=4)  # 6 requests, 4 slots: some wait, then join
    for job, (tokens, info) in zip(jobs(), together):
        alone = run_all(model, [job], lock_after, max_batch=1)[0][0]
        assert tokens == alone
        assert info["completion_tokens"] == len(tokens) <= job[1].gen.max_new_tokens


# A random model is never confident (nor is its argmax stable): the default rule runs every step. A huge
# confidence threshold without the stability condition stops every canvas at once, so stopping is compared too.
@pytest.mark.parametrize("stopping", [{}, {"confidence_threshold": 1e9, "stability_threshold": 0}])
def test_lock_off_matches_generate(model, stopping):
    early = []
    for (prompt, p, _), (tokens, info) in zip(jobs(**stopping), run_all(model, jobs(**stopping), 0)):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=p.gen.max_new_tokens,
                             max_denoising_steps=p.gen.max_denoising_steps, seed=p.seed, top_k=p.gen.top_k,
                             eos_token_id=STOP, **stopping)
        assert info["decoder_passes"] == int(out.decoder_passes[0])
        early += [n < p.gen.max_denoising_steps for n in out.steps_per_canvas]
        ref = []
        for t in out.sequences[0, len(prompt):].tolist():
            if t != 0:
                ref.append(t)
            if t in STOP:
                break
        assert tokens == ref[:p.gen.max_new_tokens]
        assert info["finish_reason"] == ("stop" if ref and ref[-1] in STOP and len(ref) <= p.gen.max_new_tokens
                                         else "length")
    assert any(early) == bool(stopping)  # the stopping rule did stop canvases early, and only when asked


def test_infill_keeps_suffix_out_and_gap_length(model):
    prompt, suffix = [2, 300, 301, 302], [400, 401, 402]
    params = SamplingParams(GenerationConfig(max_new_tokens=6, max_denoising_steps=5, eos_token_id=STOP), seed=1)
    (tokens, info), = run_all(model, [(prompt, params, suffix)], 2)
    assert len(tokens) <= 6 and info["finish_reason"] in ("stop", "length")


def test_a_forced_head_is_clamped_at_the_start_of_the_reply(model):
    """A forced tool call's opening (`Request.head`) is clamped on the first canvas: every reply starts with it,
    whatever the seed, with locking on or off."""
    head = [48, 49, 47]
    for lock_after in (0, 2):
        for seed in (0, 1):
            eng = BatchEngine(model, max_batch=2, max_queue=4, lock_after=lock_after, context_length=256)
            done = threading.Event()
            out = []
            params = SamplingParams(GenerationConfig(max_new_tokens=20, max_denoising_steps=4, eos_token_id=STOP),
                                    seed=seed)
            eng.submit(Request([2, 300, 301], params, lambda k, p: out.extend(p) if k == "tokens" else (
                done.set() if k in ("done", "error") else None), head=head))
            eng.start()
            assert done.wait(120)
            eng.shutdown()
            assert out[:3] == head


def test_queue_bound(model):
    from dgemma.serving.batcher import EngineDeadError, QueueFullError
    eng = BatchEngine(model, max_batch=1, max_queue=0, context_length=256)  # not started: nothing is admitted
    eng.thread = threading.Thread(target=lambda: None)
    eng.thread.start()
    eng.thread.join()
    with pytest.raises(EngineDeadError):
        eng.submit(Request([2], SamplingParams(), lambda *a: None))
    eng2 = BatchEngine(model, max_batch=1, max_queue=1, context_length=256)
    eng2.error = None
    eng2.thread = threading.Thread(target=threading.Event().wait, args=(1,), daemon=True)
    eng2.thread.start()
    eng2.submit(Request([2], SamplingParams(), lambda *a: None))
    with pytest.raises(QueueFullError):
        eng2.submit(Request([2], SamplingParams(), lambda *a: None))


def test_compiled_batcher_gives_the_engines_tokens():
    """`BatchEngine(compile=True)` runs two rows at different positions through the engine's one-graph step (per-row
    starts) and commits through its compiled encoder pass: each request's tokens are those of
    `model.generate` on its own, eager. One (global) layer keeps compiling short: per-row starts take the same
    write path on sliding layers, and their ring masks are compared with the reference eagerly."""
    cfg = get_preset("tiny").replace(vocab_size=128, canvas_length=8, sliding_window=8, num_layers=1,
                                     layer_types=["full_attention"])
    model = DiffusionGemma(cfg).to(torch.float64)
    model.init_weights(torch.Generator().manual_seed(1))
    model.eval()
    requests = [([2] + list(range(10, 10 + n)), SamplingParams(GenerationConfig(
        max_new_tokens=16, max_denoising_steps=4, eos_token_id=()), seed=s), None) for n, s in ((5, 1), (11, 2))]
    engine = []  # no stop tokens: both rows run every step together, so one graph is compiled (compiling is the cost)
    results = run_all(model, requests, 0, max_batch=2, engine=engine, context_length=64, compile=True)
    assert [k[1] for k in engine[0].engine.step_graphs.graphs] == [(2, 8)]
    for i, (prompt, params, _) in enumerate(requests):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=16, max_denoising_steps=4, seed=params.seed,
                             eos_token_id=[])
        assert results[i][0] == [t for t in out.sequences[0, len(prompt):].tolist() if t != 0], i  # pads dropped
        assert results[i][1]["decoder_passes"] == int(out.decoder_passes[0]) == 8


def test_a_next_turn_reuses_the_kept_cache_and_gets_the_same_tokens(model):
    """Four turns of a conversation, each prompt the last one plus its reply plus a new message: with kept caches
    every later turn encodes only its new tokens, and every reply equals the one without reuse (float64)."""
    def converse(prefix_cache: int):
        eng = BatchEngine(model, max_batch=2, max_queue=4, lock_after=0, context_length=400,
                          prefix_cache=prefix_cache)
        eng.start()
        prompt, replies = [2] + list(range(100, 130)), []
        for turn in range(4):
            done, out = threading.Event(), []
            params = SamplingParams(GenerationConfig(max_new_tokens=40, max_denoising_steps=4, eos_token_id=STOP),
                                    seed=turn)
            eng.submit(Request(list(prompt), params, lambda k, p: out.extend(p) if k == "tokens" else (
                done.set() if k in ("done", "error") else None)))
            assert done.wait(120)
            replies.append(out)
            prompt += out + [200 + turn, 201 + turn, 202]  # the reply, then the next user message
        eng.shutdown()
        return replies, eng.m
    reused, m = converse(4)
    fresh, m0 = converse(0)
    assert reused == fresh
    assert m["prefix_hits"] == 3 and m0["prefix_hits"] == 0
    assert m["prefix_tokens_reused"] >= 3 * 31 and m["prompt_tokens"] == m0["prompt_tokens"]


@pytest.fixture(scope="module")
def model32():
    """A random float32 model: its entropies are all close to log V, so a rank-based sampler (topk) flips at the
    slightest rounding difference, which makes it a sharp detector of batch-dependent rounding."""
    cfg = get_preset("tiny").replace(vocab_size=8192, canvas_length=32, max_position_embeddings=1024)
    m = DiffusionGemma(cfg)
    m.init_weights(torch.Generator().manual_seed(0))
    return m.eval()


def test_rows_apart_have_the_hidden_states_of_rows_alone(model32):
    """float32, bit for bit: rows of prompts of 1 to 300 tokens (the ring wraps; the global keys of the batch run to
    the longest row), decoded together with `ends`, against each row decoded alone with its own keys. Without
    `ends` the CPU kernels' sums change with the key count and the experts' row counts (seen here: 1e-6)."""
    L, g = model32.config.canvas_length, torch.Generator().manual_seed(1)
    lens = [1, 37, 300, 120, 9]
    eng = Engine(model32)

    def slot(c, b, upto):
        keys, values = ([t[b] if c.config.is_sliding(i) else t[b, :, :upto] for i, t in enumerate(ts)]
                        for ts in (c.keys, c.values))
        return KVCache.over(c.config, keys, values, c.valid[b, :upto], 0)

    big = model32.new_cache(len(lens), 512)
    end = lambda n: min(big.max_length, max(big.ring, n))  # noqa: E731 - as the batcher bounds them
    prompts = [torch.randint(3, 2000, (1, n), generator=g) for n in lens]
    canvas, soft = torch.randint(3, 2000, (len(lens), L), generator=g), torch.randn(len(lens), L, 64, generator=g)
    with torch.no_grad():
        for b, p in enumerate(prompts):
            eng.prefill(p, slot(big, slice(b, b + 1), big.max_length))
        together = model32.denoise_static(canvas, slot(big, slice(None), end(max(lens) + L)), torch.tensor(lens),
                                          soft, ends=tuple(end(n + L) for n in lens))
        for b, p in enumerate(prompts):
            alone = model32.new_cache(1, 512)
            eng.prefill(p, slot(alone, slice(None), alone.max_length))
            hidden = model32.denoise_static(canvas[b:b + 1], slot(alone, slice(None), end(lens[b] + L)),
                                            torch.tensor([lens[b]]), soft[b:b + 1])
            assert torch.equal(together[b:b + 1], hidden), b


def test_float32_batched_equals_alone_with_rank_samplers(model32):
    """The server's promise in float32: 32 requests of different lengths, 16 slots, early locking on, with the
    rank-based samplers (topk, margin: the most sensitive to rounding; with the batcher's rows together, not
    apart, one of these 32 differs here): each request's tokens equal the same request alone."""
    samplers = ("topk", "margin")
    work = []
    for i in range(32):
        gen = GenerationConfig(max_new_tokens=(8, 24, 40, 70)[i % 4], max_denoising_steps=6, eos_token_id=STOP,
                               sampler=make_sampler(samplers[i % 2]))
        work.append(([2] + [100 + (5 * i + j) % 1900 for j in range(3 + i % 9)], SamplingParams(gen, seed=1000 + i),
                     None))
    together = run_all(model32, work, 2, max_batch=16)
    assert [i for i, job in enumerate(work) if run_all(model32, [job], 2, max_batch=16)[0][0] != together[i][0]] == []
