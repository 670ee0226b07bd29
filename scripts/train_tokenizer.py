"""Train the bundled code model's byte-level BPE tokenizer, on the generated function corpus (default) or the
Python standard library.

    python scripts/train_tokenizer.py [--corpus code] [--vocab-size 2048] [--out dgemma/assets/code/tokenizer.json]

Byte-level, with no normalizer, so any text round-trips exactly. Ids 0-106 are Gemma 4's special tokens
(dgemma.tokenizer.SPECIAL_TOKENS); learned tokens start at 107. The output depends only on the corpus and the flags.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from dgemma.tokenizer import SPECIAL_TOKENS, default_tokenizer_path, stdlib_files

# Pre-token split tuned for Python:
# - a newline and the indentation after it are one token of their own, so a text cut at any line end (a prompt
#   "def fib(n):", an infill's prefix or suffix) tokenizes exactly as it does inside the whole file;
# - an identifier, with one optional leading space, is one word ("self", " return", "_name", "is_prime");
# - digits one at a time (with an optional space), so numbers tokenise uniformly;
# - a run of punctuation, with one optional leading space ("):", " ==", '"""'); other runs of spaces alone.
SPLIT = r"\n[ \t]*| ?[\p{L}_][\p{L}\p{N}_]*| ?\p{N}| ?[^\s\p{L}\p{N}_]+|[^\S\n]+"


def texts(corpus: str, held_out: bool) -> list[str]:
    if corpus == "stdlib":
        return [f.read_text(encoding="utf-8") for f in stdlib_files(held_out=held_out)]
    from dgemma.tasks import code_corpus
    return [code_corpus.document(v, 0) for v in sum(code_corpus.corpus("heldout" if held_out else "train"), ())]


def train(vocab_size: int, corpus: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    data = texts(corpus, held_out=False)
    tokenizer.train_from_iterator(data, trainer, length=len(data))
    return tokenizer


def check(tokenizer: Tokenizer, corpus: str) -> float:
    """Fail loudly if the special tokens moved or the held-out texts do not round-trip; chars per token
    on the held-out texts."""
    moved = [(i, t, tokenizer.token_to_id(t)) for i, t in enumerate(SPECIAL_TOKENS) if tokenizer.token_to_id(t) != i]
    if moved:
        sys.exit(f"special tokens not at their ids (id, token, got): {moved}")
    held = texts(corpus, held_out=True)
    encodings = tokenizer.encode_batch(held, add_special_tokens=False)
    if any(tokenizer.decode(e.ids, skip_special_tokens=False) != t for e, t in zip(encodings, held)):
        sys.exit("a held-out text does not round-trip")
    return sum(map(len, held)) / sum(len(e.ids) for e in encodings)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", choices=("code", "stdlib"), default="code",
                   help="code: the generated function corpus's training split; stdlib: the standard library "
                        "(default code)")
    p.add_argument("--vocab-size", type=int, default=2048,
                   help=f"total vocabulary including the {len(SPECIAL_TOKENS)} special tokens and 256 bytes "
                        "(default 2048)")
    p.add_argument("--out", default=str(default_tokenizer_path()),
                   help="where to write tokenizer.json (default: the bundled code model's, %(default)s)")
    args = p.parse_args(argv)
    if args.vocab_size < len(SPECIAL_TOKENS) + 256:
        p.error(f"--vocab-size must be at least {len(SPECIAL_TOKENS) + 256} (special tokens plus 256 bytes)")
    start = time.perf_counter()
    tokenizer = train(args.vocab_size, args.corpus)
    seconds = time.perf_counter() - start
    chars_per_token = check(tokenizer, args.corpus)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    print(f"{out}: {tokenizer.get_vocab_size()} tokens, {out.stat().st_size / 1e6:.2f} MB, trained in "
          f"{seconds:.1f} s; held-out {args.corpus} texts: {chars_per_token:.3f} chars/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
