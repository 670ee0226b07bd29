"""Evaluation of the bundled code model on held-out variants of its function corpus (dgemma.tasks.code_corpus).

Tasks, each on variants never trained on:
- complete: from the `def` line of a descriptive-name variant, write the function;
- complete+doc: from the `def` line and the docstring (generic names included: the docstring says what to write);
- infill-body: the whole body between the `def` line and the assert that calls the function after it;
- infill-line: one missing line of the body, between the lines before and after it.

Each result is scored by running the completed function against its family's tests (pass rate) and by
`ast.parse` (parse rate); infills also by exact match. Methods: block diffusion (infill: choosing the gap length
itself, and with the true length given) and autoregressive decoding of the same weights from the prefix alone.

    python -m dgemma.tasks.code_eval --tasks 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import code_corpus
from .code_corpus.family import Variant, passes
from ..commands.generate import python_parses
from ..engine import Engine, GenerationConfig
from ..model import DiffusionGemma
from ..quantize import SCHEMES

TASKS = ("complete", "complete+doc", "infill-body", "infill-line")
METHODS = {"complete": ("diffusion", "ar"), "complete+doc": ("diffusion", "ar"),
           "infill-body": ("diffusion", "diffusion-gap-given", "ar-prefix-only"),
           "infill-line": ("diffusion", "diffusion-gap-given", "ar-prefix-only")}


@dataclass
class Task:
    variant: Variant
    prefix: str
    gap: str      # the reference answer: for completions, the rest of the document
    suffix: str   # "" for completions


def function_part(text: str) -> str:
    """The first function of `text`: its lines up to the first non-blank line that is not indented."""
    lines = text.split("\n")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()), len(lines))
    return "\n".join(lines[:end]).rstrip() + "\n"


def make_tasks(kind: str, n: int, seed: int) -> list[Task]:
    """n tasks of one kind, sampled from the held-out split; deterministic for a seed."""
    rng = random.Random(f"{seed}-{kind}")
    descriptive, generic = code_corpus.corpus("heldout")
    tasks = []
    while len(tasks) < n:
        pool = generic if kind != "complete" and rng.random() < code_corpus.GENERIC_SHARE else descriptive
        v = pool[rng.randrange(len(pool))]
        text = code_corpus.document(v, rng.randrange(len(v.family.tests)))
        ends = [i for i, ch in enumerate(text) if ch == "\n"]  # cuts fall just before a newline
        head = 2 if v.doc is not None else 1  # the def line, and the docstring line
        body_lines = v.body().count("\n")
        if kind == "complete":
            tasks.append(Task(v, text[:ends[0]], text[ends[0]:], ""))
        elif kind == "complete+doc":
            if v.doc is not None:
                tasks.append(Task(v, text[:ends[1]], text[ends[1]:], ""))
        elif kind == "infill-body":
            last = ends[head + body_lines - 1]  # the newline after the body's last line
            tasks.append(Task(v, text[:ends[0]], text[ends[0]:last], text[last:]))
        elif body_lines >= 2:  # infill-line: one of the body's lines
            k = head - 1 + rng.randrange(body_lines)
            tasks.append(Task(v, text[:ends[k]], text[ends[k]:ends[k + 1]], text[ends[k + 1]:]))
    return tasks


def run(engine: Engine, tok, task: Task, kind: str, method: str, cfg: GenerationConfig, seed: int):
    """(the completed function's source, the generated gap or continuation, tokens per forward)."""
    prefix_ids = [tok.bos_id] + tok.encode(task.prefix)
    L = engine.model.config.canvas_length
    if method.startswith("ar"):
        budget = 2 * L if kind.startswith("complete") else len(tok.encode(task.gap)) + 16
        out = engine.generate_ar([prefix_ids], max_new_tokens=budget, eos_token_id=cfg.eos_token_id,
                                 pad_token_id=cfg.pad_token_id)
        text = tok.decode(out.sequences[0, len(prefix_ids):].tolist())
        if kind == "infill-line":  # the gap is one line: keep the first line AR writes
            nl = text.find("\n", 1)
            text = text if nl < 0 else text[:nl]
        elif kind == "infill-body":
            text = function_part(task.prefix + text)[len(task.prefix):].rstrip("\n")
        return function_part(task.prefix + text + task.suffix), text, float(out.tokens_per_forward[0])
    if kind.startswith("complete"):
        out = engine.generate([prefix_ids], cfg, seed=seed)
        text = tok.decode(out.sequences[0, len(prefix_ids):].tolist())
        return function_part(task.prefix + text), text, float(out.tokens_per_forward[0])
    suffix_ids = tok.encode(task.suffix)
    gap = len(tok.encode(task.gap))
    result = engine.infill(prefix_ids, suffix_ids, cfg=cfg, seed=seed,
                           gap_length=min(gap, L - 1) if method == "diffusion-gap-given" else None,
                           max_gap=min(L - 1, 2 * gap + 8) if method == "diffusion" else None)
    text = tok.decode(result.tokens)
    return function_part(task.prefix + text + task.suffix), text, result.tokens_per_forward


def same(a: str, b: str) -> bool:
    return [x.rstrip() for x in a.strip("\n").split("\n")] == [x.rstrip() for x in b.strip("\n").split("\n")]


def evaluate(model_dir: str, n: int, kinds, steps: int | None, seed: int = 0, progress: bool = True,
             quantize: str | None = None, group_size: int | None = None) -> list[dict]:
    from tqdm import tqdm

    from ..tokenizer import Tokenizer
    model = DiffusionGemma.from_pretrained(model_dir, quantize=quantize, group_size=group_size).eval()
    tok = Tokenizer.from_dir(model_dir)
    engine = Engine(model)
    cfg = GenerationConfig.from_checkpoint(model.generation_defaults, max_new_tokens=2 * model.config.canvas_length,
                                           max_denoising_steps=steps, eos_token_id=tuple(tok.stop_ids),
                                           pad_token_id=tok.pad_id)
    rows = []
    for kind in kinds:
        tasks = make_tasks(kind, n, seed)
        for method in METHODS[kind]:
            passed = parsed = exact = 0
            tpf, start = [], time.perf_counter()
            bar = tqdm(tasks, desc=f"{kind} {method}", disable=not (progress and sys.stderr.isatty()))
            for i, task in enumerate(bar):
                source, text, t = run(engine, tok, task, kind, method, cfg, seed + i)
                parsed += python_parses(source)
                passed += passes(source, task.variant.name, task.variant.family)
                exact += bool(task.suffix) and same(text, task.gap)
                tpf.append(t)
            rows.append({"task": kind, "method": method, "tasks": n, "pass_rate": passed / n, "parse_rate": parsed / n,
                         "exact_match": exact / n if task.suffix else None, "tokens_per_forward": sum(tpf) / n,
                         "seconds_per_task": (time.perf_counter() - start) / n})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dgemma.tasks.code_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "assets" / "code"),
                   help="code checkpoint directory with tokenizer.json (default: the bundled model)")
    p.add_argument("--tasks", type=int, default=200, help="tasks per type (default 200)")
    p.add_argument("--kinds", nargs="+", default=list(TASKS), choices=TASKS, help="task types to run (default: all)")
    p.add_argument("--steps", type=int, default=None,
                   help="maximum denoising steps per canvas (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="task sampling and generation seed (default 0)")
    p.add_argument("--quantize", choices=list(SCHEMES), default=None,
                   help="quantize the weights while loading (dgemma.quantize; default: off)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--save", metavar="NAME", default=None,
                   help="also save the table as bench/results/NAME.json for BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.tasks < 1:
        p.error("--tasks must be >= 1")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    rows = evaluate(args.model, args.tasks, args.kinds, args.steps, args.seed, quantize=args.quantize)
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    if args.save:
        from ..bench.report import save_table
        cmd = "python -m dgemma.tasks.code_eval " + " ".join(sys.argv[1:] if argv is None else argv)
        save_table(args.save, f"Code model on held-out function variants ({Path(args.model).name})", cmd,
                   ["task", "method", "tasks", "test pass", "parses", "exact match", "tokens per forward", "s per task"],
                   [[r["task"], r["method"], r["tasks"], pct(r["pass_rate"]), pct(r["parse_rate"]),
                     pct(r["exact_match"]), f"{r['tokens_per_forward']:.2f}", f"{r['seconds_per_task']:.2f}"]
                    for r in rows],
                   text=(f"{len(code_corpus.families())} function families; every task is a variant (name, "
                         "parameters, docstring, hints, implementation) held out of training. Test pass: the "
                         "completed function returns what its family's tests expect. Diffusion infill finds the gap "
                         "length itself unless it is given; AR decodes the same weights from the prefix alone."))
    for r in rows:
        print(json.dumps(r) if args.json else
              f"{r['task']:13s} {r['method']:20s} pass {pct(r['pass_rate']):>6s}  parses {pct(r['parse_rate']):>6s}  "
              f"exact {pct(r['exact_match']):>6s}  tokens/forward {r['tokens_per_forward']:5.2f}  "
              f"{r['seconds_per_task']:.2f} s/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
