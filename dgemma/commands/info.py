"""`dgemma info`: what a checkpoint or preset is, and what it costs, without allocating its weights."""

from __future__ import annotations

import json
from pathlib import Path

from ..cache import KVCache
from ..checkpoint import CONFIG, parse_dtype, read_quantization
from ..config import FULL, ModelConfig, get_preset
from ..quantize import add_quantize_args

BYTES_PER_PARAM = {"bf16": 2.0, "fp8": 1.0, "int4": 0.5}


def load_config(path_or_preset: str, revision: str | None = None) -> tuple[ModelConfig, dict | None]:
    """The config, and for a hub id what its cache holds: (config, {"snapshot", "weight_bytes_on_disk",
    "missing_weight_files"} or None). A hub id needs only config.json, downloaded if not cached."""
    from .. import hub
    path = Path(path_or_preset)
    if path.suffix == ".json" and path.is_file():
        return ModelConfig.from_json_file(path), None
    if not path.is_dir() and hub.is_hub_id(path_or_preset):
        snap = hub.locate(path_or_preset, revision, weights=False)
        on_disk, missing = hub.cached_weights(snap)
        return ModelConfig.from_json_file(snap / CONFIG), {
            "snapshot": str(snap), "weight_bytes_on_disk": on_disk, "missing_weight_files": missing,
            "weights_cached": on_disk > 0 and not missing}
    if path.is_dir():
        return ModelConfig.from_json_file(path / CONFIG), None
    return get_preset(path_or_preset), None


def summary(config: ModelConfig) -> dict:
    total, active = config.num_parameters(), config.num_parameters(active=True)
    return {
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size, "layers": config.num_layers,
        "global_layers": [i for i, t in enumerate(config.layer_types) if t == FULL],
        "heads": config.num_heads, "kv_heads_sliding": config.num_kv_heads, "head_dim_sliding": config.head_dim,
        "kv_heads_global": config.num_global_kv_heads, "head_dim_global": config.global_head_dim,
        "sliding_window": config.sliding_window, "experts": config.num_experts, "top_k": config.top_k_experts,
        "expert_width": config.moe_intermediate_size, "dense_width": config.intermediate_size,
        "canvas_length": config.canvas_length, "parameters": total, "active_parameters": active,
        "weight_bytes": {k: int(total * b) for k, b in BYTES_PER_PARAM.items()},
    }


def vision_summary(config: ModelConfig, model: str) -> dict:
    """The vision tower's shape and parameters (tower and embedder); none for a text-only checkpoint, whose
    config.json may still describe a tower it does not hold."""
    from ..checkpoint import has_vision_weights
    from ..vision import VisionConfig
    if config.vision_config is None or (Path(model).is_dir() and not has_vision_weights(Path(model))):
        return {"vision_parameters": 0}
    v = VisionConfig.from_hf_dict(config.vision_config)
    n = v.num_parameters(config.hidden_size)
    return {"vision_parameters": n, "vision_weight_bytes": {"bf16": 2 * n},
            "vision": {"layers": v.num_layers, "hidden_size": v.hidden_size, "patch_size": v.patch_size,
                       "pooling_kernel_size": v.pooling_kernel_size}}


def quantized_weights(config: ModelConfig, scheme: str | None, group_size: int | None = None,
                      stored: dict | None = None, vision: bool = True) -> dict:
    """{"scheme", "group_size", "weight_bytes", "quantized_fraction"} of the model quantized from bf16 with
    `scheme`, or as a quantized checkpoint `stored` it, counted on the meta device (nothing is allocated);
    `vision`: whether the weights include the config's vision tower."""
    import torch

    from ..checkpoint import build_model
    from ..model import DiffusionGemma
    from ..quantize import prepare, resolve, weight_stats
    model = build_model(DiffusionGemma, config, torch.bfloat16)
    if not vision:
        model.vision = None
    record = stored or resolve(model, scheme, group_size)
    return {"scheme": record["scheme"], "group_size": record["group_size"],
            **weight_stats(prepare(model, record))}


def run(args) -> int:
    config, cached = load_config(args.model, args.revision)
    info = {**summary(config), **vision_summary(config, args.model)}
    if cached is not None:
        info["hub_cache"] = cached
    if args.context is not None:
        if args.context < 1 or args.batch < 1:
            raise ValueError(f"--context and --batch must be >= 1, got {args.context} and {args.batch}")
        if args.context > config.max_position_embeddings:
            raise ValueError(f"--context {args.context} exceeds the model's maximum context of "
                             f"{config.max_position_embeddings} tokens")
        info["kv_cache_bytes"] = KVCache.nbytes(config, args.batch, args.context, parse_dtype(args.dtype))
        info["kv_cache"] = {"context": args.context, "batch": args.batch, "dtype": args.dtype}
    stored = read_quantization(Path(args.model)) if (Path(args.model) / CONFIG).is_file() else None
    if stored is not None and args.quantize is not None:
        raise ValueError(f"{args.model}: already quantized ({stored['scheme']}); --quantize applies to float weights")
    if stored is not None or args.quantize is not None:
        info["quantized"] = quantized_weights(config, args.quantize, args.group_size, stored,
                                              vision=info["vision_parameters"] > 0)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    gib = {k: v / 2**30 for k, v in info["weight_bytes"].items()}
    print(f"model            {args.model}")
    print(f"shape            {info['layers']} layers (global: {info['global_layers']}), hidden {info['hidden_size']}, "
          f"vocab {info['vocab_size']:,}, canvas {info['canvas_length']}")
    print(f"attention        {info['heads']} query heads; sliding: {info['kv_heads_sliding']} kv x "
          f"{info['head_dim_sliding']}, window {info['sliding_window']}; global: {info['kv_heads_global']} kv x "
          f"{info['head_dim_global']} (k = v)")
    print(f"feed-forward     dense {info['dense_width']} + MoE top-{info['top_k']} of {info['experts']} experts "
          f"x {info['expert_width']}")
    print(f"parameters       {info['parameters']:,} total, {info['active_parameters']:,} active per token "
          f"({info['active_parameters'] / 1e9:.2f}e9)")
    print("weight memory    " + ", ".join(f"{k} {v:.2f} GiB" for k, v in gib.items()))
    if info["vision_parameters"]:
        v = info["vision"]
        print(f"vision tower     {v['layers']} layers x {v['hidden_size']}, {v['patch_size']}-pixel patches pooled "
              f"{v['pooling_kernel_size']}x{v['pooling_kernel_size']}: {info['vision_parameters']:,} parameters, "
              f"{info['vision_weight_bytes']['bf16'] / 2**30:.2f} GiB in bf16 (not in the figures above)")
    else:
        print("vision tower     none (text only)")
    if cached is not None:
        state = ("all in the cache" if cached["weights_cached"] else
                 f"{len(cached['missing_weight_files'])} file(s) not in the cache, e.g. "
                 f"{cached['missing_weight_files'][0]}" if cached["missing_weight_files"] else "not in the cache")
        print(f"hub cache        {cached['snapshot']}: weights {state}, "
              f"{cached['weight_bytes_on_disk'] / 2**30:.2f} GiB on disk")
    if "quantized" in info:
        q = info["quantized"]
        group = f", int4 groups of {q['group_size']}" if q["group_size"] else ""
        print(f"quantized        {q['scheme']}{group}: {q['weight_bytes'] / 2**30:.2f} GiB with the rest in bf16 "
              f"(vision tower included), {100 * q['quantized_fraction']:.1f}% of the text weights quantized")
    if "kv_cache_bytes" in info:
        n = info["kv_cache_bytes"]
        print(f"KV cache         {n / 2**30:.2f} GiB for {args.context:,} tokens x batch {args.batch} in {args.dtype} "
              f"(global layers keep every token, sliding layers a ring of window + canvas slots)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="summarise a checkpoint or preset: shapes, parameter counts, weight memory",
                       description="Print a model's configuration, total and active parameter counts, and weight "
                       "memory in bf16 / fp8 / int4, computed from config.json alone (no weights are loaded).")
    p.add_argument("model", help="checkpoint directory, config.json path, preset name (e.g. diffusiongemma-26b-a4b, "
                   "tiny, small) or Hugging Face Hub id (org/name[@revision]: only config.json is fetched, and the "
                   "summary says whether the weights are in the hub cache)")
    p.add_argument("--revision", default=None, help="hub revision of MODEL: a branch, tag or commit (default: main)")
    p.add_argument("--context", type=int, default=None,
                   help="also print the KV cache's bytes (JSON: kv_cache_bytes) for this many tokens per sequence")
    p.add_argument("--batch", type=int, default=1, help="sequences held by that KV cache (default 1)")
    p.add_argument("--dtype", default="bf16", help="dtype of that KV cache: bf16, fp16, fp32 or fp64 (default bf16)")
    add_quantize_args(p, "also print the weight bytes and the quantized share of the text weights (JSON: "
                      "quantized.weight_bytes, quantized.quantized_fraction) with this scheme")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)
