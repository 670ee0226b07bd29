"""dgemma.tokenizer and the bundled code tokenizer: exact round-trips, Gemma 4 special-token ids, the chat format,
errors that name what is wrong, and compression on the held-out modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from dgemma.tokenizer import HELD_OUT, SPECIAL_TOKENS, Tokenizer, default_tokenizer_path, stdlib_files

GEMMA4_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "<|tool>": 46, "<tool|>": 47,
              "<|tool_call>": 48, "<tool_call|>": 49, "<|tool_response>": 50, "<tool_response|>": 51, '<|"|>': 52,
              "<|think|>": 98, "<|channel>": 100, "<channel|>": 101, "<|turn>": 105, "<turn|>": 106}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(default_tokenizer_path())


def read_exact(path: Path) -> str:
    """The file's text with its line endings untouched (read_text would translate them)."""
    return path.read_bytes().decode("utf-8")


def test_stdlib_split():
    train, held = stdlib_files(held_out=False), stdlib_files(held_out=True)
    assert sorted(p.name for p in held) == sorted(HELD_OUT)
    assert len(train) > 300 and not set(train) & set(held)
    assert not any({"test", "tests", "idlelib", "lib2to3", "site-packages"} & set(p.parts) for p in train)


def test_round_trips_the_standard_library(tok):
    files = stdlib_files(held_out=False) + stdlib_files(held_out=True)
    broken = [f.name for f in files if tok.decode(tok.encode(text := read_exact(f))) != text]
    assert not broken


@pytest.mark.parametrize("text", [
    "", "\tif x:\n\t\treturn 1\n", "a = 1\r\nb = 2\r\n", "lone\rcarriage", "trailing spaces   \n  \n",
    "naïve café, Ελληνικά, 中文, Zoë (combining: e\u0301)", "emoji 😀🐍👩‍💻 and a flag 🇫🇷", "nul\x00 bell\x07 \u2028",
    "    ", "\n\n\n", " leading space", "<|turn without closing", "<turnn|> <pad > <eos", "x" * 5000,
])
def test_round_trips_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("token,expected", GEMMA4_IDS.items())
def test_special_tokens_at_gemma4_ids(tok, token, expected):
    assert tok.token_id(token) == expected
    assert tok.encode(token) == [expected]
    assert tok.decode([expected]) == "" and tok.decode([expected], skip_special=False) == token


def test_ids_below_107_are_special_and_learned_tokens_follow(tok):
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(107))
    assert all(tok.decode([i]) == "" for i in range(107))
    assert tok.decode([107]) != "" and tok.vocab_size == 4096


def test_ids_and_stops(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert tok.stop_ids == [1, 106, 50]
    assert tok.has_chat_template
    assert tok.encode("def f():", add_bos=True) == [2] + tok.encode("def f():")


def test_decode_skips_special_tokens_on_request(tok):
    ids = [2, 105] + tok.encode("model\nx = 1") + [106, 1, 0, 0]
    assert tok.decode(ids) == "model\nx = 1"
    assert tok.decode(ids, skip_special=False) == "<bos><|turn>model\nx = 1<turn|><eos><pad><pad>"


def test_indentation_is_cheap(tok):
    assert len(tok.encode(" " * 4)) == 1 and len(tok.encode(" " * 8)) == 1
    assert len(tok.encode("\n        return")) == 2  # newline + indentation, then " return"


def test_chat_template_renders_gemma4_turns(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}]
    assert tok.render_chat(messages) == ("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n"
                                         "<|turn>model\nHello.<turn|>\n<|turn>model\n")
    assert tok.render_chat(messages[1:2], add_generation_prompt=False) == "<bos><|turn>user\nHi<turn|>\n"
    assert tok.render_chat([{"role": "model", "content": ""}], False) == "<bos><|turn>model\n<turn|>\n"


def test_chat_template_tokens(tok):
    messages = [{"role": "user", "content": "Sort a list."}, {"role": "assistant", "content": "sorted(xs)"}]
    nl = tok.encode("\n")
    turns = ([2, 105] + tok.encode("user\nSort a list.") + [106] + nl
             + [105] + tok.encode("model\nsorted(xs)") + [106] + nl)
    prompt = [105] + tok.encode("model\n")
    assert tok.apply_chat_template(messages) == turns + prompt
    assert tok.apply_chat_template(messages, add_generation_prompt=False) == turns
    assert tok.decode(turns + prompt, skip_special=False) == tok.render_chat(messages)


@pytest.mark.parametrize("messages,index,what", [
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], 1, "a tool message must follow"),
    ([{"content": "a"}], 0, "unknown role None"),
    ([{"role": "user", "content": None}], 0, "user message without content"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": 5}], 1, "content must be a string"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": ["b"]}], 1, "every content part must be"),
    ([("user", "a")], 0, "expected a mapping"),
])
def test_bad_messages_name_their_index(tok, messages, index, what):
    with pytest.raises(ValueError, match=f"message {index}: {what}"):
        tok.apply_chat_template(messages)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tokenizer.json"))):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.from_file(tmp_path / "nope.json")


@pytest.mark.parametrize("content", ["{not json", "{}", '{"model": {"type": "Nonsense"}}', ""])
def test_malformed_file_names_the_path(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path))) as e:
        Tokenizer.from_dir(tmp_path)
    assert "\n" not in str(e.value)


def test_tokenizer_without_gemma_tokens():
    """Other checkpoints' tokenizers fall back to Gemma's pad/eos/bos ids and have no chat format."""
    tok = Tokenizer(HFTokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.stop_ids, tok.has_chat_template) == (0, 1, 2, [], False)
    with pytest.raises(ValueError, match="no Gemma 4 turn tokens"):
        tok.apply_chat_template([{"role": "user", "content": "a"}])


def test_held_out_compression(tok):
    texts = [read_exact(f) for f in stdlib_files(held_out=True)]
    chars_per_token = sum(map(len, texts)) / sum(len(tok.encode(t)) for t in texts)
    print(f"held-out modules: {chars_per_token:.3f} chars/token")
    assert chars_per_token > 3.0


def test_training_script_keeps_the_layout(tmp_path):
    out = tmp_path / "tokenizer.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "train_tokenizer.py"), "--vocab-size", "512",
                    "--out", str(out)], check=True, capture_output=True, cwd=REPO)
    small = Tokenizer.from_file(out)
    assert small.vocab_size == 512
    assert [small.token_id(t) for t in SPECIAL_TOKENS] == list(range(107))
    text = "\tdef f(x):\r\n        return 'é😀'  \n"
    assert small.decode(small.encode(text)) == text
