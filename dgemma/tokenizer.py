"""Text <-> token ids for DiffusionGemma checkpoints, and the source files of the bundled code model.

A thin layer over a HuggingFace `tokenizer.json` so the CLI, the server and training share one encoding,
one decoding and one chat format. It never lets the tokenizer add BOS or other template tokens itself:
callers decide (`add_bos`, `apply_chat_template`), so a checkpoint whose tokenizer.json carries a
post-processor still gets exactly one BOS.

The bundled code model's tokenizer (scripts/train_tokenizer.py) keeps Gemma 4's special-token ids, so the
engine's stop ids (<eos> 1, <turn|> 106, <|tool_response> 50) and the chat format below work unchanged for
it and for full-size Gemma 4 checkpoints. A checkpoint directory's own `tokenizer_config.json` (its bos/eos/pad
tokens) and chat template (`chat_template.jinja`, or the config's `chat_template`) take precedence; the template is
rendered with jinja2 in a sandbox, and the built-in Gemma 4 turn format is the fallback.
"""

from __future__ import annotations

import json
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

    def __init__(self, tokenizer: _HFTokenizer, specials: Mapping[str, str] | None = None,
                 chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.specials = dict(specials or {})  # "bos" / "eos" / "pad" -> token string, from tokenizer_config.json
        self.chat_template = chat_template
        self._template = None

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
        """A checkpoint directory's tokenizer.json, with its tokenizer_config.json's special tokens and its chat
        template (chat_template.jinja first, as transformers writes it) where present."""
        d = Path(model_dir)
        tok = cls.from_file(d / "tokenizer.json")
        config = {}
        if (d / "tokenizer_config.json").is_file():
            try:
                config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{d / 'tokenizer_config.json'}: not valid JSON ({e})") from None
            if not isinstance(config, dict):
                raise ValueError(f"{d / 'tokenizer_config.json'}: expected a JSON object")
        for key in ("bos", "eos", "pad"):
            value = config.get(f"{key}_token")
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str) and tok.token_id(value) is not None:
                tok.specials[key] = value
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                            None)
        if (d / "chat_template.jinja").is_file():
            template = (d / "chat_template.jinja").read_text(encoding="utf-8")
        tok.chat_template = template if isinstance(template, str) and template.strip() else None
        return tok

    def token_id(self, token: str) -> int | None:
        """The id of a whole token string (e.g. "<turn|>"), None when the vocabulary lacks it."""
        return self.tokenizer.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._id_or(self.specials.get("pad", PAD), 0)

    @property
    def eos_id(self) -> int:
        return self._id_or(self.specials.get("eos", EOS), 1)

    @property
    def bos_id(self) -> int:
        return self._id_or(self.specials.get("bos", BOS), 2)

    def _id_or(self, token: str, gemma_id: int) -> int:
        """Tokenizers that name these tokens differently still get Gemma's ids, which our checkpoints use."""
        found = self.token_id(token)
        return gemma_id if found is None else found

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end generation: <eos>, <turn|> and <|tool_response> (the model hands over to a tool)."""
        ids = [i for i in map(self.token_id, STOP_TOKENS) if i is not None]
        return ids + [self.eos_id] if "eos" in self.specials and self.eos_id not in ids else ids

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None or (
            self.token_id(TURN_OPEN) is not None and self.token_id(TURN_CLOSE) is not None)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it (e.g. "<turn|>") become their single ids."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
                    tools: Sequence[Mapping] | None = None, enable_thinking: bool = False) -> str:
        """Chat text: the checkpoint's own template where it has one, else the Gemma 4 format of the released
        checkpoint (dgemma.chat_format: system turn, thinking, tools, tool calls and responses)."""
        if self.chat_template is not None:
            return self._render_template(messages, add_generation_prompt, tools=tools, enable_thinking=enable_thinking)
        from .chat_format import render
        return render(messages, add_generation_prompt, tools=tools, enable_thinking=enable_thinking, bos=BOS)

    def _render_template(self, messages: Sequence[Mapping], add_generation_prompt: bool, **variables) -> str:
        """The checkpoint's jinja template in a sandbox (no attribute access outside the data, no I/O), with the
        globals transformers gives templates: messages, add_generation_prompt, bos/eos tokens, raise_exception."""
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ModuleNotFoundError:
            raise ValueError("this checkpoint's chat template needs jinja2: pip install 'dgemma[hub]'") from None

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise ValueError(f"message {i}: expected a mapping with a string 'role'")
        try:
            if self._template is None:
                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                    extensions=["jinja2.ext.loopcontrols"])
                env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, sort_keys=False: json.dumps(
                    x, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
                env.globals["raise_exception"] = raise_exception
                self._template = env.from_string(self.chat_template)
            return self._template.render(messages=[dict(m) for m in messages],
                                         add_generation_prompt=add_generation_prompt,
                                         bos_token=self.specials.get("bos", BOS), eos_token=self.specials.get("eos", EOS),
                                         **{k: v for k, v in variables.items() if v is not None})
        except jinja2.TemplateError as e:
            raise ValueError(f"chat template: {type(e).__name__}: {e}") from None

    def apply_chat_template(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
                            tools: Sequence[Mapping] | None = None, enable_thinking: bool = False) -> list[int]:
        """Token ids of `render_chat`. Like HuggingFace's templates, special-token strings inside message
        content are encoded as those tokens."""
        if not self.has_chat_template:
            raise ValueError(f"this tokenizer has no chat template and no Gemma 4 turn tokens ({TURN_OPEN}, "
                             f"{TURN_CLOSE})")
        return self.encode(self.render_chat(messages, add_generation_prompt, tools, enable_thinking))
