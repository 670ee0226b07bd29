"""`dgemma train`: flags (or a TOML config) for dgemma.training.trainer.train."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--config", help="TOML file of flag values (keys are flag names with underscores); flags given override it")
    a("--init", default="tiny", help="preset name or checkpoint directory to start from")
    a("--model-config", default=None, help="JSON object of ModelConfig fields overriding --init's config (fresh weights)")
    a("--out", default="runs/train", help="output directory (metrics, checkpoints)")
    a("--export", default=None, help="also write bf16 weights (+ tokenizer.json) here at every checkpoint")
    a("--data", default=None, help="training data: 'sudoku[:N]', 'code' (the generated function corpus), 'stdlib', a .jsonl SFT file, or text files (comma-separated)")
    a("--eval-data", default=None, help="held-out data (same kinds as --data); default: 5%% split off --data")
    a("--tokenizer", default=None, help="tokenizer.json for text data")
    a("--steps", type=int, default=1000, help="optimizer steps")
    a("--batch-size", type=int, default=16, help="examples per micro-batch")
    a("--accum", type=int, default=1, help="gradient accumulation micro-batches per step")
    a("--canvases", type=int, default=2, help="canvases per packed sequence (text pretraining); the most a response spans (--data code)")
    a("--lr", type=float, default=1.5e-4, help="peak learning rate")
    a("--final-lr-ratio", type=float, default=0.1, help="cosine decays to this fraction of --lr")
    a("--warmup", type=int, default=100, help="warmup steps")
    a("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    a("--clip", type=float, default=1.0, help="gradient clipping norm")
    a("--supervise", choices=("one", "all"), default="one", help="supervise one random canvas per example or all")
    a("--clean-span", type=float, default=0.0,
      help="probability that a supervised canvas keeps one random span clean, as an infill's suffix is (default 0)")
    a("--encoder-loss-weight", type=float, default=1.0, help="weight of the encoder's next-token loss")
    a("--decoder-loss-weight", type=float, default=1.0,
      help="weight of the diffusion loss; 0 trains the autoregressive baseline (encoder loss only, no decoder pass)")
    a("--lora-rank", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    a("--lora-alpha", type=float, default=32.0, help="LoRA alpha")
    a("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
      help="comma-separated LoRA target projections")
    a("--bf16", action="store_true", help="bf16 autocast")
    a("--grad-checkpoint", action="store_true", help="gradient checkpointing per layer")
    a("--dist", choices=("ddp", "fsdp"), default="ddp",
      help="under torchrun: DDP (a full copy per process) or FSDP2 (weights sharded over processes)")
    a("--device", default=None, help="torch device: cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    a("--threads", type=int, default=0, help="torch threads (0: default)")
    a("--seed", type=int, default=0, help="random seed")
    a("--eval-every", type=int, default=200, help="evaluate every N steps")
    a("--eval-batches", type=int, default=4, help="held-out batches per evaluation")
    a("--eval-examples", type=int, default=256, help="held-out sudoku puzzles")
    a("--log-every", type=int, default=20, help="print a metrics line every N steps")
    a("--save-every-steps", type=int, default=0, help="also checkpoint every N steps (0: off)")
    a("--resume", action="store_true", help="resume from OUT/checkpoint (weights, optimizer, RNG states, step)")
    a("--stop-after", type=int, default=0, help="checkpoint and stop after this step (the schedule still spans --steps)")
    a("--save-every-min", type=float, default=5.0, help="checkpoint every N minutes")


def parse(argv=None):
    p = argparse.ArgumentParser(prog="dgemma train")
    add_arguments(p)
    return finish(p, p.parse_args(argv), argv)


def finish(p, args, argv=None):
    if args.config:
        import tomllib
        with open(args.config, "rb") as f:
            cfg = tomllib.load(f)
        defaults = vars(p.parse_args([]))
        for k, v in cfg.items():
            k = k.replace("-", "_")
            if k not in defaults:
                p.error(f"--config {args.config}: unknown key {k!r}")
            if getattr(args, k) == defaults[k]:
                setattr(args, k, v)
    if not args.data:
        p.error("--data is required")
    if args.lora_rank < 0:
        p.error("--lora-rank must be >= 0")
    if args.dist == "fsdp" and args.lora_rank:
        p.error("--dist fsdp with --lora-rank is not supported; use --dist ddp (the adapters are small)")
    if args.decoder_loss_weight == 0 and args.encoder_loss_weight == 0:
        p.error("--encoder-loss-weight and --decoder-loss-weight cannot both be 0")
    if not 0 <= args.clean_span <= 1:
        p.error("--clean-span must be between 0 and 1")
    for name in ("steps", "batch_size", "accum", "canvases"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train or fine-tune a model")
    add_arguments(p)
    p.set_defaults(func=lambda args: _run(p, args))


def _run(p, args):
    from .data import DataError
    from .trainer import train
    args = finish(p, args)
    try:
        train(args)
    except (DataError, FileNotFoundError) as e:
        print(f"dgemma train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from .trainer import train
    train(parse(sys.argv[1:]))
