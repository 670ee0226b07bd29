"""Image input against the reference (transformers 5.23 with its PIL image processor): the processor's patches,
the tower's soft tokens, and generation with two images in the prompt."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dgemma import DiffusionGemma
from dgemma.vision import ImageError, ImageProcessor, image_groups, image_prompt, prefill_pieces

from .reference import IMAGE_IDS, VISION, load_reference, make_vision_reference

from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil  # noqa: E402


def picture(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode == "RGBA":
        return Image.fromarray(arr, "RGBA")
    image = Image.fromarray(arr[..., :3], "RGB")
    return image.convert(mode) if mode != "RGB" else image


# odd aspect ratios, a strip whose short side rounds to zero, transparency, grey and palette images
IMAGES = [(97, 211, "RGB"), (640, 37, "RGB"), (33, 33, "RGBA"), (150, 151, "L"), (301, 120, "P"), (20, 900, "RGB")]


@pytest.mark.parametrize("patch, budget", [(16, 70), (16, 280), (4, 70)])
def test_processor_matches_the_reference_pil_processor(patch, budget):
    images = [picture(w, h, mode, seed=i) for i, (w, h, mode) in enumerate(IMAGES)]
    ref = Gemma4ImageProcessorPil(patch_size=patch, max_soft_tokens=budget, pooling_kernel_size=3)
    r = ref(images, return_tensors="pt")
    o = ImageProcessor(patch, 3, budget)(images)
    assert o["num_soft_tokens_per_image"] == list(r["num_soft_tokens_per_image"])
    assert torch.equal(o["image_position_ids"], r["image_position_ids"].long())
    assert o["pixel_values"].dtype == torch.float32 and torch.equal(o["pixel_values"], r["pixel_values"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref-vision")
    make_vision_reference(seed=2).save_pretrained(path)
    return path


def processed(sizes, budget=70):
    return ImageProcessor(VISION["patch_size"], 3, budget)([picture(w, h, seed=i) for i, (w, h) in enumerate(sizes)])


def test_soft_tokens_match_the_reference_in_float32(checkpoint):
    """Within 1e-5: both are 1.3e-7 from the float64 tower at outputs up to 0.4 (the float32 rounding of two
    layers of width 24, whatever the kernels' summation order), while a wrong rotary axis, pooling block, clip or
    standardisation moves them by O(0.1)."""
    ref, ours = load_reference(checkpoint, torch.float32), DiffusionGemma.from_pretrained(checkpoint)
    inputs = processed([(50, 70), (90, 31)])
    with torch.no_grad():
        r = ref.model.encoder.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
        o = ours.encode_images(inputs["pixel_values"], inputs["image_position_ids"])
    assert o.shape == r.shape == (sum(inputs["num_soft_tokens_per_image"]), 32)
    assert (o - r).abs().max().item() < 1e-5


def prompt_with_images(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    runs = image_prompt(counts, IMAGE_IDS["boi_token_id"], IMAGE_IDS["image_token_id"], IMAGE_IDS["eoi_token_id"])
    text = lambda n: torch.randint(3, 110, (n,), generator=g).tolist()  # noqa: E731
    ids = [2] + text(5) + runs[0] + text(3) + runs[1] + text(4)
    ids = torch.tensor([ids])
    return ids, (ids == IMAGE_IDS["image_token_id"]).long()


@pytest.mark.parametrize("seed", [0, 1])
def test_generate_with_two_images_matches_the_reference_in_float64(checkpoint, seed):
    """Two images of 63 and 56 soft tokens, each far longer than the sliding window (8) and than a ring's prefill
    piece (8): the tokens are the reference generate's, which lets every image token see its whole image."""
    ref = load_reference(checkpoint, torch.float64)
    ours = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    inputs = processed([(50, 70), (90, 31)])
    assert inputs["num_soft_tokens_per_image"] == [63, 56]
    ids, types = prompt_with_images(inputs["num_soft_tokens_per_image"], seed)
    kw = dict(max_new_tokens=16, max_denoising_steps=4, eos_token_id=[127], pad_token_id=0)
    torch.manual_seed(seed)
    r = ref.generate(ids, pixel_values=inputs["pixel_values"].double(), image_position_ids=inputs["image_position_ids"],
                     mm_token_type_ids=types, **kw)
    o = ours.generate(ids, pixel_values=inputs["pixel_values"], image_position_ids=inputs["image_position_ids"],
                      mm_token_type_ids=types, seed=seed, **kw)
    assert torch.equal(r.sequences, o.sequences)
    # without the types they are derived from the image token, the same here
    o2 = ours.generate(ids, pixel_values=inputs["pixel_values"], image_position_ids=inputs["image_position_ids"],
                       seed=seed, **kw)
    assert torch.equal(o2.sequences, o.sequences)


def test_the_image_block_changes_the_prefill(checkpoint):
    """The mask is doing something: the same prompt with its images attended causally (as the reference's direct
    forward does) gives other encoder outputs on the image tokens but the same on the text before them."""
    ours = DiffusionGemma.from_pretrained(checkpoint, dtype=torch.float64)
    inputs = processed([(50, 70), (90, 31)])
    ids, _ = prompt_with_images(inputs["num_soft_tokens_per_image"])
    soft = ours.encode_images(inputs["pixel_values"], inputs["image_position_ids"])
    with torch.no_grad():
        block = ours.encode(ids, ours.new_cache(1, ids.shape[1]), image_embeds=soft)
        ours.config.bidirectional_images = False
        causal = ours.encode(ids, ours.new_cache(1, ids.shape[1]), image_embeds=soft)
    ours.config.bidirectional_images = True
    first = int((ids[0] == IMAGE_IDS["image_token_id"]).nonzero()[0])
    assert torch.allclose(block[:, :first], causal[:, :first], atol=1e-12)
    assert (block[:, first:first + 50] - causal[:, first:first + 50]).abs().max() > 1e-3


def test_prefill_pieces_never_split_an_image():
    groups = image_groups(torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0]], dtype=torch.bool))
    assert groups.tolist() == [[-1, -1, 0, 0, 0, 0, 0, -1, -1, -1, 1, 1, -1]]
    assert prefill_pieces(13, 3, groups) == [(0, 2), (2, 7), (7, 10), (10, 13)]
    assert prefill_pieces(13, 4, None) == [(0, 4), (4, 8), (8, 12), (12, 13)]


def test_bad_image_input_gets_one_line_errors(checkpoint, tmp_path):
    ours = DiffusionGemma.from_pretrained(checkpoint)
    inputs = processed([(50, 70)])
    ids, _ = prompt_with_images([63, 10])
    with pytest.raises(ImageError, match="73 image tokens but the images give 63"):
        ours.generate(ids, max_new_tokens=8, **inputs_of(inputs))
    with pytest.raises(ImageError, match="no pixel_values"):
        ours.generate(ids, max_new_tokens=8)
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(ImageError, match="notes.png: not an image"):
        ImageProcessor()(str(not_image))
    with pytest.raises(ImageError, match="max_soft_tokens must be one of 70, 140, 280, 560, 1120"):
        ImageProcessor(max_soft_tokens=100)
    big = io.BytesIO()
    Image.new("L", (9000, 6000)).save(big, format="PNG")
    with pytest.raises(ImageError, match="above the cap"):
        ImageProcessor()(big.getvalue())
    text_only = DiffusionGemma.from_pretrained("tiny")
    with pytest.raises(ImageError, match="no vision tower"):
        text_only.generate(torch.tensor([[2, 5]]), max_new_tokens=8, **inputs_of(inputs))


def inputs_of(processed_inputs):
    return {k: processed_inputs[k] for k in ("pixel_values", "image_position_ids")}


def test_a_tower_saved_by_dgemma_loads_in_the_reference(checkpoint, tmp_path):
    """Our save keeps the tower under the reference's keys, buffers included: the reference reads it back and
    computes our soft tokens."""
    ours = DiffusionGemma.from_pretrained(checkpoint)
    ours.save_pretrained(tmp_path / "saved")
    ref = load_reference(tmp_path / "saved", torch.float32)
    inputs = processed([(64, 40)])
    with torch.no_grad():
        r = ref.model.encoder.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
        o = ours.encode_images(inputs["pixel_values"], inputs["image_position_ids"])
    assert torch.equal(DiffusionGemma.from_pretrained(tmp_path / "saved").vision.vision_tower.std_scale,
                       ours.vision.vision_tower.std_scale)
    assert (o - r).abs().max().item() < 1e-5


def test_info_counts_the_tower(checkpoint):
    """`dgemma info --json`, from config.json and the weights' headers alone, counts what the loaded tower holds."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "dgemma.cli", "info", str(checkpoint), "--json"],
                         capture_output=True, text=True, check=True).stdout
    info, ours = json.loads(out), DiffusionGemma.from_pretrained(checkpoint)
    assert info["vision_parameters"] == sum(p.numel() for p in ours.vision.parameters()) > 0
    assert info["vision"]["layers"] == 2 and info["vision_weight_bytes"]["bf16"] == 2 * info["vision_parameters"]


# --- the commands ---------------------------------------------------------------------------------------------
BUNDLED = __import__("pathlib").Path(__file__).resolve().parent.parent / "dgemma" / "assets" / "code"


@pytest.fixture(scope="module")
def vision_ckpt(tmp_path_factory):
    """A random model over the bundled tokenizer with a tower; the three image ids sit just past the tokenizer's."""
    import shutil

    from dgemma.config import get_preset
    from dgemma.tokenizer import Tokenizer
    n = Tokenizer.from_dir(BUNDLED).vocab_size
    cfg = get_preset("tiny").replace(vocab_size=n + 3, canvas_length=16, max_position_embeddings=1024,
                                     vision_config=dict(VISION), image_token_id=n, boi_token_id=n + 1,
                                     eoi_token_id=n + 2, bidirectional_images=True)
    model = DiffusionGemma(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("vision-cli")
    model.save_pretrained(path)
    shutil.copy(BUNDLED / "tokenizer.json", path / "tokenizer.json")
    for i, size in enumerate([(50, 70), (90, 31)]):
        picture(*size, seed=i).save(path / f"img{i}.png")
    return path


def test_generate_image_flag_is_the_python_api(vision_ckpt, capsys):
    """`dgemma generate PROMPT --image A --image B` gives what model.generate gives for the same ids and pixels,
    and each image takes its run of soft tokens in the prompt."""
    import json

    from dgemma.cli import main
    from dgemma.tokenizer import Tokenizer
    files = [str(vision_ckpt / "img0.png"), str(vision_ckpt / "img1.png")]
    argv = ["generate", "What is this?", "--model", str(vision_ckpt), "--image", files[0], "--image", files[1],
            "--max-soft-tokens", "70", "--max-new-tokens", "16", "--steps", "3", "--seed", "5", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    model, tok = DiffusionGemma.from_pretrained(vision_ckpt), Tokenizer.from_dir(vision_ckpt)
    inputs = ImageProcessor(VISION["patch_size"], 3, 70)(files)
    c = model.config
    runs = image_prompt(inputs["num_soft_tokens_per_image"], c.boi_token_id, c.image_token_id, c.eoi_token_id)
    text = tok.encode("What is this?")
    ids = torch.tensor([[tok.bos_id] + runs[0] + runs[1] + text])
    assert record["prompt_tokens"] == ids.shape[1] == 1 + 63 + 56 + 4 + len(text)
    cfg_kw = dict(max_new_tokens=16, max_denoising_steps=3, eos_token_id=sorted(set(tok.stop_ids)), seed=5,
                  pad_token_id=tok.pad_id)
    out = model.generate(ids, **inputs_of(inputs), **cfg_kw)
    new = out.sequences[0, ids.shape[1]:].tolist()
    assert tok.decode(new[:record["generated_tokens"]]) == record["text"]


def test_image_flag_errors_are_one_line(vision_ckpt, tmp_path, capsys):
    from dgemma.cli import main
    (tmp_path / "x.png").write_text("not a picture")
    for argv, message in [
        (["--model", str(vision_ckpt), "--image", str(tmp_path / "x.png")], "x.png: not an image"),
        (["--model", str(vision_ckpt), "--image", str(tmp_path / "missing.png")], "missing.png: file not found"),
        (["--image", str(vision_ckpt / "img0.png")], "has no vision tower"),
    ]:
        assert main(["generate", "hi", "--quiet", "--max-new-tokens", "16"] + argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_chat_with_an_image_reuses_the_cache_without_changing_a_token(vision_ckpt):
    """The image goes with the first message; later turns find it in the cache (not encoded again) and reply as
    a conversation encoded afresh every turn does."""
    from dgemma.commands.chat import Conversation
    from dgemma.engine import GenerationConfig
    from dgemma.tokenizer import Tokenizer
    from dgemma.vision import PromptImages
    model, tok = DiffusionGemma.from_pretrained(vision_ckpt).eval(), Tokenizer.from_dir(vision_ckpt)
    images = PromptImages.read(model, [vision_ckpt / "img0.png"], 70)
    cfg = GenerationConfig(max_new_tokens=16, max_denoising_steps=3, eos_token_id=(1, 106, 50))
    chats = [Conversation(model, tok, cfg, 1024, seed=3, reuse=r, images=images) for r in (True, False)]
    replies = [[chat.say(turn).content for turn in ("what is it?", "and then?")] for chat in chats]
    assert replies[0] == replies[1] and chats[0].reused > 63 and chats[1].reused == 0
    assert chats[0].seen.count(model.config.image_token_id) == 63


def test_server_takes_image_url_parts_and_refuses_bad_ones_with_400(vision_ckpt, tmp_path):
    """A data: URL and the same file named inside --image-dir give the same reply (same seed), with the image's
    63 soft tokens in the prompt; remote URLs, paths outside the directory, bad base64, non-images and bad
    budgets are 400s naming their parameter, and the server goes on serving."""
    import base64

    from fastapi.testclient import TestClient

    from dgemma.serving.app import ServerState, create_app
    state = ServerState(str(vision_ckpt), model_name="v", image_dir=str(vision_ckpt))
    state.load()
    client = TestClient(create_app(state))
    png = (vision_ckpt / "img0.png").read_bytes()

    def ask(url, **extra):
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]
        return client.post("/v1/chat/completions", json={
            "model": "v", "messages": [{"role": "user", "content": content}], "max_tokens": 16, "seed": 1,
            "denoising_steps": 3, "max_soft_tokens": 70, **extra})

    try:
        a = ask("data:image/png;base64," + base64.b64encode(png).decode())
        b = ask(str(vision_ckpt / "img0.png"))
        assert a.status_code == b.status_code == 200, a.text
        assert a.json()["choices"][0]["message"] == b.json()["choices"][0]["message"]
        text_only = client.post("/v1/chat/completions", json={
            "model": "v", "messages": [{"role": "user", "content": "What is it?"}], "max_tokens": 16})
        assert a.json()["usage"]["prompt_tokens"] == text_only.json()["usage"]["prompt_tokens"] + 63 + 2  # boi, eoi
        (tmp_path / "elsewhere.png").write_bytes(png)
        for url, extra, param, message in [
            ("https://example.com/cat.png", {}, "messages.0.content.0.image_url", "remote image URLs"),
            (str(tmp_path / "elsewhere.png"), {}, "messages.0.content.0.image_url", "outside the server's"),
            ("data:image/png;base64,@@@", {}, "messages.0.content.0.image_url", "not valid base64"),
            ("data:image/png;base64," + base64.b64encode(b"plain text").decode(), {}, "messages", "not an image"),
            (str(vision_ckpt / "img0.png"), {"max_soft_tokens": 100}, "max_soft_tokens", "must be one of"),
        ]:
            r = ask(url, **extra)
            assert r.status_code == 400, (url, r.text)
            err = r.json()["error"]
            assert err["param"] == param and message in err["message"], err
        assert ask(str(vision_ckpt / "img0.png")).json()["choices"][0]["message"] == a.json()["choices"][0]["message"]
    finally:
        state.engine.shutdown()
