"""T5TextEncoder against a direct transformers call, its folder checks, and clean_caption against diffusers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types

import pytest
import torch

from allegro_train.models.text import T5TextEncoder, clean_caption

CAPTIONS = ["a red cat runs across the field.", "a dog.", "the bright square slides across the screen."]


@pytest.fixture(scope="module")
def encoder(tiny_t5):
    return T5TextEncoder.from_pretrained(tiny_t5, dtype=torch.float32)


def direct(folder, captions, max_length=512):
    """The reference: transformers' own tokenizer and T5EncoderModel on the same inputs, padded to the longest."""
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer")
    model = T5EncoderModel.from_pretrained(folder / "text_encoder").eval()
    tokens = tokenizer(captions, padding="longest", max_length=max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**tokens).last_hidden_state, tokens.attention_mask


def test_tokenizer_uses_the_trained_vocab(tiny_t5, encoder):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_t5 / "tokenizer" / "spiece.model"))
    for caption in CAPTIONS:
        assert encoder.tokenizer(caption).input_ids == sp.encode(caption) + [1]  # + EOS
    assert len(encoder.tokenizer) == sp.get_piece_size() == encoder.model.config.vocab_size


def test_encode_equals_direct_call_and_zeroes_padding(tiny_t5, encoder):
    states, mask = encoder.encode(CAPTIONS)
    ref_states, ref_mask = direct(tiny_t5, CAPTIONS)
    assert states.shape == (3, mask.shape[1], 32) and mask.dtype == torch.long
    assert torch.equal(mask, ref_mask) and mask.sum(1).max() == mask.shape[1]  # L = the longest caption
    keep = mask.bool()
    torch.testing.assert_close(states[keep], ref_states[keep], rtol=1e-5, atol=1e-5)
    assert (states[~keep] == 0).all() and (~keep).any()
    # A caption alone gives its batched states (padding is masked out of attention).
    alone, alone_mask = encoder.encode(CAPTIONS[1:2])
    torch.testing.assert_close(alone[0], states[1, : int(alone_mask.sum())], rtol=1e-5, atol=1e-5)


def test_frozen_and_no_grad(encoder):
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    states, _ = encoder.encode(CAPTIONS[:1])
    assert not states.requires_grad


def test_max_length_truncation_keeps_eos(tiny_t5):
    short = T5TextEncoder.from_pretrained(tiny_t5, max_length=5, dtype=torch.float32)
    states, mask = short.encode(CAPTIONS)
    assert mask.shape == (3, 5)
    ids = short.tokenizer(CAPTIONS, max_length=5, truncation=True).input_ids
    assert all(row[-1] == 1 for row in ids)  # EOS survives the cut
    ref_states, ref_mask = direct(tiny_t5, CAPTIONS, max_length=5)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(states * mask[..., None], ref_states * ref_mask[..., None], rtol=1e-5, atol=1e-5)


def test_empty_caption_is_one_eos_token(encoder):
    states, mask = encoder.encode([""])
    assert mask.tolist() == [[1]] and states.shape == (1, 1, 32)
    assert encoder.tokenizer("").input_ids == [1]


def test_clean_flag_encodes_the_cleaned_caption(encoder):
    raw = "  A RED <b>cat</b> runs across the field. https://example.com/x  "
    assert clean_caption(raw) == "a red cat runs across the field."
    cleaned, _ = encoder.encode([raw], clean=True)
    expected, _ = encoder.encode([clean_caption(raw)])
    assert torch.equal(cleaned, expected)


def test_bad_inputs(encoder):
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode("a cat")
    with pytest.raises(TypeError, match=r"captions\[1\]"):
        encoder.encode(["a cat", None])


# ------------------------------------------------------------------ folders


def test_layouts_and_bad_folders(tiny_t5, tmp_path):
    flat = tmp_path / "flat"  # a plain transformers checkpoint with its tokenizer beside it
    shutil.copytree(tiny_t5 / "text_encoder", flat)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(tiny_t5 / "tokenizer" / name, flat / name)
    assert T5TextEncoder.from_pretrained(flat, dtype=torch.float32).hidden_size == 32

    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: not a folder"):
        T5TextEncoder.from_pretrained(tmp_path / "nowhere")
    half = tmp_path / "half"
    shutil.copytree(tiny_t5 / "text_encoder", half / "text_encoder")
    with pytest.raises(FileNotFoundError, match=f"{half / 'tokenizer'}: missing"):
        T5TextEncoder.from_pretrained(half)

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_t5, pickled)
    (pickled / "text_encoder" / "model.safetensors").rename(pickled / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pickled weights \['pytorch_model.bin'\]") as error:
        T5TextEncoder.from_pretrained(pickled)
    assert str(pickled / "text_encoder") in str(error.value)

    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_t5, foreign)
    config = json.loads((foreign / "text_encoder" / "config.json").read_text())
    (foreign / "text_encoder" / "config.json").write_text(json.dumps({**config, "model_type": "umt5"}))
    with pytest.raises(ValueError, match="model_type is 'umt5'"):
        T5TextEncoder.from_pretrained(foreign)

    no_vocab = tmp_path / "no_vocab"
    shutil.copytree(tiny_t5, no_vocab)
    (no_vocab / "tokenizer" / "spiece.model").unlink()
    with pytest.raises(FileNotFoundError, match=f"{no_vocab / 'tokenizer'}: no spiece.model"):
        T5TextEncoder.from_pretrained(no_vocab)
    with pytest.raises(ValueError, match="max_length=0"):
        T5TextEncoder.from_pretrained(tiny_t5, max_length=0)


def test_models_import_without_transformers():
    code = "import sys, allegro_train.models.text; assert 'transformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ caption cleaning

DIRTY = [
    "A Red Cat runs   across the field.",
    "<p>Sunset over the <b>sea</b></p> https://example.com/a/b www.site.org/page",
    "@someone: a dog jumps &amp; plays #123 \"\"quoted\"\"",
    "this-is-my-cute-cat video_clip_name",
    "a photo of a car 1920x1080, img_0042.jpg free shipping worldwide",
    "ip 192.168.0.1 \u2014 id jc6640 page 12 ... ***SALE***",
    "  'a quoted caption'  ",
    "\u201cfancy quotes\u201d and \u2018single\u2019 \u4e2d\u6587 text",
]


def test_clean_caption_basics():
    assert clean_caption("  A   Red\tCat  ") == "a red cat"
    assert clean_caption("<i>a</i> cat http://x.com/y") == "a cat"
    assert clean_caption("") == ""
    with pytest.raises(TypeError, match="takes a str"):
        clean_caption(None)


def test_clean_caption_matches_the_pipeline(monkeypatch):
    """diffusers' _clean_caption with bs4 replaced by a tag stripper and ftfy by identity (neither is
    installed here, and neither changes these captions beyond that)."""
    import html
    import re

    allegro = pytest.importorskip("diffusers.pipelines.allegro.pipeline_allegro")
    soup = lambda text, features: types.SimpleNamespace(text=html.unescape(re.sub(r"<[^<>]*>", "", text)))
    monkeypatch.setattr(allegro, "BeautifulSoup", soup, raising=False)
    monkeypatch.setattr(allegro, "ftfy", types.SimpleNamespace(fix_text=lambda s: s), raising=False)
    pipe = types.SimpleNamespace(bad_punct_regex=allegro.AllegroPipeline.bad_punct_regex)
    for caption in DIRTY:
        once = allegro.AllegroPipeline._clean_caption(pipe, caption)
        assert clean_caption(caption) == allegro.AllegroPipeline._clean_caption(pipe, once), caption
