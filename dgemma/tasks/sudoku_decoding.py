"""Solving Sudoku with a checkpoint: its decoding settings, the rule-checked sampler (self-correction), batched
solving, and verifier-gated retries. Shared by `dgemma sudoku` (one puzzle, a file, an evaluation) and the
server's playground."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import Engine, GenerationConfig, StepEvent
from ..model import DiffusionGemma
from ..sampling import Sampler
from . import sudoku as S

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "sudoku"
METHODS = ("diffusion", "ar")  # block diffusion; left-to-right decoding of the same checkpoint's encoder


def load_model(path: str | None, quantize: str | None = None, group_size: int | None = None) -> DiffusionGemma:
    directory = Path(path) if path else BUNDLED
    if not directory.is_dir():
        raise ValueError(f"model directory {directory} does not exist")
    model = DiffusionGemma.from_pretrained(directory, quantize=quantize, group_size=group_size).eval()
    if model.config.vocab_size != S.VOCAB_SIZE or model.config.canvas_length != 81:
        raise ValueError(f"{directory} is not a sudoku model (vocab {model.config.vocab_size}, canvas "
                         f"{model.config.canvas_length}; expected {S.VOCAB_SIZE} and 81)")
    return model


def _peer_matrix() -> torch.Tensor:
    """(81, 81) float: 1 where two cells share a row, column or box."""
    m = torch.zeros(81, 81)
    for i, peers in enumerate(S.PEERS):
        m[i, list(peers)] = 1.0
    return m


_PEERS = _peer_matrix()


@dataclass
class RuleCheckedSampler(Sampler):
    """Self-correction: `inner` chooses the cells to keep, then every kept free cell whose digit a kept peer
    (same row, column or box, givens included) also holds is renoised, both cells of a clash alike, so the next
    step conditions on a grid without a broken rule. The answer is still the step's argmax canvas: the rule
    shapes what the model sees, not what it says."""

    inner: Sampler

    @property
    def uses_step(self) -> bool:
        return self.inner.uses_step

    @property
    def uses_margin(self) -> bool:
        return self.inner.uses_margin

    def accept(self, stats, step, num_steps):
        keep = self.inner.accept(stats, step, num_steps)
        digit = stats.sampled - S.DIGIT_OFFSET  # 1-9 on digit tokens
        kept = keep & (digit >= 1) & (digit <= 9)
        onehot = torch.nn.functional.one_hot(digit.clamp(0, 9), 10)[..., 1:].float() * kept[..., None]  # (B, 81, 9)
        clash = ((_PEERS.to(onehot.device) @ onehot) * onehot).sum(-1) > 0  # (B, 81): a kept peer has my digit
        if stats.fixed is not None:
            clash &= ~stats.fixed
        return keep & ~clash


def decoding_config(model: DiffusionGemma, steps: int | None = None, sampler: str = "topk",
                    t_min: float | None = None, t_max: float | None = None,
                    stable: int | None = None, rules: bool = False) -> GenerationConfig:
    """Block-diffusion settings for an 81-cell answer: the checkpoint's generation_config.json (steps, temperature
    schedule and stopping rule; the bundled model's were chosen on validation puzzles) unless overridden.
    `stable`: stop a puzzle once its answer has not changed for that many steps, whatever its entropy. `rules`:
    wrap the sampler in `RuleCheckedSampler`."""
    if stable is not None and stable < 1:
        raise ValueError(f"--stable needs a positive number of steps, got {stable}")
    # no stop tokens: the answer is exactly one 81-token canvas, and a stray EOS must not wipe the cells after it
    cfg = GenerationConfig.from_checkpoint(model.generation_defaults, sampler, max_new_tokens=81,
                                           max_denoising_steps=steps, t_min=t_min, t_max=t_max, eos_token_id=(),
                                           pad_token_id=S.PAD, stability_threshold=stable,
                                           confidence_threshold=None if stable is None else math.inf)
    return dataclasses.replace(cfg, sampler=RuleCheckedSampler(cfg.sampler)) if rules else cfg


def solve_batch(model: DiffusionGemma, puzzles: list[list[int]], method: str, clamp: bool = True,
                cfg: GenerationConfig | None = None, seed: int = 0, on_step=None,
                ar_temperature: float = 0.0) -> tuple[list[list[int]], list[float]]:
    """Model answers (81 digits each, 0 where no digit) and tokens per forward per puzzle. `cfg`: the diffusion
    settings (default `decoding_config(model)`); AR decoding is greedy unless given a temperature."""
    prompts = torch.tensor([S.encode_prompt(p) for p in puzzles])
    engine = Engine(model)
    if method == "ar":
        out = engine.generate_ar(prompts, max_new_tokens=81, eos_token_id=(), pad_token_id=S.PAD,
                                 temperature=ar_temperature, seed=seed)
    else:
        canvas = mask = None
        if clamp:
            pairs = [S.clamp_canvas(p) for p in puzzles]
            canvas = torch.tensor([c for c, _ in pairs])
            mask = torch.tensor([m for _, m in pairs])
        for out in engine.stream(prompts, cfg or decoding_config(model), seed=seed, canvas=canvas, clamp=mask):
            if on_step and isinstance(out, StepEvent):
                on_step(out)
    answers = [S.decode_solution(row[-81:].tolist()) for row in out.sequences]
    return answers, out.tokens_per_forward.tolist()


@dataclass
class Solved:
    """Per puzzle: the kept answer, its tokens per forward, the first try's tokens per forward, and the try
    (1-based) the rule checker accepted, 0 if none did (the answer is then the last try's); per try, its seconds."""
    answers: list[list[int]]
    tokens_per_forward: list[float]
    first_tokens_per_forward: list[float]
    valid_at: list[int]
    seconds: list[float]


def solve_checked(model: DiffusionGemma, puzzles: list[list[int]], method: str, tries: int = 1, clamp: bool = True,
                  cfg: GenerationConfig | None = None, seed: int = 0, on_step=None, on_retry=None) -> Solved:
    """Verifier-gated best-of-N: try t (seed `seed + t - 1`) solves the puzzles no earlier try solved; the
    first answer the rule checker accepts is kept. `on_step(event)` sees every denoising step, `on_retry(t, seed,
    left)` each try that leaves `left` puzzles unsolved with tries to go. AR decoding gets the same budget: greedy
    first, then samples at temperature 1 (greedy retries would all be the same answer)."""
    n = len(puzzles)
    out = Solved([[0] * 81 for _ in range(n)], [0.0] * n, [0.0] * n, [0] * n, [])
    todo = list(range(n))
    for t in range(1, tries + 1):
        start = time.perf_counter()
        answers, tpf = solve_batch(model, [puzzles[i] for i in todo], method, clamp, cfg, seed + t - 1, on_step,
                                   ar_temperature=0.0 if t == 1 else 1.0)
        out.seconds.append(time.perf_counter() - start)
        if t == 1:
            out.first_tokens_per_forward = list(tpf)
        left = []
        for i, a, k in zip(todo, answers, tpf):
            out.answers[i], out.tokens_per_forward[i] = a, k
            if S.is_valid_solution(a, puzzles[i]):
                out.valid_at[i] = t
            else:
                left.append(i)
        todo = left
        if not todo:
            break
        if on_retry and t < tries:
            on_retry(t, seed + t - 1, len(todo))
    return out
