"""Text <-> token ids for DiffusionGemma checkpoints, and the source files of the bundled code model.

A thin layer over a HuggingFace `tokenizer.json` so the CLI, the server and training share one encoding,
one decoding and one chat format. It never lets the tokenizer add BOS or other template tokens itself:
callers decide (`add_bos`, `apply_chat_template`), so a checkpoint whose tokenizer.json carries a
post-processor still gets exactly one BOS.

The bundled code model's tokenizer (scripts/train_tokenizer.py) keeps Gemma 4's special-token ids, so the
engine's stop ids (<eos> 1, <turn|> 106, <|tool_response> 50) and the chat format below work unchanged for
it and for full-size Gemma 4 checkpoints.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

PAD, EOS, BOS, TURN_OPEN, TURN_CLOSE, TOOL_RESPONSE_OPEN = \
    "<pad>", "<eos>", "<bos>", "<|turn>", "<turn|>", "<|tool_response>"
TOOL_TOKENS = ("<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", TOOL_RESPONSE_OPEN, "<tool_response|>", '<|"|>')
_GEMMA4_IDS = {0: PAD, 1: EOS, 2: BOS, 3: "<unk>", 4: "<mask>", **{46 + i: t for i, t in enumerate(TOOL_TOKENS)},
               98: "<|think|>", 100: "<|channel>", 101: "<channel|>", 105: TURN_OPEN, 106: TURN_CLOSE}


def _special_tokens() -> tuple[str, ...]:
    """Gemma 4's special tokens at their ids, the gaps filled with <unused0>, <unused1>, ... so a small
    vocabulary can share the layout: every id below 107 is special and learned tokens start at 107."""
    unused = iter(f"<unused{i}>" for i in range(107))
    return tuple(_GEMMA4_IDS.get(i) or next(unused) for i in range(107))


SPECIAL_TOKENS = _special_tokens()
STOP_TOKENS = (EOS, TURN_CLOSE, TOOL_RESPONSE_OPEN)  # end of text, end of a turn, model waits for a tool's answer
CHAT_ROLES = {"system": "system", "user": "user", "assistant": "model", "model": "model"}

# Standard-library modules the code model never trains on (tokenizer nor weights), for evaluating it:
# whole top-level modules of mixed size and style.
HELD_OUT = ("textwrap.py", "fractions.py", "shlex.py", "heapq.py", "bisect.py", "calendar.py", "statistics.py",
            "colorsys.py", "glob.py", "fnmatch.py", "queue.py", "sched.py")
_EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages"})


def stdlib_files(held_out: bool) -> list[Path]:
    """Sorted `*.py` files of this interpreter's standard library: the training set (held_out=False) or the
    HELD_OUT evaluation modules (held_out=True). Test suites, IDLE, lib2to3 (full of deliberately odd code
    and data files) and installed packages are skipped so the model learns the library's own style."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _EXCLUDED_DIRS]  # pruned, never walked
        rel = Path(directory).relative_to(root)
        files += [Path(directory) / n for n in names
                  if n.endswith(".py") and ((rel / n).as_posix() in HELD_OUT) == held_out]
    return sorted(files)


def default_tokenizer_path() -> Path:
    """The bundled code model's tokenizer (written by scripts/train_tokenizer.py)."""
    return Path(__file__).resolve().parent / "assets" / "code" / "tokenizer.json"


class Tokenizer:
    """encode/decode and the Gemma 4 chat format over a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: _HFTokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            tokenizer = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception for bad JSON and unknown components
            reason = (str(e).splitlines() or ["unreadable"])[0]
            raise ValueError(f"{path} is not a valid tokenizer.json: {reason}") from None
        return cls(tokenizer)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike) -> Tokenizer:
        """The tokenizer.json of a checkpoint directory."""
        return cls.from_file(Path(model_dir) / "tokenizer.json")

    def token_id(self, token: str) -> int | None:
        """The id of a whole token string (e.g. "<turn|>"), None when the vocabulary lacks it."""
        return self.tokenizer.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._id_or(PAD, 0)

    @property
    def eos_id(self) -> int:
        return self._id_or(EOS, 1)

    @property
    def bos_id(self) -> int:
        return self._id_or(BOS, 2)

    def _id_or(self, token: str, gemma_id: int) -> int:
        """Tokenizers that name these tokens differently still get Gemma's ids, which our checkpoints use."""
        found = self.token_id(token)
        return gemma_id if found is None else found

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end generation: <eos>, <turn|> and <|tool_response> (the model hands over to a tool)."""
        return [i for i in map(self.token_id, STOP_TOKENS) if i is not None]

    @property
    def has_chat_template(self) -> bool:
        return self.token_id(TURN_OPEN) is not None and self.token_id(TURN_CLOSE) is not None

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it (e.g. "<turn|>") become their single ids."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages: Sequence[Mapping], add_generation_prompt: bool = True) -> str:
        """Gemma 4 chat text: <bos>, then `<|turn>{role}\\n{content}<turn|>\\n` per message ("assistant" is
        rendered as "model"), then `<|turn>model\\n` to prompt the reply when add_generation_prompt."""
        parts = [BOS]
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise ValueError(f"message {i}: expected a mapping with 'role' and 'content', "
                                 f"got {type(message).__name__}")
            role, content = message.get("role"), message.get("content")
            if role not in CHAT_ROLES:
                raise ValueError(f"message {i}: unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})")
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
            parts.append(f"{TURN_OPEN}{CHAT_ROLES[role]}\n{content}{TURN_CLOSE}\n")
        if add_generation_prompt:
            parts.append(f"{TURN_OPEN}model\n")
        return "".join(parts)

    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `render_chat`. Like HuggingFace's templates, special-token strings inside message
        content are encoded as those tokens."""
        if not self.has_chat_template:
            raise ValueError(f"this tokenizer has no Gemma 4 turn tokens ({TURN_OPEN}, {TURN_CLOSE})")
        return self.encode(self.render_chat(messages, add_generation_prompt))
