"""What a model name points to: a local checkpoint directory, a preset, or a Hugging Face Hub id (`org/name`,
optionally `org/name@revision`), in that order of precedence.

Hub ids go through `huggingface_hub` and its cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_TOKEN`, read at
call time), so a model that transformers or vLLM already downloaded loads with no network. Only the files dgemma
reads are fetched: the configs, the tokenizer and chat template, the safetensors index and the shards it names.
Pickled weights (`*.bin`, `*.pt`) are never downloaded nor loaded. A snapshot missing a shard is refused, never
loaded in part.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .config import PRESETS

CONFIG, GENERATION, WEIGHTS, INDEX = "config.json", "generation_config.json", "model.safetensors", \
    "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class HubError(ValueError):
    """A name that cannot be resolved; the message is one line naming the repo, file or cache path."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def split_revision(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); a `revision` given separately must not contradict it."""
    repo, at, rev = str(name).partition("@")
    if at and revision and rev != revision:
        raise HubError(f"{name}: revision {rev!r} in the name contradicts --revision {revision!r}")
    return repo, (rev if at else None) or revision


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(split_revision(name)[0])) and not Path(name).exists()


def repo_cache(repo: str) -> Path:
    return cache_dir() / ("models--" + repo.replace("/", "--"))


def locate(name, revision: str | None = None, weights: bool = True) -> Path | str:
    """A checkpoint directory (a local one, or the hub snapshot, downloading what is missing unless offline), or
    the name itself for a preset. `weights=False` fetches only the configs (for `dgemma info`)."""
    path = Path(name)
    if path.is_dir():
        return path
    if str(name) in PRESETS:
        return str(name)
    if not is_hub_id(str(name)):
        kind = "a file, not a directory" if path.exists() else "no such directory"
        raise HubError(f"{name}: not a local checkpoint directory ({kind}), a preset ({', '.join(sorted(PRESETS))}) "
                       "or a Hugging Face Hub id (org/name[@revision])")
    repo, rev = split_revision(str(name), revision)
    return snapshot(repo, rev, weights)


def _hub():
    try:
        import huggingface_hub
    except ModuleNotFoundError:
        raise HubError("loading by Hugging Face Hub id needs huggingface_hub: pip install 'dgemma[hub]'") from None
    return huggingface_hub


def _fetch(repo: str, rev: str | None, files: list[str], required: bool) -> Path | None:
    """Download (or, offline, look up) `files` of one revision; the snapshot directory, None if a file is absent
    and not `required`."""
    hub = _hub()
    from huggingface_hub import errors as E
    where = repo_cache(repo)
    snap = None
    for file in files:
        try:
            snap = Path(hub.hf_hub_download(repo, file, revision=rev, cache_dir=cache_dir(),
                                            local_files_only=offline())).parent
        except E.GatedRepoError:
            raise HubError(f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN (or run "
                           "`hf auth login`)") from None
        except E.RevisionNotFoundError:
            raise HubError(f"{repo}: revision {rev!r} does not exist") from None
        except E.RepositoryNotFoundError:
            raise HubError(f"{repo}: no such repository, or it is private and HF_TOKEN is not set or lacks access "
                           "(and there is no local directory of that name)") from None
        except E.RemoteEntryNotFoundError:
            if not required:
                return None
            raise HubError(f"{repo}: the repository has no {file}") from None
        except (E.LocalEntryNotFoundError, E.OfflineModeIsEnabled):
            if not required and _revision_cached(repo, rev):
                return None  # the snapshot is there and this optional file is not part of it
            if rev and not _revision_cached(repo, rev):
                refs = sorted(p.name for p in (where / "refs").glob("*")) + sorted(
                    p.name[:12] for p in (where / "snapshots").glob("*"))
                raise HubError(f"{repo}: revision {rev!r} is not in the cache at {where} (cached: "
                               f"{', '.join(refs) or 'nothing'})" + (" and HF_HUB_OFFLINE is set" if offline() else
                                                                    " and the hub cannot be reached")) from None
            raise HubError(f"{repo}: {file} is not in the cache at {where}"
                           + (" (HF_HUB_OFFLINE is set)" if offline() else " and the hub cannot be reached")
                           + ("; there is no local directory of that name either" if file == CONFIG else "")) from None
    return snap


def _revision_cached(repo: str, rev: str | None) -> bool:
    """Whether this revision's snapshot is in the cache (so a file missing from it is missing from the repo's
    download, not from a half-filled cache)."""
    base = repo_cache(repo)
    ref = base / "refs" / (rev or "main")
    commit = ref.read_text().strip() if ref.is_file() else rev
    return bool(commit) and (base / "snapshots" / commit).is_dir()


def weight_files(snap: Path) -> list[str]:
    """The safetensors files a snapshot's index names (or the single file), from the index alone."""
    index = snap / INDEX
    if index.is_file():
        try:
            return sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise HubError(f"{index}: malformed safetensors index ({e})") from None
    return [WEIGHTS]


def snapshot(repo: str, rev: str | None, weights: bool = True) -> Path:
    snap = _fetch(repo, rev, [CONFIG], required=True)
    for file in (GENERATION,) + TOKENIZER_FILES:
        _fetch(repo, rev, [file], required=False)
    if not weights:
        return snap
    if _fetch(repo, rev, [INDEX], required=False) is None and _fetch(repo, rev, [WEIGHTS], required=False) is None:
        pickles = [f for f in _listing(repo, rev, snap) if f.endswith(PICKLES)]
        raise HubError(f"{repo}: no safetensors weights" + (
            f", only pickled ones ({', '.join(pickles[:3])}), which dgemma never loads: they can run code when "
            "unpickled; convert them to safetensors first" if pickles else ""))
    shards = weight_files(snap)
    if offline():
        missing = [s for s in shards if not (snap / s).is_file()]
        if missing:
            raise HubError(f"{repo}: shard {missing[0]} is missing from the cache at {snap}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + "; a partial download is never loaded")
    else:
        _fetch(repo, rev, shards, required=True)  # huggingface_hub shows a progress bar per file
    return snap


def _listing(repo: str, rev: str | None, snap: Path) -> list[str]:
    """The repository's file names (the cached snapshot's when offline)."""
    if offline():
        return sorted(p.name for p in snap.iterdir())
    try:
        return _hub().list_repo_files(repo, revision=rev)
    except Exception:  # a listing that fails only loses detail in the message
        return []


def cached_weights(snap: Path) -> tuple[int, list[str]]:
    """(bytes on disk of the weight files present, names of those the index lists but the cache lacks)."""
    files = weight_files(snap) if (snap / INDEX).is_file() or (snap / WEIGHTS).is_file() else []
    present = [snap / f for f in files if (snap / f).is_file()]
    return sum(p.stat().st_size for p in present), [f for f in files if not (snap / f).is_file()]
