"""dgemma against the reference on random tiny checkpoints: encoder prefill and decoder logits, step by step."""

import pytest
import torch

from dgemma import DiffusionGemma

from .reference import decoder_logits, encoder_logits, load_reference, make_reference, new_cache

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(scope="module", params=["a", "b"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ref-{request.param}")
    make_reference(request.param, canvas_length=8, seed=1).save_pretrained(path)
    return path


def run_both(path, dtype, prompt, mask, canvases, self_condition):
    """Prefill, then per canvas: 3 decoder steps and an encoder pass over it. Yields (what, ref, ours, valid)."""
    ref, ours = load_reference(path, dtype), DiffusionGemma.from_pretrained(path, dtype=dtype)
    B = prompt.shape[0]
    rc, cache = new_cache(ref), ours.new_cache(B, prompt.shape[1] + 8 * (len(canvases) + 1))
    full_mask = mask
    valid = mask.bool() if mask is not None else torch.ones_like(prompt, dtype=torch.bool)
    with torch.no_grad():
        yield "prefill", encoder_logits(ref, prompt, rc, full_mask), ours.logits(ours.encode(prompt, cache, mask)), valid
        for c, canvas in enumerate(canvases):
            r_sc = o_sc = None
            for step in range(3):
                r = decoder_logits(ref, canvas, rc, r_sc, full_mask)
                o = ours.denoise(canvas, cache, o_sc)
                yield f"canvas {c} step {step}", r, o, None
                if self_condition:
                    r_sc, o_sc = r.to(dtype), o.to(dtype)
                canvas = torch.randint(0, ours.config.vocab_size, canvas.shape)
            r = encoder_logits(ref, canvas, rc, None if full_mask is None else
                               (full_mask := torch.cat([full_mask, torch.ones_like(canvas)], 1)))
            yield f"encode canvas {c}", r, ours.logits(ours.encode(canvas, cache)), None


def assert_close(path, dtype, prompt, mask=None, n_canvases=3, self_condition=True):
    torch.manual_seed(5)
    vocab = 96
    canvases = [torch.randint(0, vocab, (prompt.shape[0], 8)) for _ in range(n_canvases)]
    for what, r, o, valid in run_both(path, dtype, prompt, mask, canvases, self_condition):
        assert o.dtype == torch.float32 and o.shape == r.shape, what
        diff = (r - o).abs()
        if valid is not None:  # padding positions' outputs are unspecified in both
            diff = diff[valid]
        assert diff.max().item() <= TOL[dtype], f"{what}: max abs diff {diff.max().item():.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prompt_longer_than_window_several_canvases(checkpoint, dtype):
    prompt = torch.randint(0, 96, (1, 19))  # windows are 8 and 5
    assert_close(checkpoint, dtype, prompt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_self_conditioning(checkpoint, dtype):
    assert_close(checkpoint, dtype, torch.randint(0, 96, (1, 6)), n_canvases=2, self_condition=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_left_padded_batch(checkpoint, dtype):
    prompt = torch.randint(3, 96, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :9] = 0
    prompt[mask == 0] = 0
    assert_close(checkpoint, dtype, prompt, mask)
