"""Training data: each batch is (ids (B, T), prompt_len P, valid (B, T) bool or None) with T = P + C*canvas_length;
`valid` marks real tokens where prompts are left-padded (None: all real)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch


class DataError(ValueError):
    pass


def _sudoku_augment(puzzle, solution, rng: random.Random):
    """A random symmetry of the grid: digit relabelling, band/stack and row/col-in-band permutations, transpose."""
    digits = list(range(1, 10)); rng.shuffle(digits)
    relabel = [0] + digits
    bands = rng.sample(range(3), 3); stacks = rng.sample(range(3), 3)
    rows = [b * 3 + r for b in bands for r in rng.sample(range(3), 3)]
    cols = [s * 3 + c for s in stacks for c in rng.sample(range(3), 3)]
    tr = rng.random() < 0.5
    def apply(cells):
        out = []
        for r in range(9):
            for c in range(9):
                rr, cc = rows[r], cols[c]
                if tr:
                    rr, cc = cc, rr
                out.append(relabel[cells[rr * 9 + cc]])
        return out
    return apply(puzzle), apply(solution)


class SudokuData:
    """A pool of generated puzzles, augmented by grid symmetries on the fly (effectively unlimited data)."""

    def __init__(self, n: int, seed: int, canvas_length: int, vocab_size: int):
        from dgemma.tasks import sudoku
        if canvas_length != 81:
            raise DataError(f"sudoku needs canvas_length 81, the model has {canvas_length}")
        if vocab_size < sudoku.VOCAB_SIZE:
            raise DataError(f"sudoku needs vocab_size >= {sudoku.VOCAB_SIZE} (position-tagged cells), the model has "
                            f"{vocab_size}")
        self.s = sudoku
        self.pool = [(p.puzzle, p.solution) for p in sudoku.generate_dataset(n, seed)]

    def batch(self, batch_size: int, rng: random.Random, augment: bool = True):
        ids = []
        for _ in range(batch_size):
            p, s = self.pool[rng.randrange(len(self.pool))]
            if augment:
                p, s = _sudoku_augment(p, s, rng)
            ids.append(self.s.encode_prompt(p) + self.s.encode_solution(s))
        return torch.tensor(ids), 82, None


class PackedText:
    """Pretraining: documents joined with EOS into one token stream; a batch takes random windows of
    P + C*L tokens, P drawn per batch from [1, L] so canvas boundaries fall anywhere in the text."""

    def __init__(self, tokens: list[int], canvas_length: int, canvases: int):
        self.tokens = torch.tensor(tokens, dtype=torch.long)
        self.L, self.C = canvas_length, canvases
        if len(self.tokens) < (self.C + 1) * self.L + 1:
            raise DataError(f"only {len(self.tokens)} tokens of text, need at least {(self.C + 1) * self.L + 1}")

    def batch(self, batch_size: int, rng: random.Random, P: int | None = None):
        P = rng.randint(1, self.L) if P is None else P
        T = P + self.C * self.L
        starts = [rng.randrange(len(self.tokens) - T) for _ in range(batch_size)]
        return torch.stack([self.tokens[s:s + T] for s in starts]), P, None


def read_text_files(paths, tokenizer) -> list[int]:
    toks = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise DataError(f"data file {p} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 text ({e})") from None
        toks += [tokenizer.bos_id] + tokenizer.encode(text) + [tokenizer.eos_id]
    return toks


def read_jsonl(path, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) pairs from `prompt`/`response` or chat `messages` lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            if "messages" in row:
                msgs = row["messages"]
                if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") not in ("assistant", "model"):
                    raise DataError(f"{path}:{n}: 'messages' must be a list ending with an assistant message")
                try:
                    prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True)
                except ValueError as e:
                    raise DataError(f"{path}:{n}: {e}") from None
                content = msgs[-1].get("content")
                if not isinstance(content, str):
                    raise DataError(f"{path}:{n}: assistant content must be a string")
                response = tokenizer.encode(content + "<turn|>")
            elif isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
                prompt = tokenizer.encode(row["prompt"], add_bos=True)
                response = tokenizer.encode(row["response"]) + [tokenizer.eos_id]
            else:
                raise DataError(f"{path}:{n}: expected 'prompt' and 'response' strings or 'messages'")
            out.append((prompt, response))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


class CodeData:
    """Documents of the generated function corpus (dgemma.tasks.code_corpus), drawn afresh for every batch and
    cut into a prompt and the rest at a line end (`code_corpus.cut`), then batched as SFT pairs. A response spans
    at most `max_canvases` canvases (longer documents are left out). A batch holds responses of one canvas count,
    that of its first draw, so that a short one is not EOS-filled to a long one's width: each count comes up as
    often as the corpus has it, and no step is spent on fill."""

    def __init__(self, tokenizer, canvas_length: int, split: str, max_canvases: int = 1):
        from dgemma.tasks import code_corpus
        if tokenizer is None:
            raise DataError("--data code needs --tokenizer")
        if max_canvases < 1:
            raise DataError(f"code data needs at least one canvas per response, got {max_canvases}")
        code_corpus.verify()  # no wrong code is trained on (nor evaluated against)
        self.corpus, self.tok, self.split, self.max_canvases = code_corpus, tokenizer, split, max_canvases
        self.sft = SFTData([], canvas_length, tokenizer.eos_id, tokenizer.pad_id)

    def batch(self, batch_size: int, rng: random.Random):
        pairs, width = [], None
        while len(pairs) < batch_size:
            text = self.corpus.draw(rng, self.split)[1]
            i = self.corpus.cut(text, rng)
            prompt, rest = [self.tok.bos_id] + self.tok.encode(text[:i]), self.tok.encode(text[i:]) + [self.tok.eos_id]
            canvases = -(-len(rest) // self.sft.L)
            if canvases > self.max_canvases:
                continue
            width = width or canvases
            if canvases != width:
                continue
            pairs.append((prompt, rest))
        return self.sft._make(pairs)


class SFTData:
    """Prompt/response pairs: each prompt left-padded to the batch's longest (P; the padding is marked invalid, so
    no token attends to it and no loss is taken on it, as at inference), each response EOS-filled to C*L."""

    def __init__(self, pairs, canvas_length: int, eos_id: int, pad_id: int):
        self.pairs, self.L, self.eos, self.pad = pairs, canvas_length, eos_id, pad_id

    def _make(self, chosen):
        P = max(len(p) for p, _ in chosen)
        C = max(-(-len(r) // self.L) for _, r in chosen)
        rows = [[self.pad] * (P - len(p)) + p + r + [self.eos] * (C * self.L - len(r)) for p, r in chosen]
        valid = torch.ones(len(rows), P + C * self.L, dtype=torch.bool)
        for i, (p, _) in enumerate(chosen):
            valid[i, :P - len(p)] = False
        return torch.tensor(rows), P, valid

    def batch(self, batch_size: int, rng: random.Random):
        return self._make([self.pairs[rng.randrange(len(self.pairs))] for _ in range(batch_size)])
