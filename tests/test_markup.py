"""Closed tags: the well-formedness check finds the first error, closing repairs any prefix into a well-formed
document, the generation loop re-denoises from the first error, and `--format` always prints well-formed output."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from dgemma import markup

SVG = ('<svg width="10" height="10"><!-- a note --><g id="a"><rect x="1" y=\'2\'/><text>1 &lt; 2 &#38; ok</text>'
       '</g><circle r="3"></circle></svg>')


def parses(text: str) -> bool:
    try:
        ET.fromstring(text)
        return True
    except ET.ParseError:
        return False


def test_the_check_agrees_with_an_xml_parser_on_a_document_and_finds_first_errors():
    assert markup.well_formed(SVG, "svg") and parses(SVG)
    for bad, at in (('<svg><g></svg>', 8), ('<svg><rect x=1/></svg>', 5), ('<svg>a & b</svg>', 7),
                    ('<svg></g></svg>', 5), ('text<svg/>', 0), ('<g/>', 0), ('<svg a="&b"/>', 0)):
        c = markup.check(bad, "svg")
        assert c.error == at, (bad, c)
        assert not parses(bad) or bad == '<g/>'  # <g/> is XML, just not an SVG document
    c = markup.check('<svg/><svg/>', "svg")  # the document ends where its root closes; what follows is not part of it
    assert (c.error, c.end) == (None, 6) and not markup.well_formed('<svg/><svg/>', "svg")


def test_closing_any_prefix_or_corruption_gives_a_well_formed_document():
    rng = random.Random(0)
    for _ in range(400):
        text = SVG[:rng.randrange(len(SVG) + 1)]
        if rng.random() < 0.5 and text:
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(["<", "&", ">", "</x>", '"', "<b c=d>"]) + text[i:]
        fixed = markup.close(text, "svg")
        assert markup.well_formed(fixed, "svg") and parses(fixed), (text, fixed)
        c = markup.check(text, "svg")
        head = text[:len(text) if c.error is None else c.error]
        if head.rfind("<") > head.rfind(">"):  # a tag begun and not finished is dropped
            head = head[:head.rfind("<")]
        assert fixed.startswith(head)  # nothing before the first error is lost


class FakeEngine:
    """Each round writes the next of `drafts` (token ids of the bundled tokenizer); records its prompts."""

    def __init__(self, tok, drafts):
        self.tok, self.drafts, self.prompts = tok, list(drafts), []

    def generate(self, ids, cfg, seed=None):
        import torch

        from dgemma.engine import GenerateOutput
        self.prompts.append(self.tok.decode(ids[0].tolist()))
        new = self.tok.encode(self.drafts.pop(0))[:cfg.max_new_tokens]
        seq = torch.cat([ids, torch.tensor([new])], 1)
        return GenerateOutput(seq, torch.tensor([2.0]), [1], torch.tensor([1]))


def test_a_round_keeps_what_precedes_the_first_error_and_denoises_the_rest():
    from dgemma.commands.generate import BUNDLED_MODEL
    from dgemma.engine import GenerationConfig
    from dgemma.tokenizer import Tokenizer
    tok = Tokenizer.from_dir(BUNDLED_MODEL)
    cfg = GenerationConfig(max_new_tokens=64, eos_token_id=(1,), pad_token_id=0)
    eng = FakeEngine(tok, ['<g><rect x=5/></g></svg>', '<rect x="5"/></g></svg> trailing'])
    text, info = markup.generate(eng, tok, "<svg>", cfg, seed=0, root="svg")
    assert text == '<g><rect x="5"/></g></svg>' and info == {"rounds": 2, "tokens_per_forward": 2.0, "closed": False}
    assert eng.prompts[1].endswith("<svg><g>")  # round 2 starts from the error with what came before it fixed
    eng = FakeEngine(tok, ["<g>a & b"] * 3)
    text, info = markup.generate(eng, tok, "<svg>", cfg, seed=0, root="svg", rounds=2)
    assert info["closed"] and info["rounds"] == 3 and markup.well_formed("<svg>" + text, "svg")
    with pytest.raises(ValueError, match="not well-formed markup at character 5"):
        markup.generate(eng, tok, "<svg><", cfg, 0, "svg")
    with pytest.raises(ValueError, match="already closes"):
        markup.generate(eng, tok, "<svg/>", cfg, 0, "svg")
