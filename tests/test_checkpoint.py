"""Checkpoint IO: reference round trip, sharding, dtypes, and clear failures on bad files."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from dgemma import DiffusionGemma, get_preset
from dgemma.checkpoint import CheckpointError

from .reference import decoder_logits, encoder_logits, load_reference, new_cache


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ours")
    model = DiffusionGemma.from_pretrained("tiny", seed=1)
    with torch.no_grad():  # move scalars off 1 so a swapped encoder/decoder scalar would show
        for i, layer in enumerate(model.layers):
            layer.layer_scalar.fill_(1.0 + 0.1 * i)
            layer.encoder_layer_scalar.fill_(0.8 - 0.05 * i)
    model.save_pretrained(path)
    return model, path


def test_transformers_loads_our_checkpoint_with_same_logits(saved):
    model, path = saved
    from transformers import DiffusionGemmaForBlockDiffusion
    _, info = DiffusionGemmaForBlockDiffusion.from_pretrained(path, output_loading_info=True)
    text_missing = [k for k in info["missing_keys"] if "vision" not in k]
    assert text_missing == [] and not info["unexpected_keys"]
    ref = load_reference(path, torch.float64)
    ours = DiffusionGemma.from_pretrained(path, dtype=torch.float64)
    prompt, canvas = torch.randint(3, 256, (1, 20)), torch.randint(0, 256, (1, 32))
    with torch.no_grad():
        rc, cache = new_cache(ref), ours.new_cache(1, 52)
        assert (encoder_logits(ref, prompt, rc) - ours.logits(ours.encode(prompt, cache))).abs().max() <= 1e-9
        assert (decoder_logits(ref, canvas, rc) - ours.denoise(canvas, cache)).abs().max() <= 1e-9


def test_sharded_and_bf16_checkpoints_load(saved, tmp_path):
    model, _ = saved
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = DiffusionGemma.from_pretrained(tmp_path / "sharded")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    bf16 = DiffusionGemma.from_pretrained(tmp_path / "sharded", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.inv_freq_sliding_attention.dtype == torch.float32
    bf16.save_pretrained(tmp_path / "bf16")
    stored = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in stored.values())
    back = DiffusionGemma.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert torch.equal(back.embed_tokens.weight, model.embed_tokens.weight.bfloat16().float())


def test_a_misshapen_or_partial_vision_tower_is_named(saved, tmp_path):
    """A checkpoint without tower weights loads text-only (see test_vision for one with a tower); one with part of
    a tower, or a tower of another shape than its config.json, fails naming the key."""
    _, path = saved
    assert DiffusionGemma.from_pretrained(path).vision is None
    shutil.copytree(path, tmp_path / "v")
    tensors = load_file(str(tmp_path / "v" / "model.safetensors"))
    tensors["model.encoder.embed_vision.embedding_projection.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(tmp_path / "v" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"embed_vision.embedding_projection.weight has shape \(2, 2\) but "
                                              r"config.json implies \(64, 16\)"):
        DiffusionGemma.from_pretrained(tmp_path / "v")
    tensors["model.encoder.embed_vision.embedding_projection.weight"] = torch.zeros(64, 16)
    save_file(tensors, str(tmp_path / "v" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing key model.encoder.vision_tower\."):
        DiffusionGemma.from_pretrained(tmp_path / "v")


def corrupt(path, tmp_path, edit):
    target = tmp_path / "bad"
    shutil.copytree(path, target)
    edit(target)
    return target


def test_bad_checkpoints_fail_naming_file_and_key(saved, tmp_path):
    _, path = saved

    def truncate(d):
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])

    def drop_key(d):
        t = load_file(str(d / "model.safetensors"))
        del t["model.decoder.layers.1.router.per_expert_scale"]
        save_file(t, str(d / "model.safetensors"))

    def wrong_shape(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg["text_config"]["hidden_size"] = 80
        (d / "config.json").write_text(json.dumps(cfg))

    def wrong_type(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_type"] = "gemma4"
        (d / "config.json").write_text(json.dumps(cfg))

    cases = [
        (truncate, r"model\.safetensors: cannot read"),
        (drop_key, r"missing key model\.decoder\.layers\.1\.router\.per_expert_scale"),
        (wrong_shape, r"model\.safetensors: model\.decoder\..* has shape .* but config\.json implies"),
        (wrong_type, r"config\.json: model_type is 'gemma4', expected 'diffusion_gemma'"),
        (lambda d: (d / "model.safetensors").unlink(), r"no model\.safetensors"),
        (lambda d: (d / "config.json").write_text("{not json"), r"config\.json: not valid JSON"),
    ]
    for i, (edit, message) in enumerate(cases):
        target = corrupt(path, tmp_path / str(i), edit)
        with pytest.raises(CheckpointError, match=message):
            DiffusionGemma.from_pretrained(target)
    with pytest.raises(CheckpointError, match="not a local checkpoint directory .* a preset"):
        DiffusionGemma.from_pretrained(tmp_path / "does-not-exist")


def test_a_checkpoint_names_its_sampler_and_it_round_trips(saved, tmp_path):
    """generation_config.json's dgemma_sampler picks the default acceptance rule (an argument still wins), is
    written back by save_pretrained, and an unknown name is an error naming the file."""
    from dgemma.engine import GenerationConfig
    from dgemma.sampling import EntropyBoundSampler, TopKScheduleSampler
    _, path = saved
    d = tmp_path / "topk"
    shutil.copytree(path, d)
    gc = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gc, "dgemma_sampler": "topk"}))
    model = DiffusionGemma.from_pretrained(d)
    assert isinstance(GenerationConfig.from_checkpoint(model.generation_defaults).sampler, TopKScheduleSampler)
    assert isinstance(GenerationConfig.from_checkpoint(model.generation_defaults, "entropy").sampler,
                      EntropyBoundSampler)
    assert isinstance(GenerationConfig.from_checkpoint(DiffusionGemma.from_pretrained(path).generation_defaults)
                      .sampler, EntropyBoundSampler)  # absent: the reference's rule
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "generation_config.json").read_text())["dgemma_sampler"] == "topk"
    (d / "generation_config.json").write_text(json.dumps({**gc, "dgemma_sampler": "fastest"}))
    with pytest.raises(CheckpointError, match=r"generation_config\.json: dgemma_sampler 'fastest' is not one of"):
        DiffusionGemma.from_pretrained(d)


def test_cli_reports_bad_checkpoint_in_one_line(saved, tmp_path):
    _, path = saved
    target = corrupt(path, tmp_path, lambda d: (d / "config.json").write_text('{"model_type": "llama"}'))
    run = subprocess.run([sys.executable, "-m", "dgemma.cli", "info", str(target)], capture_output=True, text=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and "model_type is 'llama'" in lines[0]


def test_released_shape_counts_from_meta_build():
    config = get_preset("diffusiongemma-26b-a4b")
    with torch.device("meta"):
        model = DiffusionGemma(config)
    counted = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("vision."))
    assert counted == config.num_parameters() == 25_250_986_752
    vision = model.vision.vision_tower.cfg  # the released tower: 27 layers of 1152, about 0.57B with its embedder
    tower = sum(p.numel() for p in model.vision.parameters())
    assert tower == vision.num_parameters(config.hidden_size)
    assert vision.num_layers == 27 and round(tower / 1e9, 2) == 0.57
    assert round(config.num_parameters(active=True) / 1e9, 2) == 3.84
    assert config.layer_types.count("full_attention") == 5 and config.layer_types[29] == "full_attention"
    attn = model.layers[5].self_attn
    assert attn.v_proj is None and attn.head_dim == 512 and attn.num_kv_heads == 2


def test_presets_are_allocated_once_in_the_target_dtype():
    """A preset is built on the meta device and materialised in its dtype: building `small` in bf16 makes no float32
    tensor beyond the RoPE tables (a float32 copy first would be 2x the weights: 100 GB for the 26B preset), and
    the 26B preset on the meta device allocates nothing. The weights drawn are the float32-first build's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Float32Outputs(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type != "meta":
                    Float32Outputs.largest = max(Float32Outputs.largest, t.numel())
            return out

    with Float32Outputs():
        small = DiffusionGemma.from_pretrained("small", dtype=torch.bfloat16)
    assert small.dtype == torch.bfloat16 and Float32Outputs.largest <= small.config.global_head_dim  # the tables
    reference = DiffusionGemma(get_preset("tiny")).to(torch.bfloat16)  # the earlier build: float32 first
    reference.init_weights(torch.Generator().manual_seed(3))
    direct = DiffusionGemma.from_pretrained("tiny", seed=3, dtype=torch.bfloat16)
    for (name, a), b in zip(direct.state_dict().items(), reference.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    big = DiffusionGemma.from_pretrained("diffusiongemma-26b-a4b", dtype=torch.bfloat16, device="meta")
    assert {p.dtype for p in big.parameters()} == {torch.bfloat16} and big.device.type == "meta"
    assert sum(p.numel() for p in big.parameters()) == 25_250_986_752 + 572_792_112  # text + vision tower


def test_info_command_prints_counts():
    run = subprocess.run([sys.executable, "-m", "dgemma.cli", "info", "diffusiongemma-26b-a4b", "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(run.stdout)
    assert info["parameters"] == 25_250_986_752 and info["global_layers"] == [5, 11, 17, 23, 29]
    assert info["weight_bytes"]["bf16"] == 2 * 25_250_986_752


def test_info_prints_the_kv_cache_that_new_cache_allocates(capsys):
    from dgemma.cli import main
    assert main(["info", "tiny", "--context", "100", "--batch", "2", "--dtype", "fp32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cache = DiffusionGemma.from_pretrained("tiny").new_cache(2, 100)
    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values + [cache.valid])
    assert info["kv_cache_bytes"] == allocated
    assert main(["info", "tiny", "--context", "5000"]) == 2
    assert "exceeds the model's maximum context of 4096" in capsys.readouterr().err
    assert main(["info", "tiny", "--context", "0"]) == 2 and "--context" in capsys.readouterr().err
