"""`dgemma generate | infill | edit`: text in, text out, with the canvas shown denoising live in a terminal."""

from __future__ import annotations

import dataclasses
import difflib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from ..checkpoint import parse_dtype
from ..engine import CanvasEvent, Engine, GenerateOutput, GenerationConfig, StepEvent
from ..model import DiffusionGemma
from ..quantize import add_quantize_args
from ..sampling import SAMPLERS
from ..vision import SOFT_TOKEN_BUDGETS

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "code"


class CommandError(ValueError):
    """Bad user input; the CLI prints it as one line and exits with status 2."""


# --- shared by the text commands ------------------------------------------------------------------------
def add_model_args(p) -> None:
    p.add_argument("--model", default=None, metavar="DIR|ID",
                   help="checkpoint directory in the reference layout with tokenizer.json, or a Hugging Face Hub id "
                   "(org/name[@revision], through the hub's cache; HF_HUB_OFFLINE=1 uses the cache alone) "
                   "(default: the bundled code model)")
    p.add_argument("--revision", default=None,
                   help="hub revision of --model: a branch, tag or commit (default: main)")
    p.add_argument("--dtype", default="float32", help="weights dtype: float32, bfloat16 or float16 (default float32)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    add_quantize_args(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def add_sampling_args(p, max_new_tokens: int = 256) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                   help=f"tokens to generate, rounded up to whole canvases (default {max_new_tokens})")
    p.add_argument("--steps", type=int, default=None,
                   help="maximum denoising steps per canvas (default: the checkpoint's, 48 for the release)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                   help="acceptance rule: entropy (reference entropy bound), confidence (prob >= tau), "
                   "topk (fixed growing schedule of the lowest-entropy positions), margin (the same schedule "
                   "ranked by top-1 minus top-2 probability) (default: the checkpoint's dgemma_sampler, else entropy)")
    p.add_argument("--entropy-bound", type=float, default=None, help="entropy bound of the entropy sampler (default 0.1)")
    p.add_argument("--tau", type=float, default=0.9, help="probability threshold of the confidence sampler (default 0.9)")
    p.add_argument("--temperature", type=float, default=None,
                   help="constant temperature instead of the t_max -> t_min schedule")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the top-p probability mass")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")


def add_output_args(p) -> None:
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print only the final text (no live denoising view)")
    out.add_argument("--json", action="store_true",
                     help="print one JSON object: text, token counts, tokens per forward, timing")


def load(args):
    """(model, tokenizer) from --model or the bundled model; errors name what is missing."""
    from ..tokenizer import Tokenizer
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..hub import HubError, locate
    if not args.model and not BUNDLED_MODEL.is_dir():
        raise CommandError(f"model directory {BUNDLED_MODEL} does not exist (the bundled model is missing from this "
                           "install)")
    try:
        directory = locate(args.model or BUNDLED_MODEL, args.revision)
    except HubError as e:
        raise CommandError(str(e)) from None
    if isinstance(directory, str):
        raise CommandError(f"{directory} is a preset (random weights, no tokenizer); text commands need a "
                           "checkpoint directory or hub id")
    if not (directory / "tokenizer.json").exists():
        raise CommandError(f"{directory} has no tokenizer.json; text commands need the checkpoint's tokenizer")
    tokenizer = Tokenizer.from_dir(directory)
    model = DiffusionGemma.from_pretrained(directory, dtype=parse_dtype(args.dtype), device=args.device,
                                           quantize=args.quantize, group_size=args.group_size)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CommandError(f"{directory}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                           f"{model.config.vocab_size}")
    return model.eval(), tokenizer


def add_image_args(p) -> None:
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an image for the model to read (repeatable, kept in order): before the prompt's text in "
                   "generate, with the first message in chat; needs a checkpoint with a vision tower")
    p.add_argument("--max-soft-tokens", type=int, choices=SOFT_TOKEN_BUDGETS, default=280,
                   help="soft tokens per image (default 280): more show finer detail and cost a longer prefill")


def read_images(args, model: DiffusionGemma):
    """--image files as `vision.PromptImages`, or None without any."""
    if not args.image:
        return None
    from ..vision import PromptImages
    if model.vision is None:
        raise CommandError(f"{args.model or BUNDLED_MODEL} has no vision tower: --image needs a checkpoint with one")
    return PromptImages.read(model, args.image, args.max_soft_tokens)


def with_images(args, model: DiffusionGemma, ids: list[int]) -> tuple[list[int], tuple | None]:
    """The prompt ids with each --image's token run after the BOS token, and the engine's `images` (None
    without images)."""
    images = read_images(args, model)
    if images is None:
        return ids, None
    ids = ids[:1] + [t for run in images.runs for t in run] + ids[1:]
    return ids, (images.soft, None)


def generation_config(args, model: DiffusionGemma, tokenizer) -> GenerationConfig:
    stops = tuple(sorted(set(tokenizer.stop_ids)))
    try:
        cfg = GenerationConfig.from_checkpoint(
            model.generation_defaults, args.sampler, args.entropy_bound, args.tau,
            max_new_tokens=args.max_new_tokens, max_denoising_steps=args.steps or None,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token_id=stops,
            pad_token_id=tokenizer.pad_id)
        cfg.validate(model.config.vocab_size)
    except ValueError as e:
        raise CommandError(str(e)) from None
    return cfg


def check_context(model: DiffusionGemma, prompt_len: int, new_tokens: int) -> None:
    L = model.config.canvas_length
    needed = prompt_len + -(-new_tokens // L) * L
    limit = model.config.max_position_embeddings
    if needed > limit:
        raise CommandError(f"prompt of {prompt_len} tokens plus {new_tokens} new tokens (in canvases of {L}) "
                           f"needs {needed} positions, more than the model's context of {limit}")


def cut_at_stop(ids: list[int], cfg: GenerationConfig) -> list[int]:
    stops = set(cfg.eos_token_id) | {cfg.pad_token_id}
    return ids[:next((i for i, t in enumerate(ids) if t in stops), len(ids))]


class LiveView:
    """Redraws the current canvas in place: accepted tokens bold green, the rest of the draft dimmed."""

    def __init__(self, tokenizer, stream=sys.stdout):
        self.tok, self.out, self.lines, self.committed = tokenizer, stream, 0, ""

    def piece(self, t: int) -> str:
        return self.tok.decode([t], skip_special=False)

    def draw(self, text: str) -> None:
        if self.lines:
            self.out.write(f"\x1b[{self.lines}F\x1b[J")
        else:
            self.out.write("\r\x1b[J")
        self.out.write(text)
        self.out.flush()
        width = max(shutil.get_terminal_size().columns, 20)
        self.lines = sum(max(1, -(-len(line) // width)) for line in text.split("\n")) - 1

    def step(self, event: StepEvent) -> None:
        parts = []
        for t, ok in zip(event.draft[0].tolist(), event.accepted[0].tolist()):
            parts.append(f"\x1b[1;32m{self.piece(t)}\x1b[0m" if ok else f"\x1b[2m{self.piece(t)}\x1b[0m")
        self.draw(self.committed + "".join(parts) + f"\x1b[0m  \x1b[2m[canvas {event.canvas + 1}, "
                  f"step {event.step}]\x1b[0m")

    def canvas(self, text: str) -> None:
        self.committed = text
        self.draw(text)

    def finish(self, text: str) -> None:
        self.draw(text + "\n")


def run_generation(engine: Engine, ids: list[int], cfg: GenerationConfig, seed, tokenizer, view: LiveView | None,
                   **kwargs) -> tuple[GenerateOutput, list[int], float]:
    start = time.perf_counter()
    generated: list[int] = []
    for event in engine.stream(torch.tensor([ids]), cfg, seed=seed, **kwargs):
        if isinstance(event, StepEvent) and view:
            view.step(event)
        elif isinstance(event, CanvasEvent):
            generated += event.tokens[0].tolist()
            if view:
                view.canvas(tokenizer.decode(cut_at_stop(generated, cfg)))
    return event, cut_at_stop(generated, cfg), time.perf_counter() - start


def report(args, out: GenerateOutput, text: str, new_ids: list[int], seconds: float, prompt_len: int,
           view: LiveView | None, **extra) -> None:
    if args.json:
        print(json.dumps({"model": str(args.model or BUNDLED_MODEL), "text": text, "prompt_tokens": prompt_len,
                          "generated_tokens": len(new_ids), "tokens_per_forward": float(out.tokens_per_forward[0]),
                          "steps_per_canvas": out.steps_per_canvas, "seconds": round(seconds, 4),
                          "tokens_per_second": round(len(new_ids) / seconds, 2) if seconds else None, **extra}))
    elif view:
        view.finish(text)
        print(f"\x1b[2m{len(new_ids)} tokens in {seconds:.2f}s, {float(out.tokens_per_forward[0]):.1f} tokens per "
              f"forward, steps per canvas {out.steps_per_canvas}\x1b[0m", file=sys.stderr)
    else:
        print(text)


def make_view(args, tokenizer):
    return None if (args.quiet or args.json or not sys.stdout.isatty()) else LiveView(tokenizer)


# --- generate --------------------------------------------------------------------------------------------
def run_generate(args) -> int:
    if not args.prompt.strip():
        raise CommandError("empty prompt: give the text to continue")
    if args.tries < 1:
        raise CommandError(f"--tries must be at least 1, got {args.tries}")
    if args.format:
        if args.image:
            raise CommandError("--image cannot be combined with --format yet")
        return run_markup(args)
    if args.json_schema and args.tries > 1:
        raise CommandError("--tries checks that the text parses as Python; with --json-schema it is always valid JSON")
    schema = read_schema(args.json_schema) if args.json_schema else None
    model, tok = load(args)
    cfg = generation_config(args, model, tok)
    ids, images = with_images(args, model, tok.encode(args.prompt, add_bos=True))
    constraints = None
    if schema is not None:
        from ..json_schema import SchemaError, plan
        try:
            constraints, new = plan(schema, tok, model.config, len(ids), cfg.max_new_tokens)
        except SchemaError as e:
            raise CommandError(f"{args.json_schema}: {e}") from None
        cfg = dataclasses.replace(cfg, max_new_tokens=new)
    check_context(model, len(ids), cfg.max_new_tokens)
    view = make_view(args, tok)
    engine = Engine(model, compile=args.compile)
    base = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    extra = {}
    for attempt in range(args.tries):
        if view:
            print(f"\x1b[1m{args.prompt}\x1b[0m", end="", flush=True)
        out, new_ids, seconds = run_generation(engine, ids, cfg, base + attempt, tok, view, constraints=constraints,
                                               images=images)
        text = tok.decode(new_ids)
        if schema is not None:  # valid by construction; printed without the slots' filler whitespace
            text = json.dumps(json.loads(text), ensure_ascii=False)
        if args.tries == 1:
            break
        ok = python_parses(args.prompt + text)
        extra = {"tries": attempt + 1, "parses": ok}
        if ok:
            break
        if view:
            view.finish(text)
            view.lines = 0
        if not args.json:
            print(f"dgemma generate: try {attempt + 1} of {args.tries} does not parse as Python"
                  + ("; trying the next seed" if attempt + 1 < args.tries else "; keeping it"), file=sys.stderr)
    report(args, out, text if view or args.json or args.quiet else args.prompt + text, new_ids, seconds, len(ids),
           view, **extra)
    return 0


def run_markup(args) -> int:
    """--format xml|svg: a well-formed document (dgemma.markup), repaired by re-denoising from the first error."""
    from .. import markup
    if args.json_schema or args.tries > 1:
        raise CommandError("--format cannot be combined with --json-schema or --tries")
    if args.repair_rounds < 0:
        raise CommandError(f"--repair-rounds must be >= 0, got {args.repair_rounds}")
    root = "svg" if args.format == "svg" else None
    try:
        markup.check_prompt(args.prompt, root)
    except ValueError as e:
        raise CommandError(str(e)) from None
    model, tok = load(args)
    cfg = generation_config(args, model, tok)
    check_context(model, len(tok.encode(args.prompt, add_bos=True)), cfg.max_new_tokens)
    start = time.perf_counter()
    try:
        text, info = markup.generate(Engine(model, compile=args.compile), tok, args.prompt, cfg, args.seed,
                                     root=root, rounds=args.repair_rounds)
    except ValueError as e:
        raise CommandError(str(e)) from None
    info["seconds"] = round(time.perf_counter() - start, 4)
    if info["closed"]:
        print(f"dgemma generate: no well-formed {args.format} after {info['rounds']} round(s); the output is cut at "
              "its first error (or where the tokens ran out) and its open elements are closed", file=sys.stderr)
    print(json.dumps({"text": text, **info}) if args.json else (text if args.quiet else args.prompt + text))
    return 0


def read_schema(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{file}: no such file")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CommandError(f"{file}: not valid JSON ({e})") from None


def python_parses(source: str) -> bool:
    """The `--tries` check: whether the prompt and its continuation parse as Python."""
    import ast
    try:
        ast.parse(source)
        return True
    except (SyntaxError, ValueError):
        return False


# --- infill and edit -------------------------------------------------------------------------------------
def infill_text(model, tok, args, prefix: str, suffix: str, gap: int | None) -> tuple[str, dict]:
    cfg = generation_config(args, model, tok)
    prefix_ids, suffix_ids = tok.encode(prefix, add_bos=True), tok.encode(suffix)
    check_context(model, len(prefix_ids), model.config.canvas_length)  # the gap and the suffix share one canvas
    start = time.perf_counter()
    try:
        result = Engine(model).infill(prefix_ids, suffix_ids, gap_length=gap, cfg=cfg, seed=args.seed)
    except ValueError as e:
        raise CommandError(str(e)) from None
    seconds = time.perf_counter() - start
    return tok.decode(result.tokens), {"gap_tokens": len(result.tokens), "gap_length": result.gap_length,
                                      "gap_searched": gap is None, "tokens_per_forward": result.tokens_per_forward,
                                      "seconds": round(seconds, 4)}


def run_infill(args) -> int:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        text = path.read_text()
        if text.count(args.marker) != 1:
            raise CommandError(f"{path}: expected the marker {args.marker!r} exactly once, found {text.count(args.marker)}")
        prefix, suffix = text.split(args.marker)
    elif args.prefix is not None:
        prefix, suffix = args.prefix, args.suffix or ""
    else:
        raise CommandError("give --prefix (and --suffix), or --file with a marker")
    model, tok = load(args)
    gap, info = infill_text(model, tok, args, prefix, suffix, args.gap)
    if args.json:
        print(json.dumps({"gap": gap, "text": prefix + gap + suffix, **info}))
    else:
        print(gap if args.only_gap else prefix + gap + suffix, end="" if not args.only_gap else "\n")
    return 0


def parse_lines(spec: str, total: int) -> tuple[int, int]:
    try:
        a, _, b = spec.partition("-")
        first, last = int(a), int(b or a)
    except ValueError:
        raise CommandError(f"--lines must look like A-B (1-based, inclusive), got {spec!r}") from None
    if not 1 <= first <= last <= total:
        raise CommandError(f"--lines {spec} is outside the file's {total} lines")
    return first, last


def run_edit(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    first, last = parse_lines(args.lines, len(lines))
    if args.gap is not None and args.search_gap:
        raise CommandError("--gap and --search-gap conflict: give a length or let the model choose")
    prefix, span, suffix = "".join(lines[:first - 1]), "".join(lines[first - 1:last]), "".join(lines[last:])
    model, tok = load(args)
    gap = args.gap if args.gap is not None else (None if args.search_gap else max(1, len(tok.encode(span))))
    new_span, info = infill_text(model, tok, args, prefix, suffix, gap)
    if span.endswith("\n") and not new_span.endswith("\n"):
        new_span += "\n"
    edited = prefix + new_span + suffix
    if args.json:
        print(json.dumps({"file": str(path), "lines": [first, last], "old": span, "new": new_span, **info}))
    elif args.diff:
        sys.stdout.writelines(difflib.unified_diff(original.splitlines(keepends=True), edited.splitlines(keepends=True),
                                                   str(path), str(path) + " (edited)"))
    else:
        print(edited, end="")
    if args.write:
        backup = path.with_name(path.name + ".orig")
        backup.write_text(original)
        path.write_text(edited)
        print(f"wrote {path} (original kept as {backup})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt with block diffusion (live denoising view)",
                       description="Generate a continuation of PROMPT. In a terminal the canvas is shown denoising "
                       "live; --quiet prints only the text, --json a machine-readable record.")
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--compile", action="store_true",
                   help="compile the denoising step and the canvas commits (torch.compile; CUDA graphs on GPU): "
                   "pays off on long or repeated generations, the first canvas pays for compilation")
    p.add_argument("--tries", type=int, default=1,
                   help="generate up to N samples (seeds SEED, SEED+1, ...) and keep the first whose prompt + text "
                   "parses as Python: a cheap check on fast drafts, for code models (default 1)")
    p.add_argument("--json-schema", metavar="FILE", default=None,
                   help="write JSON valid against the JSON Schema in FILE: its skeleton is clamped on the canvas and "
                   "the model fills the values (supported keywords: see dgemma.json_schema)")
    p.add_argument("--format", choices=("xml", "svg"), default=None,
                   help="write a well-formed XML (or SVG: root <svg>) document continuing PROMPT: checked, "
                   "re-denoised from the first error, and at worst cut there with its open elements closed")
    p.add_argument("--repair-rounds", type=int, default=3,
                   help="with --format: how many times to re-denoise from the first error (default 3)")
    add_image_args(p)
    add_model_args(p)
    add_sampling_args(p)
    add_output_args(p)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("infill", help="fill the gap between a prefix and a suffix",
                       description="Fill in text between --prefix and --suffix (or at MARKER in --file). The gap "
                       "length is --gap tokens, or chosen by the model among several lengths.")
    p.add_argument("--prefix", help="text before the gap")
    p.add_argument("--suffix", help="text after the gap (default empty)")
    p.add_argument("--file", help="a file containing the marker where the gap is")
    p.add_argument("--marker", default="<FILL>", help="gap marker inside --file (default <FILL>)")
    p.add_argument("--gap", type=int, default=None, help="gap length in tokens (default: the model chooses)")
    p.add_argument("--only-gap", action="store_true", help="print only the generated gap")
    add_model_args(p)
    add_sampling_args(p)
    add_output_args(p)
    p.set_defaults(func=run_infill)

    p = sub.add_parser("edit", help="regenerate a span of lines of a file in context",
                       description="Re-noise lines A-B of FILE and regenerate them from the surrounding code. "
                       "Prints the edited file (or a diff); --write updates FILE and keeps FILE.orig.")
    p.add_argument("file", help="file to edit")
    p.add_argument("--lines", required=True, help="1-based inclusive line range to regenerate, e.g. 10-14")
    p.add_argument("--gap", type=int, default=None, help="tokens for the new span (default: the old span's length)")
    p.add_argument("--search-gap", action="store_true", help="let the model choose the new span's length")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead of the whole file")
    p.add_argument("--write", action="store_true", help="write the result to FILE (the original goes to FILE.orig)")
    add_model_args(p)
    add_sampling_args(p)
    add_output_args(p)
    p.set_defaults(func=run_edit)
