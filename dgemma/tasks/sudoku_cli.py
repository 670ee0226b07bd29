"""`dgemma sudoku`: solve a puzzle with the bundled model, or evaluate a method on fresh puzzles."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from ..engine import GenerationConfig, StepEvent
from ..model import DiffusionGemma
from ..quantize import add_quantize_args
from ..sampling import SAMPLERS
from . import sudoku as S
from .sudoku_decoding import METHODS, decoding_config, load_model, solve_checked

EVAL_SEEDS = {"test": 1_000_003, "validation": 2_000_003}  # (+1 for search puzzles) training data uses others


def args_config(model: DiffusionGemma, args) -> GenerationConfig:
    return decoding_config(model, args.steps, args.sampler, args.t_min, args.t_max, args.stable, args.rules)


def run_solve(args) -> int:
    puzzle = S.parse_puzzle(args.puzzle)  # SudokuError is a ValueError: one line, exit 2
    model = load_model(args.model, args.quantize, args.group_size)

    def print_step(event: StepEvent):
        grid = S.decode_solution(event.draft[0].tolist())
        print(f"step {event.step} ({int(event.accepted[0].sum())} cells accepted)\n{S.format_grid(grid)}\n",
              flush=True)

    def say_retry(tried, seed, left):
        if not args.json:
            print(f"try {tried} (seed {seed}): not a valid solution, trying again", file=sys.stderr)
    seed = args.seed or 0
    out = solve_checked(model, [puzzle], args.method or "diffusion", args.tries, not args.no_clamp,
                        args_config(model, args), seed, print_step if args.show else None, say_retry)
    answer, valid, tried = out.answers[0], out.valid_at[0] > 0, len(out.seconds)
    if args.json:
        print(json.dumps({"solution": S.to_string(answer), "valid": valid,
                          "tokens_per_forward": out.tokens_per_forward[0], "tries": tried, "seed": seed + tried - 1}))
    else:
        print(S.format_grid(answer))
        if args.verify:
            found = f" (try {tried}, seed {seed + tried - 1})" if args.tries > 1 else ""
            print(f"valid solution{found}" if valid else "NOT a valid solution")
    return 0 if valid or not args.verify else 1


def read_puzzles(source: str) -> tuple[list[list[int] | None], list[str]]:
    """The puzzles of a file (`-`: stdin), one per line, None for a bad line; and one message per bad line,
    naming its number."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read puzzles from {source}: {e}") from None
    puzzles, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            puzzles.append(S.parse_puzzle(line.strip()))
        except S.SudokuError as e:
            puzzles.append(None)
            errors.append(f"{source}:{number}: {e}")
    return puzzles, errors


def run_file(args) -> int:
    """One 81-digit answer line per input line, in order (an empty line for a bad one), solved in batches."""
    from tqdm import tqdm
    puzzles, errors = read_puzzles(args.file)
    for message in errors:
        print(f"dgemma sudoku: error: {message}", file=sys.stderr)
    good = [i for i, p in enumerate(puzzles) if p is not None]
    answers = [""] * len(puzzles)
    if good:
        model = load_model(args.model, args.quantize, args.group_size)
        cfg, seed = args_config(model, args), args.seed or 0
        with tqdm(total=len(good), desc="solving", unit="puzzle", file=sys.stderr, disable=None) as bar:
            for start in range(0, len(good), args.batch):
                chunk = good[start:start + args.batch]
                out = solve_checked(model, [puzzles[i] for i in chunk], args.method or "diffusion", args.tries,
                                    not args.no_clamp, cfg, seed + start)
                for i, a in zip(chunk, out.answers):
                    answers[i] = "".join(map(str, a))
                bar.update(len(chunk))
    sys.stdout.write("".join(a + "\n" for a in answers))
    return 1 if errors else 0


def eval_puzzles(n: int, kind: str, split: str = "test") -> list:
    """The held-out puzzles of a difficulty bucket, the same for every method: seeds the training data never
    uses, one pair for the test set and one for validation (where decoding settings are chosen)."""
    return S.generate_dataset(n, seed=EVAL_SEEDS[split] + (kind == "search"), kind=kind)


def evaluate(model: DiffusionGemma, method: str, puzzles: list, kind: str, clamp: bool, cfg: GenerationConfig,
             batch: int, tries: int = 1) -> dict:
    """Solve rates of one method on one bucket: `pass@1` (the first try) and `solved` (within `tries`, the rule
    checker keeping the first valid answer), each with its tokens per forward and seconds per puzzle."""
    from tqdm import tqdm
    n = len(puzzles)
    first = solved = 0
    tpf, first_tpf, seconds, first_seconds = [], [], 0.0, 0.0
    for i in tqdm(range(0, n, batch), desc=f"{method} {kind}", unit="batch", disable=not sys.stderr.isatty()):
        chunk = puzzles[i:i + batch]
        out = solve_checked(model, [p.puzzle for p in chunk], method, tries, clamp, cfg, seed=i)
        first += sum(v == 1 for v in out.valid_at)
        solved += sum(v > 0 for v in out.valid_at)
        tpf += out.tokens_per_forward
        first_tpf += out.first_tokens_per_forward
        seconds, first_seconds = seconds + sum(out.seconds), first_seconds + out.seconds[0]
    return {"method": method, "kind": kind, "puzzles": n, "clamp": clamp and method == "diffusion", "tries": tries,
            "pass@1": first / n, "first_tokens_per_forward": sum(first_tpf) / n, "first_seconds_per_puzzle":
            first_seconds / n, "solved": solved / n, "tokens_per_forward": sum(tpf) / n,
            "seconds_per_puzzle": seconds / n}


LABELS = {"diffusion": "block diffusion", "ar": "AR decoding of its encoder", "ar-trained": "AR-trained baseline"}


def table_rows(row: dict) -> list[list]:
    """BENCHMARKS.md rows of an `evaluate` result: pass@1, and with retries pass@N in a row of its own."""
    def line(tries, solved, tpf, seconds):
        return [row["label"], row["kind"], row["puzzles"], "yes" if row["clamp"] else "no", tries,
                f"{100 * solved:.1f}%", f"{tpf:.2f}", f"{1000 * seconds:.1f}"]
    rows = [line("1", row["pass@1"], row["first_tokens_per_forward"], row["first_seconds_per_puzzle"])]
    if row["tries"] > 1:
        rows.append(line(f"best of {row['tries']}", row["solved"], row["tokens_per_forward"],
                         row["seconds_per_puzzle"]))
    return rows


def run_eval(args) -> int:
    model = load_model(args.model, args.quantize, args.group_size)
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
            row = evaluate(m, method, puzzles[kind], kind, not args.no_clamp, cfg, args.batch, args.tries)
            row["label"] = LABELS[label]
            rows.append(row)
            best = f"  best of {args.tries} {100 * row['solved']:5.1f}%" if args.tries > 1 else ""
            print(json.dumps(row) if args.json else
                  f"{row['label']:27s} {row['kind']:8s} pass@1 {100 * row['pass@1']:5.1f}%{best}  tokens/forward "
                  f"{row['first_tokens_per_forward']:5.2f}  {1000 * row['first_seconds_per_puzzle']:.1f} ms/puzzle",
                  flush=True)
    if args.save:
        from ..bench.report import save_table
        entropy_rule = ("" if cfg.confidence_threshold >= math.log(S.VOCAB_SIZE)  # above any entropy: no condition
                        else f" and its mean entropy is below {cfg.confidence_threshold}")
        rules = (", renoising kept cells that break a rule (self-correction)," if args.rules else "")
        retries = (f" Best of {args.tries}: later tries (seeds +1, +2, ...) run only on the puzzles no earlier try "
                   "solved, and the rule checker keeps the first valid answer; AR decoding gets the same budget "
                   "(greedy first, then samples at temperature 1). Its ms per puzzle count every try."
                   if args.tries > 1 else "")
        save_table(args.save, f"Sudoku: block diffusion against autoregression ({args.model or 'bundled model'})",
                   "dgemma " + " ".join(sys.argv[1:]),
                   ["method", "difficulty", "puzzles", "givens clamped", "tries", "solved", "tokens per forward",
                    "ms per puzzle"],
                   [line for r in rows for line in table_rows(r)],
                   text="Fresh puzzles with a unique solution per difficulty bucket (singles: naked/hidden singles "
                        "solve it; search: they do not), the same puzzles for every method. The AR-trained "
                        "baseline has the same architecture and size, trained on puzzles from the same generator "
                        "for about the same time with the next-token loss only (scripts/train_sudoku.sh "
                        "--decoder-loss-weight 0; the script's header gives each run's data and time). Block "
                        f"diffusion uses the {args.sampler} sampler{rules} at most {cfg.max_denoising_steps} "
                        f"denoising steps and temperatures {cfg.t_max} to {cfg.t_min}, and stops a puzzle once its "
                        f"answer has not changed for {cfg.stability_threshold} steps{entropy_rule}; AR decoding is "
                        f"greedy.{retries}")
    return 0


def run(args) -> int:
    if args.method not in METHODS + (None,):
        raise ValueError(f"unknown --method {args.method!r}")
    if args.ar_model and args.eval is None:
        raise ValueError("--ar-model is a baseline for --eval N")
    if args.tries < 1:
        raise ValueError(f"--tries needs a positive number of tries, got {args.tries}")
    if args.batch < 1:
        raise ValueError(f"--batch needs a positive number of puzzles, got {args.batch}")
    given = [name for name, on in (("PUZZLE", args.puzzle), ("--eval N", args.eval is not None),
                                   ("--file", args.file)) if on]
    if len(given) > 1:
        raise ValueError(f"give one of PUZZLE, --eval N and --file, not {' and '.join(given)}")
    if args.eval is not None:
        if args.eval < 1:
            raise ValueError(f"--eval needs a positive number of puzzles, got {args.eval}")
        return run_eval(args)
    if args.save:
        raise ValueError("--save saves an evaluation table: use it with --eval N")
    if args.split != "test":
        raise ValueError("--split chooses the puzzles of an evaluation: use it with --eval N")
    if args.file:
        return run_file(args)
    if not args.puzzle:
        raise ValueError("give a PUZZLE (81 characters, digits with 0 or . for blanks), --file PUZZLES or --eval N")
    return run_solve(args)


def register(sub) -> None:
    p = sub.add_parser("sudoku", help="solve a Sudoku with the bundled diffusion model, or evaluate methods",
                       description="Solve PUZZLE (81 characters: digits, 0 or . for blanks) with a sudoku "
                       "checkpoint, or every puzzle of --file PUZZLES, or with --eval N measure the solve rate on N "
                       "fresh puzzles per difficulty.")
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
    p.add_argument("--file", metavar="PUZZLES", default=None,
                   help="solve every puzzle of this file (- for stdin), one per line; prints one 81-digit answer "
                   "per line in order, an empty line for a bad puzzle (named on stderr; exit status 1)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="topk",
                   help="acceptance rule: topk (a growing number of the lowest-entropy free cells per step; the "
                   "default), margin (the same schedule, ranked by top-1 minus top-2 probability), entropy (the "
                   "reference's entropy bound 0.1) or confidence (probability >= 0.9)")
    p.add_argument("--rules", action="store_true",
                   help="self-correction: renoise kept cells whose digit a kept peer in its row, column or box "
                   "also holds")
    p.add_argument("--no-clamp", action="store_true", help="do not fix the givens on the canvas")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--show", action="store_true", help="print the grid after every denoising step")
    p.add_argument("--tries", type=int, default=1, metavar="N",
                   help="sample up to N answers (seeds SEED, SEED+1, ...) and keep the first the rule checker "
                   "accepts as a valid solution (default 1); with --eval, pass@1 and pass@N are both reported")
    p.add_argument("--verify", action="store_true", help="say whether the answer is a valid solution (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the grid")
    p.add_argument("--eval", type=int, default=None, metavar="N", help="evaluate on N fresh puzzles per difficulty")
    p.add_argument("--kinds", nargs="+", default=list(S.KINDS), choices=S.KINDS,
                   help="difficulty buckets to evaluate (default: singles search)")
    p.add_argument("--split", choices=sorted(EVAL_SEEDS), default="test",
                   help="with --eval: the test puzzles (default) or the validation ones, where decoding settings "
                   "are chosen")
    p.add_argument("--batch", type=int, default=100,
                   help="puzzles solved side by side in --eval and --file (default 100)")
    add_quantize_args(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="with --eval: also save the table as bench/results/NAME.json for BENCHMARKS.md")
    p.set_defaults(func=run)
