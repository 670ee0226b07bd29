"""Loading by Hugging Face Hub id, offline, from a fake hub cache on disk in the real layout
(models--org--name/{blobs,snapshots/<commit>,refs/<branch>}): revisions, precedence, the checkpoint's own tokenizer
config and chat template, `dgemma info`, and one-line errors for missing, partial, pickled and gated repos."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from dgemma import DiffusionGemma
from dgemma import hub
from dgemma.checkpoint import CheckpointError
from dgemma.cli import main
from dgemma.config import get_preset
from dgemma.tokenizer import Tokenizer

BUNDLED = Path(__file__).resolve().parent.parent / "dgemma" / "assets" / "code"
# Our own rendering of the released format's plain turns, written as a checkpoint ships it (jinja, with the
# globals transformers passes): what the built-in fallback must agree with.
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
            "{{ '<|turn>' + role + '\n' + m['content'] + '<turn|>\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|turn>model\n' }}{% endif %}")
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
    [{"role": "user", "content": "multi\nline <b>text</b>"}, {"role": "model", "content": "ok"}],
]


def checkpoint_files(seed: int, tmp: Path, extra: dict | None = None) -> dict[str, bytes]:
    """A tiny random checkpoint over the bundled tokenizer, as {file name: bytes}."""
    cfg = get_preset("tiny").replace(vocab_size=Tokenizer.from_dir(BUNDLED).vocab_size, canvas_length=16,
                                     max_position_embeddings=96)
    m = DiffusionGemma(cfg)
    m.init_weights(torch.Generator().manual_seed(seed))
    d = tmp / f"ckpt{seed}"
    m.save_pretrained(d)
    shutil.copy(BUNDLED / "tokenizer.json", d / "tokenizer.json")
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    files.update(extra or {})
    return files


def put(cache: Path, repo: str, files: dict[str, bytes], ref: str = "main", commit: str | None = None) -> Path:
    """Write one revision into the cache as huggingface_hub does: content-addressed blobs, a snapshot of
    relative symlinks, and refs/<ref> holding the commit."""
    base = cache / ("models--" + repo.replace("/", "--"))
    commit = commit or hashlib.sha1(b"".join(hashlib.sha256(v).digest() for _, v in sorted(files.items()))).hexdigest()
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = base / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(commit)
    return base / "snapshots" / commit


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub-ckpts")
    return {0: checkpoint_files(0, tmp), 1: checkpoint_files(1, tmp)}


def weight(model) -> torch.Tensor:
    return model.state_dict()["embed_tokens.weight"]


def test_loads_by_id_offline_at_each_revision(cache, files):
    put(cache, "org/tiny", files[0])
    snap_v2 = put(cache, "org/tiny", files[1], ref="v2")
    main_model = DiffusionGemma.from_pretrained("org/tiny")
    v2 = DiffusionGemma.from_pretrained("org/tiny", revision="v2")
    assert not torch.equal(weight(main_model), weight(v2))
    assert torch.equal(weight(DiffusionGemma.from_pretrained("org/tiny@v2")), weight(v2))
    assert torch.equal(weight(DiffusionGemma.from_pretrained(f"org/tiny@{snap_v2.name}")), weight(v2))  # a commit
    assert hub.locate("org/tiny", "v2") == snap_v2
    with pytest.raises(hub.HubError, match="contradicts --revision"):
        hub.locate("org/tiny@v2", "main")


def test_local_directory_wins_over_a_hub_id_of_the_same_spelling(cache, files, tmp_path):
    put(cache, "org/tiny", files[0])
    local = tmp_path / "org" / "tiny"
    local.mkdir(parents=True)
    for name, data in files[1].items():
        (local / name).write_bytes(data)
    assert torch.equal(weight(DiffusionGemma.from_pretrained("org/tiny")),
                       weight(DiffusionGemma.from_pretrained(local)))
    assert hub.locate("tiny") == "tiny"  # presets are reserved names


@pytest.mark.parametrize("name,message", [
    ("org/absent", r"org/absent: config\.json is not in the cache at .*models--org--absent \(HF_HUB_OFFLINE is set\)"),
    ("nowhere", r"nowhere: not a local checkpoint directory \(no such directory\), a preset \(.*tiny.*\) or a "
                r"Hugging Face Hub id"),
])
def test_names_that_resolve_to_nothing(cache, name, message):
    with pytest.raises(CheckpointError, match=message):
        DiffusionGemma.from_pretrained(name)


def test_a_revision_not_in_the_cache_is_named(cache, files):
    put(cache, "org/tiny", files[0])
    with pytest.raises(CheckpointError, match=r"revision 'nope' is not in the cache at .*models--org--tiny "
                                              r"\(cached: main, [0-9a-f]{12}\)"):
        DiffusionGemma.from_pretrained("org/tiny", revision="nope")


def test_a_partial_download_is_refused_naming_the_shard(cache, files, tmp_path):
    m = DiffusionGemma.from_pretrained("tiny")
    sharded = tmp_path / "sharded"
    m.save_pretrained(sharded, max_shard_bytes=200_000)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 2
    present = {p.name: p.read_bytes() for p in sharded.iterdir() if p.name != shards[-1]}
    snap = put(cache, "org/half", present)
    with pytest.raises(CheckpointError, match=f"shard {shards[-1]} is missing from the cache at {snap}"):
        DiffusionGemma.from_pretrained("org/half")
    on_disk, missing = hub.cached_weights(snap)
    assert missing == [shards[-1]] and on_disk == sum(len(v) for k, v in present.items() if k in shards)


def test_pickle_only_repos_are_refused(cache, files):
    put(cache, "org/pickled", {"config.json": files[0]["config.json"], "pytorch_model.bin": b"\x80\x04."})
    with pytest.raises(CheckpointError, match=r"org/pickled: no safetensors weights, only pickled ones "
                                              r"\(pytorch_model\.bin\), which dgemma never loads"):
        DiffusionGemma.from_pretrained("org/pickled")


@pytest.mark.parametrize("error,message", [
    ("GatedRepoError", "org/gated is gated: accept its terms on huggingface.co and set HF_TOKEN"),
    ("RepositoryNotFoundError", "org/gated: no such repository, or it is private and HF_TOKEN is not set"),
    ("RevisionNotFoundError", "org/gated: revision 'v9' does not exist"),
])
def test_online_refusals_are_one_line(cache, monkeypatch, error, message):
    import huggingface_hub
    from huggingface_hub import errors
    monkeypatch.delenv("HF_HUB_OFFLINE")
    cls = getattr(errors, error)

    def refuse(*args, **kwargs):
        raise cls.__new__(cls, "401 Client Error")  # as huggingface_hub raises it, minus the HTTP response

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(hub.HubError) as e:
        hub.locate("org/gated@v9")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_info_by_id_reads_only_the_config_and_reports_the_cache(cache, files, capsys):
    put(cache, "org/tiny", files[0])
    put(cache, "org/configonly", {"config.json": files[0]["config.json"],
                                  "model.safetensors.index.json": json.dumps(
                                      {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                      "b": "model-00002-of-00002.safetensors"}}).encode()})
    assert main(["info", "org/tiny", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)["hub_cache"]
    assert full["weights_cached"] and full["weight_bytes_on_disk"] == len(files[0]["model.safetensors"])
    assert main(["info", "org/configonly", "--json"]) == 0
    part = json.loads(capsys.readouterr().out)["hub_cache"]
    assert not part["weights_cached"] and part["missing_weight_files"] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert main(["info", "org/configonly"]) == 0
    assert "2 file(s) not in the cache, e.g. model-00001-of-00002.safetensors, 0.00 GiB on disk" in \
        capsys.readouterr().out


def test_generate_by_id_and_one_line_errors(cache, files, capsys):
    put(cache, "org/tiny", files[0])
    assert main(["generate", "def f(x):", "--model", "org/tiny", "--json", "--max-new-tokens", "16", "--steps", "2",
                 "--seed", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "org/tiny" and out["prompt_tokens"] == 1 + len(Tokenizer.from_dir(BUNDLED).encode("def f(x):"))
    assert main(["generate", "hi", "--model", "org/absent"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json is not in the cache" in err and "\n" not in err


def test_the_checkpoints_chat_template_and_special_tokens_are_used(cache, files):
    snap = put(cache, "org/chat", files[0] | {"chat_template.jinja": TEMPLATE.encode()})
    built_in, shipped = Tokenizer.from_dir(BUNDLED), Tokenizer.from_dir(snap)
    assert built_in.chat_template is None and shipped.chat_template == TEMPLATE
    for conv in CONVERSATIONS:
        for prompt in (True, False):
            assert shipped.render_chat(conv, prompt) == built_in.render_chat(conv, prompt)
            assert shipped.apply_chat_template(conv, prompt) == built_in.apply_chat_template(conv, prompt)
    config = {"eos_token": {"content": "<turn|>"}, "pad_token": "<pad>", "chat_template": "X{{ messages|length }}"}
    snap = put(cache, "org/config", files[0] | {"tokenizer_config.json": json.dumps(config).encode()})
    tok = Tokenizer.from_dir(hub.locate("org/config"))
    assert tok.eos_id == 106 and tok.render_chat(CONVERSATIONS[1]) == "X4"


@pytest.mark.parametrize("template,message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "chat template: SecurityError"),
    ("{{ raise_exception('no system role') }}", "chat template: no system role"),
    ("{% for %}", "chat template: TemplateSyntaxError"),
])
def test_chat_templates_run_in_a_sandbox(tmp_path, template, message):
    shutil.copy(BUNDLED / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "chat_template.jinja").write_text(template)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_dir(tmp_path).render_chat(CONVERSATIONS[0])


def test_serve_resolves_the_id_and_uses_the_checkpoints_files(cache, files, monkeypatch):
    import uvicorn

    from dgemma.cli import build_parser
    snap = put(cache, "org/chat", files[0] | {"chat_template.jinja": TEMPLATE.encode()})
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.update(app=self.config.app))
    args = build_parser().parse_args(["serve", "--model", "org/chat@main"])
    assert args.func(args) == 0
    state = seen["app"].state.dgemma
    assert (state.model_name, Path(state.model_dir)) == ("org/chat", snap)
    state.load()
    try:
        assert state.status == "ok" and state.tokenizer.chat_template == TEMPLATE
    finally:
        state.engine.shutdown()


def test_online_downloads_only_what_dgemma_reads(cache, files, monkeypatch, tmp_path):
    """With the network (faked: a dict of the repo's files), only configs, tokenizer files and the shards the
    index names are requested, never the pickles beside them; a pickle-only repo is refused by name."""
    import huggingface_hub
    from huggingface_hub import errors
    monkeypatch.delenv("HF_HUB_OFFLINE")
    m = DiffusionGemma.from_pretrained("tiny")
    m.save_pretrained(tmp_path / "sharded", max_shard_bytes=200_000)
    remote = {p.name: p.read_bytes() for p in (tmp_path / "sharded").iterdir()}
    remote |= {"tokenizer.json": files[0]["tokenizer.json"], "pytorch_model.bin": b"\x80", "optimizer.pt": b"\x80"}
    requested = []

    def download(repo, filename, revision=None, cache_dir=None, local_files_only=False):
        assert not local_files_only and Path(cache_dir) == cache
        requested.append(filename)
        if filename not in remote:
            raise errors.RemoteEntryNotFoundError.__new__(errors.RemoteEntryNotFoundError, "404")
        return str(put(cache, repo, {filename: remote[filename]}, commit="c" * 40) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    snap = hub.locate("org/remote")
    shards = sorted(n for n in remote if n.startswith("model-"))
    assert not any(f.endswith((".bin", ".pt")) for f in requested) and set(shards) <= set(requested)
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json"} <= set(requested)
    assert hub.cached_weights(snap) == (sum(len(remote[s]) for s in shards), [])
    remote = {"config.json": files[0]["config.json"], "pytorch_model.bin": b"\x80"}
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo, revision=None: sorted(remote))
    with pytest.raises(hub.HubError, match=r"only pickled ones \(pytorch_model\.bin\)"):
        hub.locate("org/pickles")
