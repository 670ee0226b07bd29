"""The training loop: AdamW, warmup + cosine, clipping, accumulation, eval, metrics, checkpoints, export."""
from __future__ import annotations

import json
import math
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from ..config import ModelConfig, get_preset
from ..model import DiffusionGemma


def build_model(init: str, model_config: dict | None, seed: int) -> DiffusionGemma:
    path = Path(init)
    if path.is_dir() and not model_config:
        return DiffusionGemma.from_pretrained(path, dtype=torch.float32)
    base = ModelConfig.from_json_file(path / "config.json") if path.is_dir() else get_preset(init)
    config = base.replace(**(model_config or {}))
    model = DiffusionGemma(config)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def lr_at(step: int, total: int, warmup: int, lr: float, final_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def make_data(args, config, tokenizer):
    from . import data as D
    L = config.canvas_length
    if args.data.startswith("sudoku"):
        n = int(args.data.split(":")[1]) if ":" in args.data else 5000
        train = D.SudokuData(n, args.seed, L, config.vocab_size)
        ev = D.SudokuData(args.eval_examples, args.seed + 10_000, L, config.vocab_size)
        return train, ev
    if args.data == "code":
        return (D.CodeData(tokenizer, L, "train", args.canvases),
                D.CodeData(tokenizer, L, "heldout", args.canvases))
    if args.data == "stdlib":
        from ..tokenizer import stdlib_files
        train = D.PackedText(D.read_text_files(stdlib_files(held_out=False), tokenizer), L, args.canvases)
        ev = D.PackedText(D.read_text_files(stdlib_files(held_out=True), tokenizer), L, args.canvases)
        return train, ev
    if args.data.endswith(".jsonl"):
        pairs = D.read_jsonl(args.data, tokenizer)
        evp = D.read_jsonl(args.eval_data, tokenizer) if args.eval_data else None
        if evp is None:
            k = max(1, len(pairs) // 20)
            pairs, evp = pairs[k:], pairs[:k]
        return (D.SFTData(pairs, L, tokenizer.eos_id, tokenizer.pad_id),
                D.SFTData(evp, L, tokenizer.eos_id, tokenizer.pad_id))
    toks = D.read_text_files(args.data.split(","), tokenizer)
    if args.eval_data:
        evt = D.read_text_files(args.eval_data.split(","), tokenizer)
    else:
        k = len(toks) // 20
        toks, evt = toks[k:], toks[:k]
    return D.PackedText(toks, L, args.canvases), D.PackedText(evt, L, args.canvases)


@torch.no_grad()
def evaluate(step_fn, model, eval_batches, args, device):
    """Mean held-out (decoder, encoder) losses. Every rank runs the same full batches (FSDP2 needs all ranks in
    each forward); the noise is drawn on the CPU from a fixed seed, so evaluations compare across steps and devices."""
    from .objective import sample_draws
    step_fn.eval()
    g = torch.Generator().manual_seed(1234)
    dec = enc = 0.0
    for ids, P, valid in eval_batches:
        draws = sample_draws(model, ids, P, args.supervise, generator=g, clean_span=args.clean_span)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            _, parts = step_fn(ids.to(device), P, supervise=args.supervise, return_parts=True,
                               encoder_loss_weight=args.encoder_loss_weight, decoder_loss_weight=args.decoder_loss_weight,
                               draws={k: v.to(device) for k, v in draws.items()},
                               valid=None if valid is None else valid.to(device))
        dec += float(parts["decoder"]); enc += float(parts["encoder"])
    step_fn.train()
    n = len(eval_batches)
    return dec / n, enc / n


def export(model, out: Path, tokenizer_path: str | None, dtype=torch.bfloat16):
    import copy
    m = copy.deepcopy(model).to(dtype)
    m.save_pretrained(out)
    if tokenizer_path and Path(tokenizer_path).is_file():
        shutil.copy(tokenizer_path, out / "tokenizer.json")


def plot(metrics_path: Path, png: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib not installed; no loss-curve PNG", file=sys.stderr)
        return
    rows = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
    tr = [r for r in rows if r.get("kind") == "train"]
    ev = [r for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key in ("decoder", "encoder"):
        ax.plot([r["step"] for r in tr], [r[key] for r in tr], label=f"train {key}", alpha=0.6)
        if ev:
            ax.plot([r["step"] for r in ev], [r[key] for r in ev], "o-", label=f"eval {key}")
    ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(); ax.grid(alpha=0.3)
    fig.savefig(png, dpi=100); plt.close(fig)


def save_state(model, opt, gen, rng, step: int, args, tokenizer_path, d) -> None:
    """Checkpoint (reference layout, or the LoRA adapter) + optimizer, RNG states and step, for --resume."""
    from safetensors.torch import save_file
    from . import distributed
    out = Path(args.out)
    ck = out / "checkpoint"
    weights = distributed.full_state_dict(model, d)  # collective under FSDP2: every rank calls
    optim = distributed.optimizer_state(model, opt, d)
    if not d.main:
        return
    ck.mkdir(parents=True, exist_ok=True)
    if args.lora_rank:
        from . import lora
        lora.save(model, out / "adapter")
    else:
        host = model
        if d.mode == "fsdp":  # a plain CPU copy of the unsharded weights to write from
            host = DiffusionGemma(model.config)
            host.load_state_dict(weights)
        host.save_pretrained(ck)
        if tokenizer_path:
            shutil.copy(tokenizer_path, ck / "tokenizer.json")
        if args.export:
            export(host, Path(args.export), tokenizer_path)
    torch.save(optim, ck / "optimizer.pt")
    save_file({"generator": gen.get_state()}, str(ck / "rng.safetensors"))
    (ck / "trainer_state.json").write_text(json.dumps({"step": step, "python_rng": rng.getstate()}))


def train(args) -> dict:
    from . import distributed
    from .objective import encoder_targets, sample_draws
    d = distributed.setup(args.dist, args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = json.loads(args.model_config) if args.model_config else None
    model = build_model(args.init, model_config, args.seed)
    device = d.device
    model.train()
    tokenizer = None
    if args.tokenizer:
        from ..tokenizer import Tokenizer
        tokenizer = Tokenizer.from_file(args.tokenizer)
    train_data, eval_data = make_data(args, model.config, tokenizer)
    out = Path(args.out)
    log = print if d.main else (lambda *a, **k: None)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(vars(args), indent=2, default=str))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params/1e6:.2f}M parameters" + (f"; {d.mode} over {d.world} processes" if d.world > 1 else ""),
        flush=True)
    for layer in model.layers:  # router frozen (DESIGN.md section 3)
        for p in layer.router.parameters():
            p.requires_grad_(False)
    if args.lora_rank:
        from . import lora
        lora.attach(model, args.lora_rank, args.lora_alpha, args.lora_targets.split(","), seed=args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    ck = out / "checkpoint"
    start = 0
    if args.resume:
        state_file = ck / "trainer_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"--resume: {state_file} does not exist")
        from safetensors.torch import load_file
        state = json.loads(state_file.read_text())
        if not args.lora_rank:
            loaded = DiffusionGemma.from_pretrained(ck, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
        else:
            from . import lora
            lora.load_weights(model, out / "adapter")
        rs = state["python_rng"]
        rng.setstate((rs[0], tuple(rs[1]), rs[2]))
        gen.set_state(load_file(str(ck / "rng.safetensors"))["generator"])
        start = state["step"]
    model.to(device)
    step_fn = distributed.wrap(model, d)  # after loading: FSDP2 shards the parameters in place
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.95, 0.99))
    if args.resume:
        distributed.load_optimizer_state(model, opt, torch.load(ck / "optimizer.pt", weights_only=True), d)
    global_batch = args.batch_size * d.world
    mine = d.rows(global_batch)  # this rank's rows of every global batch
    erng = random.Random(99)
    eval_batches = [eval_data.batch(global_batch, erng) for _ in range(args.eval_batches)]
    metrics = (out / "metrics.jsonl").open("a") if d.main else None
    from tqdm import tqdm
    bar = tqdm(range(start, args.steps), dynamic_ncols=True, mininterval=5, disable=not d.main)
    t0 = time.time(); last_save = t0; tokens = 0
    row = {}
    # SIGTERM or Ctrl-C: the step in progress ends, a checkpoint is written and the run stops (resume with --resume)
    interrupted: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # (handlers can only be set there)
        handlers = {sig: signal.signal(sig, lambda signum, frame: interrupted.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for step in bar:
            lr = lr_at(step, args.steps, args.warmup, args.lr, args.final_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            dsum = esum = 0.0
            for _ in range(args.accum):
                ids, P, valid = train_data.batch(global_batch, rng)  # every rank: the same global batch and noise
                draws = sample_draws(model, ids, P, args.supervise, generator=gen,
                                     clean_span=args.clean_span)  # on the CPU: device-independent
                n_dec = float(draws["noised"].numel())
                n_enc = float(encoder_targets(ids, valid))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    loss, parts = step_fn(ids[mine].to(device), P, supervise=args.supervise,
                                          encoder_loss_weight=args.encoder_loss_weight, checkpoint=args.grad_checkpoint,
                                          norm_tokens=n_dec, enc_norm_tokens=n_enc, return_parts=True,
                                          draws={k: v[mine].to(device) for k, v in draws.items()},
                                          valid=None if valid is None else valid[mine].to(device),
                                          decoder_loss_weight=args.decoder_loss_weight)
                (loss * d.world / args.accum).backward()  # data-parallel averaging over ranks undone: a global sum
                dsum += float(d.sum(parts["decoder"])); esum += float(d.sum(parts["encoder"]))
                tokens += ids.numel()
            gn = torch.nn.utils.clip_grad_norm_(params, args.clip)
            gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
            opt.step()
            el = time.time() - t0
            row = {"kind": "train", "step": step + 1, "decoder": dsum / args.accum, "encoder": esum / args.accum,
                   "lr": lr, "grad_norm": float(gn), "tokens": tokens, "elapsed": el}
            if metrics:
                metrics.write(json.dumps(row) + "\n")
            bar.set_postfix(dec=f"{row['decoder']:.3f}", enc=f"{row['encoder']:.3f}", tok_s=f"{tokens/el:.0f}")
            if (step + 1) % args.log_every == 0:
                log(json.dumps(row), flush=True)
                if metrics:
                    metrics.flush()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                dl, el_ = evaluate(step_fn, model, eval_batches, args, device)
                er = {"kind": "eval", "step": step + 1, "decoder": dl, "encoder": el_, "elapsed": el}
                if metrics:
                    metrics.write(json.dumps(er) + "\n"); metrics.flush()
                log(json.dumps(er), flush=True)
            # the time-based trigger and a signal are decided on rank 0 and shared, so every rank joins the save
            flags = torch.tensor([float(time.time() - last_save > args.save_every_min * 60), float(bool(interrupted))])
            if d.world > 1:
                torch.distributed.broadcast(flags, 0)
            stopping = bool(args.stop_after) and step + 1 == args.stop_after or bool(flags[1])
            due = stopping or (args.save_every_steps and (step + 1) % args.save_every_steps == 0)
            if due or bool(flags[0]) or step + 1 == args.steps:
                save_state(model, opt, gen, rng, step + 1, args, args.tokenizer, d)
                last_save = time.time()
            if stopping:
                if interrupted:
                    log(f"stopped by {signal.Signals(interrupted[0]).name} after step {step + 1}: checkpoint saved, continue with "
                        "--resume", flush=True)
                break
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if metrics:
        metrics.close()
        plot(out / "metrics.jsonl", out / "loss.png")
    d.close()
    return row
