"""Reading and writing checkpoints in the reference's on-disk format (safetensors only, nothing unpickled).

The reference stores the shared weight stack under `model.decoder.*`; the encoder contributes only its own
per-layer `layer_scalar`; `lm_head` and the encoder's copies are tied to the decoder's. Weights are streamed
one tensor at a time into a model built on the meta device, converted straight to the target dtype and device,
so loading never holds more than the weights plus one tensor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import GENERATION_DEFAULTS, PRESETS, SAMPLER_KEY, ConfigError, ModelConfig, get_preset
from .quantize import FORMATS, SCHEMES, Quantized, check_fp8_device, prepare, resolve
from .sampling import SAMPLERS


CONFIG, WEIGHTS, INDEX, GENERATION = "config.json", "model.safetensors", "model.safetensors.index.json", \
    "generation_config.json"
VISION_PREFIXES = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")
_ENCODER_SCALAR = re.compile(r"model\.encoder\.language_model\.layers\.(\d+)\.layer_scalar$")
_TIED_COPIES = re.compile(r"(lm_head\.weight|model\.encoder\.language_model\..*)$")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "fp64": torch.float64,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}

class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and, where known, the key."""


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def to_reference_key(ours: str) -> str:
    if ours.startswith("vision."):
        return "model.encoder." + ours[len("vision."):]
    m = re.fullmatch(r"layers\.(\d+)\.encoder_layer_scalar", ours)
    if m:
        return f"model.encoder.language_model.layers.{m.group(1)}.layer_scalar"
    return "model.decoder." + ours.replace("self_conditioning.body.", "self_conditioning.")


def from_reference_key(ref: str) -> str | None:
    """Our state-dict name for a reference key; None for tied copies we take from the decoder."""
    if ref.startswith(VISION_PREFIXES):
        return "vision." + ref[len("model.encoder."):]
    m = _ENCODER_SCALAR.match(ref)
    if m:
        return f"layers.{m.group(1)}.encoder_layer_scalar"
    if ref.startswith("model.decoder."):
        key = ref[len("model.decoder."):]
        return re.sub(r"^self_conditioning\.(gate_proj|up_proj|down_proj)", r"self_conditioning.body.\1", key)
    if _TIED_COPIES.match(ref):
        return None
    raise KeyError(ref)


def build_model(model_cls, config: ModelConfig, dtype: torch.dtype):
    """A `model_cls(config)` whose tensors are not yet allocated (meta device), to be filled by the loader."""
    with torch.device("meta"):
        model = model_cls(config)
    return model.to(dtype=dtype)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index ({e})") from None
        files = sorted({directory / name for name in weight_map.values()})
        for f in files:
            if not f.exists():
                raise CheckpointError(f"{index}: names shard {f.name}, which does not exist")
        return files
    single = directory / WEIGHTS
    if not single.exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS} or {INDEX} found")
    return [single]


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError, Exception) as e:  # header unreadable: truncated or not safetensors
        raise CheckpointError(f"{file}: cannot read safetensors header ({e})") from None


def _keys(file: Path) -> list[str]:
    with _open(file) as handle:
        return list(handle.keys())


def has_vision_weights(directory: Path, files: list[Path] | None = None) -> bool:
    """Whether a checkpoint directory (its weight `files`, when already listed) holds a vision tower; only the
    safetensors headers are read."""
    return any(key.startswith(VISION_PREFIXES) for file in files or _weight_files(directory) for key in _keys(file))


def _assign(model, name: str, tensor: torch.Tensor, quantizing: bool = False) -> None:
    """Put a tensor in its place; with `quantizing`, a float weight that a quantized module holds is quantized
    into it (and the float tensor dropped)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if quantizing and isinstance(module, Quantized) and attr in module.formats:
        module.store(attr, tensor)
    elif attr in module._parameters:
        module._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    else:
        module._buffers[attr] = tensor


def read_quantization(path: Path) -> dict | None:
    """The `quantization_config` of a dgemma-quantized checkpoint's config.json (None for float weights)."""
    found = json.loads((path / CONFIG).read_text()).get("quantization_config")
    if found is None:
        return None
    where = f"{path / CONFIG}: quantization_config"
    if not isinstance(found, dict) or found.get("quant_method") != "dgemma":
        method = found.get("quant_method") if isinstance(found, dict) else found
        raise CheckpointError(f"{where} has quant_method {method!r}; dgemma reads its own quantized layout only "
                              "('dgemma', written by dgemma quantize)")
    formats, group = found.get("formats"), found.get("group_size")
    if found.get("scheme") not in SCHEMES or not isinstance(formats, dict) or set(formats) != {"linear", "experts"} \
            or not set(formats.values()) <= set(FORMATS):
        raise CheckpointError(f"{where} is malformed (scheme {found.get('scheme')!r}, formats {formats!r})")
    if "int4" in formats.values() and not (isinstance(group, int) and group > 0 and group % 2 == 0):
        raise CheckpointError(f"{where}: int4 weights need an even positive group_size, not {group!r}")
    return {"scheme": found["scheme"], "formats": dict(formats), "group_size": group}


def _check_stored(file: Path, key: str, module, attr: str, tensor: torch.Tensor, want: torch.Tensor) -> None:
    """A quantized checkpoint's codes keep their exact dtype; its scales must be positive and finite and its
    zero points within 0..15."""
    if attr in module.formats:
        if tensor.dtype != want.dtype:
            raise CheckpointError(f"{file}: {key} is stored as {str(tensor.dtype).removeprefix('torch.')}, but "
                                  f"{module.formats[attr]} weights are {str(want.dtype).removeprefix('torch.')}")
    elif attr.endswith("_scale"):
        if not tensor.is_floating_point() or not bool((torch.isfinite(tensor) & (tensor > 0)).all()):
            raise CheckpointError(f"{file}: {key} holds a scale that is not a positive finite number (corrupt)")
    elif attr.endswith("_zero") and (tensor.dtype != torch.uint8 or (tensor.numel() and int(tensor.max()) > 15)):
        raise CheckpointError(f"{file}: {key} must hold uint8 zero points in 0..15 (corrupt)")


def load_model(model_cls, path_or_preset, dtype=torch.float32, device="cpu", seed: int = 0,
               revision: str | None = None, quantize: str | None = None, group_size: int | None = None,
               progress: bool = False):
    """A `model_cls` (DiffusionGemma) from a checkpoint directory in the reference layout (or dgemma's quantized
    one), a preset name (random weights from `seed`), or a Hugging Face Hub id (`org/name[@revision]`, through
    the hub's cache). With `quantize`, each weight is quantized as it is read or drawn, so loading never holds
    more than the quantized model plus one float tensor."""
    from . import hub
    dtype, device = parse_dtype(dtype), torch.device(device)
    path = Path(path_or_preset)
    if not path.is_dir() and hub.is_hub_id(str(path_or_preset)):
        try:
            path = hub.locate(str(path_or_preset), revision)
        except hub.HubError as e:
            raise CheckpointError(str(e)) from None
    if not path.is_dir():
        if str(path_or_preset) in PRESETS:
            # allocated once, in the target dtype and on the target device: the 26B preset in bf16 needs 47 GiB,
            # never the 94 GiB of a float32 copy first; on the meta device nothing is allocated at all
            model = build_model(model_cls, get_preset(str(path_or_preset)), dtype)
            if quantize is not None:
                prepare(model, resolve(model, quantize, group_size, device))
            model.to_empty(device=device)
            if device.type != "meta":
                model.init_weights(torch.Generator(device=device).manual_seed(seed),
                                   assign=lambda name, t: _assign(model, name, t, quantizing=True))
            return model
        if path.exists():
            raise CheckpointError(f"{path}: not a directory (expected a checkpoint directory or a preset name)")
        raise CheckpointError(f"{path}: not a local checkpoint directory (no such directory), a preset "
                              f"({', '.join(sorted(PRESETS))}) or a Hugging Face Hub id (org/name[@revision])")
    try:
        config = ModelConfig.from_json_file(path / CONFIG)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    stored = read_quantization(path)
    if stored is not None and quantize is not None:
        raise CheckpointError(f"{path}: already quantized ({stored['scheme']}); load it as it is, or quantize the "
                              "original checkpoint")
    model = build_model(model_cls, config, dtype)
    files = _weight_files(path)
    if not has_vision_weights(path, files):
        model.vision = None  # a text-only checkpoint (its config.json may still describe a tower)
    float_shapes = dict(model.state_dict())
    record = stored or (resolve(model, quantize, group_size, device) if quantize is not None else None)
    if record is not None:
        if stored is not None and "fp8" in stored["formats"].values():
            check_fp8_device(device)
        prepare(model, record)
    expected = dict(model.state_dict()) if stored is not None else float_shapes
    loaded = set()
    from tqdm import tqdm
    bar = tqdm(total=sum(len(_keys(f)) for f in files) if progress else 0, disable=not progress, unit="tensor",
               desc="quantizing" if quantize else "loading", dynamic_ncols=True)
    for file in files:
        with _open(file) as handle:
            for key in handle.keys():
                bar.update()
                try:
                    ours = from_reference_key(key)
                except KeyError:
                    raise CheckpointError(f"{file}: unexpected key {key}") from None
                if ours is None:
                    continue
                if ours not in expected:
                    raise CheckpointError(f"{file}: unexpected key {key} (not in a model with this config)")
                want = tuple(expected[ours].shape)
                try:
                    shape = tuple(handle.get_slice(key).get_shape())
                    if shape != want:
                        raise CheckpointError(f"{file}: {key} has shape {shape} but config.json implies {want}")
                    tensor = handle.get_tensor(key)
                except SafetensorError as e:
                    raise CheckpointError(f"{file}: cannot read {key} (truncated or corrupt: {e})") from None
                module_name, _, attr = ours.rpartition(".")
                module = model.get_submodule(module_name)
                if stored is not None and isinstance(module, Quantized):
                    _check_stored(file, key, module, attr, tensor, expected[ours])
                    scale = attr.endswith("_scale")  # scales follow the model's dtype; codes and zeros keep theirs
                    _assign(model, ours, tensor.to(device=device, dtype=dtype if scale else None))
                else:
                    if tensor.is_floating_point() != expected[ours].is_floating_point():
                        raise CheckpointError(f"{file}: {key} is stored as "
                                              f"{str(tensor.dtype).removeprefix('torch.')}, not a floating-point "
                                              "dtype like the model's weights")
                    _assign(model, ours, tensor.to(device=device, dtype=dtype), quantizing=record is not None)
                loaded.add(ours)
    bar.close()
    missing = sorted(set(expected) - loaded)
    if missing:
        raise CheckpointError(f"{path}: missing key {to_reference_key(missing[0])}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    model.reset_buffers()
    for name, buf in model.named_buffers():  # non-persistent buffers were rebuilt above; make sure all are real
        if buf.is_meta:
            raise CheckpointError(f"{path}: internal error, buffer {name} not materialised")
    model.generation_defaults = read_generation_config(path)
    model.checkpoint_dir = path
    return model


def read_generation_config(path: Path) -> dict:
    defaults = dict(GENERATION_DEFAULTS)
    file = path / GENERATION
    if file.exists():
        try:
            found = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{file}: not valid JSON ({e.msg})") from None
        if not isinstance(found, dict):
            raise CheckpointError(f"{file}: expected a JSON object")
        defaults.update({k: v for k, v in found.items() if v is not None and (k in defaults or k == SAMPLER_KEY)})
        if SAMPLER_KEY in defaults and defaults[SAMPLER_KEY] not in SAMPLERS:
            raise CheckpointError(f"{file}: {SAMPLER_KEY} {defaults[SAMPLER_KEY]!r} is not one of "
                                  f"{', '.join(SAMPLERS)}")
    return defaults


def save_model(model, path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write config.json, generation_config.json and (sharded if large) model.safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {to_reference_key(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    shards, current, size = [], {}, 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = t.cpu()
        size += nbytes
    shards.append(current)
    for stale in [path / WEIGHTS, path / INDEX, *path.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(path / WEIGHTS), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (path / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config = model.config.to_hf_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    if getattr(model, "quantization", None):
        config["quantization_config"] = {"quant_method": "dgemma", "format_version": 1, **model.quantization}
    config["transformers_version"] = "5.23.0"
    (path / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    generation = dict(model.generation_defaults)
    generation["transformers_version"] = "5.23.0"
    (path / GENERATION).write_text(json.dumps(generation, indent=2) + "\n")
