"""What quantization costs the bundled models (issue #23, Numbers): per scheme, the Sudoku model's solve rate with
the CLI's defaults on fresh test puzzles (pass@1 and tokens per forward, per difficulty bucket), and the code model's
mean KL(float || quantized) per token of its next-token distributions on held-out function documents, with its
completion and infill pass rates. Both models are stored in bf16, so the float32 row is their bf16 weights exactly.

    python bench/quant_quality.py --threads 2   # saves bench/results/quant-quality.json; dgemma bench --markdown-only
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgemma import DiffusionGemma  # noqa: E402
from dgemma.bench.report import publish_table  # noqa: E402
from dgemma.quantize import SCHEMES, weight_stats  # noqa: E402
from dgemma.tasks import code_corpus, code_eval  # noqa: E402
from dgemma.tasks import sudoku_cli  # noqa: E402
from dgemma.tasks.sudoku_decoding import decoding_config, load_model  # noqa: E402
from dgemma.tokenizer import Tokenizer  # noqa: E402

CODE = ROOT / "dgemma" / "assets" / "code"


@torch.no_grad()
def next_token_logprobs(model: DiffusionGemma, docs: list[list[int]]) -> list[torch.Tensor]:
    """The encoder's next-token log-probabilities at every position of each document."""
    out = []
    for ids in docs:
        x = torch.tensor([ids])
        out.append(model.logits(model.encode(x, model.new_cache(1, len(ids)))).float().log_softmax(-1)[0])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--puzzles", type=int, default=1000, help="Sudoku test puzzles per bucket (default 1000)")
    p.add_argument("--docs", type=int, default=200, help="held-out code documents for the KL (default 200)")
    p.add_argument("--code-tasks", type=int, default=30, help="code tasks per kind (default 30; 0: skip)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--variants", nargs="+", default=["float32", *SCHEMES], metavar="SCHEME[:GROUP]",
                   help="rows to measure: float32 and schemes, a scheme optionally with its int4 group size "
                   "(mixed:32); default: float32 and every scheme with the default groups")
    p.add_argument("--name", default="quant-quality", help="results name (bench/results/NAME.json)")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    tok = Tokenizer.from_dir(CODE)
    rng = random.Random(0)
    docs = [tok.encode(code_corpus.draw(rng, "heldout")[1])[:512] for _ in range(args.docs)]
    ref = next_token_logprobs(DiffusionGemma.from_pretrained(CODE).eval(), docs)
    base = load_model(None)
    cfg = decoding_config(base)  # the CLI's defaults: the checkpoint's own settings
    puzzles = {kind: sudoku_cli.eval_puzzles(args.puzzles, kind) for kind in ("singles", "search")}
    header = ["weights", "Sudoku bytes", "singles solved", "search solved", "tokens per forward (singles, search)",
              "code KL per token", "code: complete pass", "code: infill-body pass"]
    rows = []
    for variant in args.variants:
        scheme, _, group = variant.partition(":")
        scheme, group = (None if scheme == "float32" else scheme), (int(group) if group else None)
        if scheme is not None and scheme not in SCHEMES:
            p.error(f"unknown variant {variant!r}: use float32 or one of {', '.join(SCHEMES)}, optionally :GROUP")
        model = load_model(None, scheme, group)
        solved = {k: sudoku_cli.evaluate(model, "diffusion", puzzles[k], k, True, cfg, batch=100)
                  for k in puzzles}
        kl = ""
        if scheme is not None:
            q = next_token_logprobs(DiffusionGemma.from_pretrained(CODE, quantize=scheme, group_size=group).eval(),
                                    docs)
            total = sum(F.kl_div(b, a, log_target=True, reduction="sum").item() for a, b in zip(ref, q))
            kl = f"{total / sum(len(d) for d in docs):.2e}"
        code = {}
        if args.code_tasks:
            for r in code_eval.evaluate(str(CODE), args.code_tasks, ("complete", "infill-body"), None,
                                        quantize=scheme, group_size=group, progress=False):
                if r["method"] == "diffusion":
                    code[r["task"]] = f"{100 * r['pass_rate']:.1f}%"
        rows.append([variant, f"{weight_stats(model)['weight_bytes'] / 1e6:.2f} MB",
                     f"{100 * solved['singles']['pass@1']:.1f}%", f"{100 * solved['search']['pass@1']:.1f}%",
                     f"{solved['singles']['first_tokens_per_forward']:.2f}, "
                     f"{solved['search']['first_tokens_per_forward']:.2f}",
                     kl or "-", code.get("complete", "-"), code.get("infill-body", "-")])
        print(" | ".join(rows[-1]), flush=True)
    if not args.no_save:
        command = " ".join(["python bench/quant_quality.py", *(sys.argv[1:] if argv is None else argv)])
        title = "What quantization costs the bundled models" + (
            "" if args.variants == p.get_default("variants") else f": {', '.join(args.variants)}")
        publish_table(True, args.name, title, command,
                      header, rows,
                      f"Sudoku: the bundled model with the CLI's defaults (dgemma sudoku --eval {args.puzzles}, block "
                      "diffusion, givens clamped, pass@1) on the same fresh test puzzles for every row. Code: the "
                      "bundled code model; KL(float32 || row) of the encoder's next-token distributions, summed over "
                      f"every position of {args.docs} held-out function documents (at most 512 tokens each) and "
                      f"divided by their tokens; pass rates of block diffusion on {args.code_tasks} held-out tasks "
                      "each (python -m dgemma.tasks.code_eval). Both checkpoints hold bf16 weights: the float32 row "
                      "computes on them exactly, the others in float32 on their quantized copies (int4 "
                      "groups: SCHEME:G gives G, otherwise the largest of 128, 64, 32 dividing every width: 128 "
                      "for both models).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
