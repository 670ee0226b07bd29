"""`dgemma` command line: each subcommand lives in the module that owns its job and registers itself here.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` (args -> exit code).
Imports stay lazy so `dgemma --help` and `dgemma info` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import torch

# subcommand -> module providing register(subparsers)
COMMANDS = {
    "info": "dgemma.commands.info",
    "generate": "dgemma.commands.generate",
    "infill": "dgemma.commands.generate",
    "edit": "dgemma.commands.generate",
    "chat": "dgemma.commands.chat",
    "serve": "dgemma.serving",
    "train": "dgemma.training.cli",
    "sudoku": "dgemma.tasks.sudoku_cli",
    "bench": "dgemma.bench.command",
    "quantize": "dgemma.commands.quantize",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgemma", description="Block-diffusion language models "
                                     "(DiffusionGemma architecture): run, fine-tune, serve, benchmark.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for name, module in COMMANDS.items():
        if module in registered:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("dgemma"):
                continue  # subcommand not built yet
            raise
        mod.register(sub)
        registered.add(module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="dgemma: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("dgemma: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dgemma generate ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141
    except (ValueError, FileNotFoundError, ModuleNotFoundError, torch.OutOfMemoryError) as e:
        if args.verbose:  # bad input, a missing file or optional dependency, memory: the user's to fix
            raise
        print(f"dgemma {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug of ours or of a library: not disguised as a problem with the input
        if args.verbose:
            raise
        print(f"dgemma {args.command}: internal error: {type(e).__name__}: {e} (run with -v for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
