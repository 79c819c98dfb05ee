"""Tiny randomly initialised models the curation tests (and benchmarks/curate_stages.py) build and
save offline: a CLIP with its processor, a DB-layout ONNX text detector, and a LLaVA with its processor.

transformers, tokenizers and onnx are imported inside the builders, so importing this module is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = "a the an cat dog runs on over grass red blue orange wall test pattern video of in and then".split()
IMAGE = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=16)


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (projection 16, text window 32 tokens) and a CLIPProcessor whose BPE vocabulary is
    single letters without merges: text is tokenised letter by letter. Returns ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (folder / "vocab.src.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.src.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.src.json"), str(folder / "merges.src.txt"))
    torch.manual_seed(seed)
    config = CLIPConfig(projection_dim=16, vision_config=VISION, text_config=dict(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(**IMAGE), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_bright_text_detector(path: Path) -> Path:
    """An ONNX graph in the layout OpenCV's DB detector reads ([1, 3, H, W] in, [H, W] probability
    out) that calls every bright pixel text: sigmoid(20 * mean(RGB in [0, 1]) - 10). With
    ``score.text_area.mean=[0,0,0]``, a white rectangle on black is one text region of its own size."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 20 / 3, np.float32), "weight")
    bias = numpy_helper.from_array(np.array([-10.0], np.float32), "bias")
    axes = numpy_helper.from_array(np.array([0, 1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight", "bias"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["probability"]),
         helper.make_node("Squeeze", ["probability", "axes"], ["text_map"])],
        "bright_text", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("text_map", TensorProto.FLOAT, ["h", "w"])], [weight, bias, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tiny_llava(folder: Path, seed: int = 0, max_new_tokens: int = 6) -> Path:
    """A LlavaForConditionalGeneration (1-layer CLIP vision tower, 1-layer Llama) and a LlavaProcessor
    with a word-level tokenizer over ``WORDS`` and a minimal chat template. Its generation config
    suppresses the special tokens, so every caption it writes is ``max_new_tokens`` words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, GenerationConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(**IMAGE), tokenizer=tokenizer, patch_size=16,
                               vision_feature_select_strategy="default", chat_template=template,
                               num_additional_image_tokens=1)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    config = LlavaConfig(vision_config=VISION, text_config=text, image_token_id=vocab["<image>"],
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(suppress_tokens=list(range(len(specials))), max_new_tokens=max_new_tokens,
                                               pad_token_id=1, bos_token_id=2, eos_token_id=3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
