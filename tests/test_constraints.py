"""Canvas constraints in the engine: restricted positions match transformers' generate with the same mask as a
logits processor, token for token in float64; clamps and masks hold in the eager, row-skipping and compiled
steps; bad constraints get one-line errors."""

from __future__ import annotations

import pytest
import torch

from dgemma import DiffusionGemma
from dgemma.constraints import Constraints

from .reference import load_reference, make_reference

L, V, P = 8, 128, 11


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref-constraints")
    make_reference("c", canvas_length=L, seed=5).save_pretrained(path)  # two layers: compiling stays short
    return path


def restricted_canvases():
    """Two constrained canvases of the three generated: small sets, a singleton, free positions, and a stop token
    (1) left out everywhere so the rows run all three canvases."""
    g = torch.Generator().manual_seed(0)

    def some(n):
        return set((torch.randperm(V - 2, generator=g)[:n] + 2).tolist())
    return [[some(3), None, some(1), some(10), None, some(2), some(40), some(5)],
            [some(2), some(2), None, some(6), some(1), some(3), None, some(20)]]


def dense_masks(canvases) -> torch.Tensor:
    """(C, L, V) bool: what the reference's processor masks."""
    mask = torch.ones(len(canvases), L, V, dtype=torch.bool)
    for c, canvas in enumerate(canvases):
        for p, allowed in enumerate(canvas):
            if allowed is not None:
                mask[c, p] = False
                mask[c, p, sorted(allowed)] = True
    return mask


def all_allowed(masks: torch.Tensor, generated: torch.Tensor) -> bool:
    """Whether every token of `generated` (B, C, L) is allowed at its canvas and position by `masks` (C, L, V)."""
    C = masks.shape[0]
    return bool(masks[torch.arange(C)[:, None], torch.arange(L)[None], generated].all())


def test_restricted_positions_match_transformers_with_a_logits_processor(checkpoint):
    from transformers import LogitsProcessor, LogitsProcessorList
    canvases = restricted_canvases()
    masks = dense_masks(canvases)

    class CanvasMask(LogitsProcessor):
        def __call__(self, input_ids, scores, cur_step=None):  # scores (B, L, V), input_ids: prompt + canvases
            c = (input_ids.shape[1] - P) // L
            return scores.masked_fill(~masks[c], float("-inf")) if c < len(masks) else scores

    ref = load_reference(checkpoint, torch.float64)
    ours = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    constraints = Constraints.build(canvases, L, V)
    prompt = torch.randint(3, V, (2, P), generator=torch.Generator().manual_seed(1))
    for seed in (0, 1):
        torch.manual_seed(seed)
        r = ref.generate(prompt, max_new_tokens=3 * L, max_denoising_steps=6, eos_token_id=[1], pad_token_id=0,
                         logits_processor=LogitsProcessorList([CanvasMask()]))
        o = ours.generate(prompt, max_new_tokens=3 * L, max_denoising_steps=6, eos_token_id=[1], seed=seed,
                          constraints=constraints, skip_finished_rows=False)
        assert torch.equal(r.sequences, o.sequences), f"seed {seed}"
        generated = o.sequences[:, P:P + 2 * L].view(2, 2, L)  # (row, canvas, position)
        assert all_allowed(masks, generated)
        free = ours.generate(prompt, max_new_tokens=3 * L, max_denoising_steps=6, eos_token_id=[1], seed=seed)
        assert not torch.equal(free.sequences, o.sequences)  # the mask changed something


@pytest.mark.parametrize("compile", [False, True])
def test_clamps_and_sets_hold_in_every_step_path(checkpoint, compile):
    """Clamped tokens are committed as given and restricted ones come from their sets, in the eager step (with
    rows skipped once they are done), the compiled decoder and the one-graph compiled step, batch of three."""
    ours = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float32)
    canvases = restricted_canvases()
    canvases[0][1], canvases[1][6] = 77, 5  # clamped positions among the sets
    constraints = Constraints.build(canvases, L, V)
    masks = dense_masks([[None if isinstance(a, int) else a for a in c] for c in canvases])
    prompt = torch.randint(3, V, (3, P), generator=torch.Generator().manual_seed(2))
    # near-greedy and accept-all: rows stop at different steps, so the eager step drops finished rows
    out = ours.generate(prompt, max_new_tokens=2 * L, max_denoising_steps=10, eos_token_id=[1], seed=3,
                        constraints=constraints, compile=compile, t_min=0.01, t_max=0.02, confidence_threshold=0.5,
                        entropy_bound=5.0)
    assert len(set(out.decoder_passes.tolist())) > 1
    generated = out.sequences[:, P:].view(3, 2, L)
    assert (generated[:, 0, 1] == 77).all() and (generated[:, 1, 6] == 5).all()
    assert all_allowed(masks, generated)


def test_bad_constraints_are_one_line_errors():
    with pytest.raises(ValueError, match="more than the canvas length 8"):
        Constraints.build([[None] * 9], L, V)
    with pytest.raises(ValueError, match="allowed token set is empty"):
        Constraints.build([[set()]], L, V)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Constraints.build([[V + 3]], L, V)
    c = Constraints.build([[{4, 5}]], L, V)
    with pytest.raises(ValueError, match=r"constraints.sets must be an \(S, 64\) bool tensor"):
        c.validate(L, 64)
