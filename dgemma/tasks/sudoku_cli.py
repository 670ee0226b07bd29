"""`dgemma sudoku`: solve a puzzle with the bundled model, or evaluate a method on fresh puzzles."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from ..engine import Engine, GenerationConfig, StepEvent
from ..model import DiffusionGemma
from ..sampling import SAMPLERS
from . import sudoku as S

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "sudoku"
METHODS = ("diffusion", "ar")  # block diffusion; left-to-right decoding of the same checkpoint's encoder
EVAL_SEEDS = {"test": 1_000_003, "validation": 2_000_003}  # (+1 for search puzzles) training data uses others


def load_model(path: str | None) -> DiffusionGemma:
    directory = Path(path) if path else BUNDLED
    if not directory.is_dir():
        raise ValueError(f"model directory {directory} does not exist")
    model = DiffusionGemma.from_pretrained(directory).eval()
    if model.config.vocab_size != S.VOCAB_SIZE or model.config.canvas_length != 81:
        raise ValueError(f"{directory} is not a sudoku model (vocab {model.config.vocab_size}, canvas "
                         f"{model.config.canvas_length}; expected {S.VOCAB_SIZE} and 81)")
    return model


def decoding_config(model: DiffusionGemma, steps: int | None = None, sampler: str = "topk",
                    t_min: float | None = None, t_max: float | None = None,
                    stable: int | None = None) -> GenerationConfig:
    """Block-diffusion settings for an 81-cell answer: the checkpoint's generation_config.json (steps, temperature
    schedule and stopping rule; the bundled model's were chosen on validation puzzles) unless overridden.
    `stable`: stop a puzzle once its answer has not changed for that many steps, whatever its entropy. The top-k
    schedule sampler is the default: it solves the most validation puzzles."""
    if stable is not None and stable < 1:
        raise ValueError(f"--stable needs a positive number of steps, got {stable}")
    # no stop tokens: the answer is exactly one 81-token canvas, and a stray EOS must not wipe the cells after it
    return GenerationConfig.from_checkpoint(model.generation_defaults, sampler, max_new_tokens=81,
                                            max_denoising_steps=steps, t_min=t_min, t_max=t_max, eos_token_id=(),
                                            pad_token_id=S.PAD, stability_threshold=stable,
                                            confidence_threshold=None if stable is None else math.inf)


def solve_batch(model: DiffusionGemma, puzzles: list[list[int]], method: str, clamp: bool = True,
                cfg: GenerationConfig | None = None, seed: int = 0,
                on_step=None) -> tuple[list[list[int]], list[float]]:
    """Model answers (81 digits each, 0 where no digit) and tokens per forward per puzzle. `cfg`: the diffusion
    settings (default `decoding_config(model)`); AR decoding is greedy."""
    prompts = torch.tensor([S.encode_prompt(p) for p in puzzles])
    engine = Engine(model)
    if method == "ar":
        out = engine.generate_ar(prompts, max_new_tokens=81, eos_token_id=(), pad_token_id=S.PAD)
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


def args_config(model: DiffusionGemma, args) -> GenerationConfig:
    return decoding_config(model, args.steps, args.sampler, args.t_min, args.t_max, args.stable)


def run_solve(args) -> int:
    puzzle = S.parse_puzzle(args.puzzle)  # SudokuError is a ValueError: one line, exit 2
    model = load_model(args.model)
    def print_step(event: StepEvent):
        grid = S.decode_solution(event.draft[0].tolist())
        print(f"step {event.step} ({int(event.accepted[0].sum())} cells accepted)\n{S.format_grid(grid)}\n",
              flush=True)
    show = print_step if args.show else None
    cfg, seed = args_config(model, args), args.seed or 0
    for tried in range(1, args.tries + 1):  # the rule checker keeps the first valid answer
        try_seed = seed + tried - 1
        answers, tpf = solve_batch(model, [puzzle], args.method or "diffusion", not args.no_clamp, cfg, try_seed,
                                   show)
        answer = answers[0]
        valid = S.is_valid_solution(answer, puzzle)
        if valid:
            break
        if tried < args.tries and not args.json:
            print(f"try {tried} (seed {try_seed}): not a valid solution, trying again", file=sys.stderr)
    if args.json:
        print(json.dumps({"solution": S.to_string(answer), "valid": valid, "tokens_per_forward": tpf[0],
                          "tries": tried, "seed": try_seed}))
    else:
        print(S.format_grid(answer))
        if args.verify:
            found = f" (try {tried}, seed {try_seed})" if args.tries > 1 else ""
            print(f"valid solution{found}" if valid else "NOT a valid solution")
    return 0 if valid or not args.verify else 1


def eval_puzzles(n: int, kind: str, split: str = "test") -> list:
    """The held-out puzzles of a difficulty bucket, the same for every method: seeds the training data never
    uses, one pair for the test set and one for validation (where decoding settings are chosen)."""
    return S.generate_dataset(n, seed=EVAL_SEEDS[split] + (kind == "search"), kind=kind)


def evaluate(model: DiffusionGemma, method: str, puzzles: list, kind: str, clamp: bool, cfg: GenerationConfig,
             batch: int) -> dict:
    from tqdm import tqdm
    n = len(puzzles)
    solved, tpf, start = 0, [], time.perf_counter()
    for i in tqdm(range(0, n, batch), desc=f"{method} {kind}", unit="batch", disable=not sys.stderr.isatty()):
        chunk = puzzles[i:i + batch]
        answers, t = solve_batch(model, [p.puzzle for p in chunk], method, clamp, cfg, seed=i)
        solved += sum(S.is_valid_solution(a, p.puzzle) for a, p in zip(answers, chunk))
        tpf += t
    seconds = time.perf_counter() - start
    return {"method": method, "kind": kind, "puzzles": n, "clamp": clamp and method == "diffusion",
            "solved": solved / n, "tokens_per_forward": sum(tpf) / len(tpf), "seconds_per_puzzle": seconds / n}


LABELS = {"diffusion": "block diffusion", "ar": "AR decoding of its encoder", "ar-trained": "AR-trained baseline"}


def run_eval(args) -> int:
    model = load_model(args.model)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [(model, m, m) for m in ([args.method] if args.method else METHODS)]
    if args.ar_model:
        runs.append((load_model(args.ar_model), "ar", "ar-trained"))
    rows = []
    puzzles = {kind: eval_puzzles(args.eval, kind, args.split) for kind in args.kinds}
    cfg = args_config(model, args)
    for m, method, label in runs:
        for kind in args.kinds:
            row = evaluate(m, method, puzzles[kind], kind, not args.no_clamp, cfg, args.batch)
            row["label"] = LABELS[label]
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"{row['label']:27s} {row['kind']:8s} solved {100 * row['solved']:5.1f}%  "
                  f"tokens/forward {row['tokens_per_forward']:5.2f}  {1000 * row['seconds_per_puzzle']:.1f} ms/puzzle",
                  flush=True)
    if args.save:
        from ..bench.report import save_table
        entropy_rule = ("" if cfg.confidence_threshold >= math.log(S.VOCAB_SIZE)  # above any entropy: no condition
                        else f" and its mean entropy is below {cfg.confidence_threshold}")
        save_table(args.save, f"Sudoku: block diffusion against autoregression ({args.model or 'bundled model'})",
                   "dgemma " + " ".join(sys.argv[1:]),
                   ["method", "difficulty", "puzzles", "givens clamped", "solved", "tokens per forward",
                    "ms per puzzle"],
                   [[r["label"], r["kind"], r["puzzles"], "yes" if r["clamp"] else "no", f"{100 * r['solved']:.1f}%",
                     f"{r['tokens_per_forward']:.2f}", f"{1000 * r['seconds_per_puzzle']:.1f}"] for r in rows],
                   text="Fresh puzzles with a unique solution per difficulty bucket (singles: naked/hidden singles "
                        "solve it; search: they do not), the same puzzles for every method. The AR-trained "
                        "baseline has the same architecture and size, trained on puzzles from the same generator "
                        "for about the same time with the next-token loss only (scripts/train_sudoku.sh "
                        "--decoder-loss-weight 0; the script's header gives each run's data and time). Block "
                        f"diffusion uses the {args.sampler} sampler, at most {cfg.max_denoising_steps} denoising "
                        f"steps and temperatures {cfg.t_max} to {cfg.t_min}, and stops a puzzle once its answer "
                        f"has not changed for {cfg.stability_threshold} steps{entropy_rule}; AR decoding is greedy.")
    return 0


def run(args) -> int:
    if args.method not in METHODS + (None,):
        raise ValueError(f"unknown --method {args.method!r}")
    if args.ar_model and args.eval is None:
        raise ValueError("--ar-model is a baseline for --eval N")
    if args.tries < 1:
        raise ValueError(f"--tries needs a positive number of tries, got {args.tries}")
    if args.tries > 1 and args.method == "ar":
        raise ValueError("--tries needs diffusion: AR decoding is greedy, so every try gives the same answer")
    if args.eval is not None:
        if args.tries > 1:
            raise ValueError("--tries applies to solving one PUZZLE; --eval measures single tries")
        if args.puzzle:
            raise ValueError("give either a PUZZLE or --eval N, not both")
        if args.eval < 1:
            raise ValueError(f"--eval needs a positive number of puzzles, got {args.eval}")
        return run_eval(args)
    if args.save:
        raise ValueError("--save saves an evaluation table: use it with --eval N")
    if args.split != "test":
        raise ValueError("--split chooses the puzzles of an evaluation: use it with --eval N")
    if not args.puzzle:
        raise ValueError("give a PUZZLE (81 characters, digits with 0 or . for blanks) or --eval N")
    return run_solve(args)


def register(sub) -> None:
    p = sub.add_parser("sudoku", help="solve a Sudoku with the bundled diffusion model, or evaluate methods",
                       description="Solve PUZZLE (81 characters: digits, 0 or . for blanks) with a sudoku "
                       "checkpoint, or with --eval N measure the solve rate on N fresh puzzles per difficulty.")
    p.add_argument("puzzle", nargs="?", help="81 characters, row by row; 0 or . for blanks")
    p.add_argument("--model", default=None, metavar="DIR", help="sudoku checkpoint (default: the bundled one)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="diffusion (block diffusion) or ar (left-to-right decoding of the encoder); default: "
                   "diffusion, and with --eval both")
    p.add_argument("--ar-model", metavar="DIR", default=None,
                   help="with --eval: also evaluate this autoregressively trained checkpoint, decoded left to right")
    p.add_argument("--steps", type=int, default=None,
                   help="maximum denoising steps (default: the checkpoint's generation_config.json, else 48)")
    p.add_argument("--t-min", type=float, default=None,
                   help="temperature at the last step (default: the checkpoint's generation_config.json, else 0.4)")
    p.add_argument("--t-max", type=float, default=None,
                   help="temperature at the first step (default: the checkpoint's generation_config.json, else 0.8)")
    p.add_argument("--stable", type=int, default=None, metavar="K",
                   help="stop a puzzle once its answer has not changed for K denoising steps, whatever its entropy "
                   "(default: the checkpoint's generation_config.json; the bundled model's is K=5)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="topk",
                   help="acceptance rule: topk (a growing number of the lowest-entropy free cells per step; the "
                   "default, it solves the most validation puzzles), entropy (the reference's entropy bound 0.1) "
                   "or confidence (probability >= 0.9)")
    p.add_argument("--no-clamp", action="store_true", help="do not fix the givens on the canvas")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--show", action="store_true", help="print the grid after every denoising step")
    p.add_argument("--tries", type=int, default=1, metavar="N",
                   help="sample up to N answers (seeds SEED, SEED+1, ...) and keep the first the rule checker "
                   "accepts as a valid solution (default 1)")
    p.add_argument("--verify", action="store_true", help="say whether the answer is a valid solution (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the grid")
    p.add_argument("--eval", type=int, default=None, metavar="N", help="evaluate on N fresh puzzles per difficulty")
    p.add_argument("--kinds", nargs="+", default=list(S.KINDS), choices=S.KINDS,
                   help="difficulty buckets to evaluate (default: singles search)")
    p.add_argument("--split", choices=sorted(EVAL_SEEDS), default="test",
                   help="with --eval: the test puzzles (default) or the validation ones, where decoding settings "
                   "are chosen")
    p.add_argument("--batch", type=int, default=100, help="puzzles solved side by side in --eval (default 100)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="with --eval: also save the table as bench/results/NAME.json for BENCHMARKS.md")
    p.set_defaults(func=run)
