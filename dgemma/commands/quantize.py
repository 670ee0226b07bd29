"""`dgemma quantize CHECKPOINT --scheme S --out DIR`: a quantized copy of a checkpoint, written whole or not at all.

The weights are quantized one tensor at a time while they are read (dgemma.checkpoint.load_model), so the peak is
the quantized model plus one float tensor; the copy goes to a temporary directory beside DIR, renamed to DIR once
complete. The checkpoint's other files (tokenizer, chat template, processor config) are copied with it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..checkpoint import CONFIG, GENERATION, INDEX, parse_dtype
from ..quantize import DEFAULT_SCHEME, GROUP_HELP, SCHEMES, weight_stats


def _written_by_save(name: str) -> bool:
    return name in (CONFIG, GENERATION, INDEX) or name.endswith(".safetensors")


def run(args) -> int:
    import torch
    with torch.no_grad():  # not torch.set_grad_enabled(False): a caller's process keeps its autograd
        return _run(args)


def _run(args) -> int:
    import torch

    from .. import hub
    from ..model import DiffusionGemma
    out = Path(args.out)
    if out.exists():
        raise ValueError(f"--out {out} already exists; name a new directory (nothing is overwritten)")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: its parent directory {out.parent} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    source = hub.locate(args.checkpoint, args.revision)
    model = DiffusionGemma.from_pretrained(source, dtype=parse_dtype(args.dtype), quantize=args.scheme,
                                           group_size=args.group_size, progress=not args.quiet)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp, max_shard_bytes=args.shard_bytes)
        if isinstance(source, Path):
            for f in sorted(source.iterdir()):
                if f.is_file() and not _written_by_save(f.name):
                    shutil.copy2(f, tmp / f.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = {"out": str(out), **model.quantization, **weight_stats(model)}
    if args.json:
        print(json.dumps(stats))
    else:
        group = f", int4 groups of {stats['group_size']}" if stats["group_size"] else ""
        print(f"{out}: {stats['scheme']}{group}, {stats['weight_bytes'] / 2**30:.2f} GiB of weights, "
              f"{100 * stats['quantized_fraction']:.1f}% of the text weights quantized", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("quantize", help="write a quantized copy of a checkpoint (int8, int4, fp8 or mixed)",
                       description="Quantize a checkpoint's attention, dense-MLP and expert weights and write the "
                       "result as a new checkpoint directory (safetensors, with quantization_config in config.json; "
                       "layout in docs/quantization.md) that DiffusionGemma.from_pretrained and every dgemma command "
                       "load as they load any checkpoint.")
    p.add_argument("checkpoint", help="checkpoint directory in the reference layout, Hugging Face Hub id "
                   "(org/name[@revision]) or preset name (random weights)")
    p.add_argument("--scheme", choices=list(SCHEMES), default=DEFAULT_SCHEME,
                   help=f"int8, int4, fp8 or mixed (int4 experts, int8 attention and dense MLP) (default "
                   f"{DEFAULT_SCHEME})")
    p.add_argument("--group-size", type=int, default=None, help=GROUP_HELP)
    p.add_argument("--out", required=True, help="new directory to write (must not exist)")
    p.add_argument("--dtype", default="bfloat16",
                   help="dtype of the scales and of the weights left unquantized (default bfloat16)")
    p.add_argument("--revision", default=None, help="hub revision of CHECKPOINT (default: main)")
    p.add_argument("--shard-bytes", type=int, default=5 * 2**30, help="largest safetensors shard (default 5 GiB)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result (directory, scheme, bytes) as JSON")
    p.set_defaults(func=run)
