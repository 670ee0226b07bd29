"""Infilling evaluation of a code model on held-out standard-library modules.

Tasks cut one line (single-line) or 2-4 consecutive lines (multi-line) out of a held-out module; the model
fills them from the code before (encoder) and after (clamped on the canvas). Reported per task type and
method: exact match (ignoring trailing whitespace), the share of infilled files that still `ast.parse`,
and tokens per forward. Methods: diffusion with the true gap length, diffusion choosing the gap length
itself, and autoregressive decoding of the same weights from the prefix alone.

    python -m dgemma.tasks.code_eval --model dgemma/assets/code --tasks 100 --json
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..engine import Engine, GenerationConfig
from ..model import DiffusionGemma

METHODS = ("diffusion-gap-given", "diffusion-gap-found", "ar-prefix-only")


@dataclass
class Task:
    module: str
    prefix: str
    span: str
    suffix: str
    kind: str  # "single-line" or "multi-line"


def make_tasks(files: list[Path], n: int, kind: str, seed: int) -> list[Task]:
    """Cut spans of non-blank, non-comment lines at random places; deterministic for a seed."""
    rng = random.Random(f"{seed}-{kind}")
    sources = [(f.name, f.read_text(encoding="utf-8").splitlines(keepends=True)) for f in sorted(files)]
    tasks = []
    while len(tasks) < n:
        name, lines = rng.choice(sources)
        width = 1 if kind == "single-line" else rng.randint(2, 4)
        start = rng.randrange(1, max(2, len(lines) - width))
        span = lines[start:start + width]
        if len(span) < width or any(not s.strip() or s.strip().startswith("#") for s in span):
            continue
        tasks.append(Task(name, "".join(lines[:start]), "".join(span), "".join(lines[start + width:]), kind))
    return tasks


def same(a: str, b: str) -> bool:
    return [x.rstrip() for x in a.strip("\n").split("\n")] == [x.rstrip() for x in b.strip("\n").split("\n")]


def parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def fill(engine: Engine, tok, task: Task, method: str, cfg: GenerationConfig, max_prefix: int, seed: int):
    prefix_ids = tok.encode(task.prefix)[-max_prefix:]
    prefix_ids = [tok.bos_id] + prefix_ids
    span_ids = tok.encode(task.span)
    L = engine.model.config.canvas_length
    if method == "ar-prefix-only":
        out = engine.generate_ar([prefix_ids], max_new_tokens=len(span_ids) + 8, eos_token_id=cfg.eos_token_id,
                                 pad_token_id=cfg.pad_token_id)
        text = tok.decode(out.sequences[0, len(prefix_ids):].tolist())
        lines = text.splitlines(keepends=True)[:task.span.count("\n") or 1]  # as many lines as the gap had
        return "".join(lines), float(out.tokens_per_forward[0])
    gap = min(len(span_ids), L - 1) if method == "diffusion-gap-given" else None
    result = engine.infill(prefix_ids, tok.encode(task.suffix), gap_length=gap, cfg=cfg, seed=seed,
                           max_gap=min(L - 1, 4 * len(span_ids) + 8) if gap is None else None)
    return tok.decode(result.tokens), result.tokens_per_forward


def evaluate(model_dir: str, n: int, methods, steps: int, max_prefix: int, seed: int = 0) -> list[dict]:
    from tqdm import tqdm

    from ..tokenizer import Tokenizer, stdlib_files
    model = DiffusionGemma.from_pretrained(model_dir).eval()
    tok = Tokenizer.from_dir(model_dir)
    engine = Engine(model)
    cfg = GenerationConfig.from_checkpoint(model.generation_defaults,
                                           max_new_tokens=model.config.canvas_length, max_denoising_steps=steps,
                                           eos_token_id=tuple(tok.stop_ids), pad_token_id=tok.pad_id)
    files = stdlib_files(held_out=True)
    rows = []
    for kind in ("single-line", "multi-line"):
        tasks = make_tasks(files, n, kind, seed)
        for method in methods:
            exact = valid = 0
            tpf, start = [], time.perf_counter()
            for i, task in enumerate(tqdm(tasks, desc=f"{kind} {method}", disable=not sys.stderr.isatty())):
                text, t = fill(engine, tok, task, method, cfg, max_prefix, seed + i)
                exact += same(text, task.span)
                valid += parses(task.prefix + text + ("" if text.endswith("\n") else "\n") + task.suffix)
                tpf.append(t)
            rows.append({"task": kind, "method": method, "tasks": n, "exact_match": exact / n,
                         "ast_valid": valid / n, "tokens_per_forward": sum(tpf) / n,
                         "seconds_per_task": (time.perf_counter() - start) / n})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dgemma.tasks.code_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "assets" / "code"),
                   help="code checkpoint directory with tokenizer.json (default: the bundled model)")
    p.add_argument("--tasks", type=int, default=100, help="tasks per type (default 100)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare")
    p.add_argument("--steps", type=int, default=24, help="maximum denoising steps per canvas (default 24)")
    p.add_argument("--max-prefix", type=int, default=384, help="prefix tokens kept before the gap (default 384)")
    p.add_argument("--seed", type=int, default=0, help="task sampling and generation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="also save the table as bench/results/NAME.json for BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    rows = evaluate(args.model, args.tasks, args.methods, args.steps, args.max_prefix, args.seed)
    if args.save:
        from ..bench.report import save_table
        cmd = "python -m dgemma.tasks.code_eval " + " ".join(sys.argv[1:] if argv is None else argv)
        save_table(args.save, f"Code infilling on held-out standard-library modules ({Path(args.model).name})", cmd,
                   ["task", "method", "tasks", "exact match", "ast.parse valid", "tokens per forward", "s per task"],
                   [[r["task"], r["method"], r["tasks"], f"{100 * r['exact_match']:.1f}%", f"{100 * r['ast_valid']:.1f}%",
                     f"{r['tokens_per_forward']:.2f}", f"{r['seconds_per_task']:.2f}"] for r in rows],
                   text=("Single-line: one line cut out of a held-out module; multi-line: 2-4 lines. Diffusion fills "
                         "the gap between the prefix (encoder) and the clamped suffix, with the true gap length or "
                         "finding it (ending the gap with EOS/pad); AR decodes the same weights from the prefix alone "
                         f"and keeps as many lines as the gap had. At most {args.steps} denoising steps per canvas."))
    for r in rows:
        print(json.dumps(r) if args.json else
              f"{r['task']:11s} {r['method']:20s} exact {100 * r['exact_match']:5.1f}%  ast-valid "
              f"{100 * r['ast_valid']:5.1f}%  tokens/forward {r['tokens_per_forward']:5.2f}  "
              f"{r['seconds_per_task']:.2f} s/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
