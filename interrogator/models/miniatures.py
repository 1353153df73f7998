"""Miniature, randomly initialised captioners of each image-text-to-text family, built offline with the real
classes and processors, saved like real weights (tests and the VLM benchmark load them back through the path
real checkpoints take: ``caption.load_captioner``).

Each has a byte-level BPE trained here on the flavor labels (demo.train_tokenizer), the special tokens its
family's processor looks for, a chat template of the family's shape where the family is a chat model, and
``suppress_tokens`` set to its special tokens, so that random weights still write words.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import torch
from .demo import train_tokenizer
import csv
import inspect

VOCAB = 500
WEIGHT_STD = 0.3
QWEN_CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
             "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
             "<|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS_CHAT = ("{% for message in messages %}{{ message['role'] | capitalize }}:"
                "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}"
                "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
LLAVA_CHAT = ("{% for message in messages %}{{ message['role'] | upper }}: "
              "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}"
              "{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
SMALL_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "bos_token_id": 0, "pad_token_id": 1}


def _tokenizer(extra: List[str] = (), **named):
    """The demo BPE (ids 0-3: <s>, <pad>, </s>, <unk>) with the family's special tokens added."""
    import transformers as tf  # lazy: slow to import
    base = train_tokenizer(VOCAB)
    tokenizer = tf.GPT2TokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token="<s>", pad_token="<pad>",
                                     eos_token="</s>", unk_token="<unk>", **named)
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
    return tokenizer


def _save(model, processor, tokenizer, folder: Path) -> None:
    with torch.no_grad():  # weights far larger than the configs' 0.02 init, so that each image steers the answer
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)):
                module.weight.normal_(0.0, WEIGHT_STD)
    model.generation_config.suppress_tokens = sorted(set(tokenizer.all_special_ids) - {tokenizer.eos_token_id})
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)


def build_git(folder: Path) -> None:
    import transformers as tf  # lazy: slow to import
    tok = _tokenizer()
    processor = tf.GitProcessor(image_processor=tf.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    config = tf.GitConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                          vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=2,
                          pad_token_id=1)
    _save(tf.GitForCausalLM(config), processor, tok, folder)


def build_florence2(folder: Path) -> None:
    import transformers as tf  # lazy: slow to import
    tok = _tokenizer(extra_special_tokens={"image_token": "<image>"})
    vision = {"depths": [1, 1, 1, 1], "embed_dim": [16, 16, 32, 32], "num_heads": [2, 2, 2, 2],
              "num_groups": [2, 2, 2, 2], "window_size": 2, "projection_dim": 32, "max_position_embeddings": 8}
    text = {"model_type": "bart", "vocab_size": len(tok), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "max_position_embeddings": 128, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
            "decoder_start_token_id": 2, "forced_eos_token_id": 2}
    model = tf.Florence2ForConditionalGeneration(tf.Florence2Config(
        text_config=text, vision_config=vision, image_token_id=tok.image_token_id))
    image_processor = tf.CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    with torch.no_grad():  # the processor inserts one <image> per vision token: count them
        features = model.get_image_features(torch.zeros(1, 3, 64, 64))
    if not isinstance(features, torch.Tensor):  # newer transformers return an output whose pooler_output is it
        features = features.pooler_output
    image_processor.image_seq_length = int(features.shape[1])
    _save(model, tf.Florence2Processor(image_processor=image_processor, tokenizer=tok), tok, folder)


def build_qwen2_vl(folder: Path) -> None:
    import transformers as tf  # lazy: slow to import
    names = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok = _tokenizer(names)
    ids = {n: tok.convert_tokens_to_ids(n) for n in names}
    processor = tf.Qwen2VLProcessor(image_processor=tf.Qwen2VLImageProcessor(min_pixels=28 * 28 * 4,
                                                                             max_pixels=28 * 28 * 16),
                                    tokenizer=tok, video_processor=tf.Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT)
    text = {**SMALL_TEXT, "vocab_size": len(tok), "num_hidden_layers": 2, "num_attention_heads": 4,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}, "max_position_embeddings": 512,
            "eos_token_id": ids["<|im_end|>"]}
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3}
    config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    _save(tf.Qwen2VLForConditionalGeneration(config), processor, tok, folder)


def build_idefics3(folder: Path) -> None:
    import transformers as tf  # lazy: slow to import
    tok = _tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"])
    image_processor = tf.Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=False)
    processor = tf.Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                     chat_template=IDEFICS_CHAT)
    config = tf.Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={**SMALL_TEXT, "model_type": "llama", "vocab_size": len(tok),
                     "eos_token_id": tok.convert_tokens_to_ids("<end_of_utterance>")},
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=1)
    _save(tf.Idefics3ForConditionalGeneration(config), processor, tok, folder)


def build_llava(folder: Path) -> None:
    import transformers as tf  # lazy: slow to import
    tok = _tokenizer(["<image>"])
    processor = tf.LlavaProcessor(image_processor=tf.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok, patch_size=16,
        vision_feature_select_strategy="default", chat_template=LLAVA_CHAT, num_additional_image_tokens=1)
    config = tf.LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 16,
                       "projection_dim": 32},
        text_config={**SMALL_TEXT, "model_type": "llama", "vocab_size": len(tok), "eos_token_id": 2},
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    _save(tf.LlavaForConditionalGeneration(config), processor, tok, folder)


BUILDERS: Dict[str, Callable[[Path], None]] = {
    "git": build_git, "florence2": build_florence2, "qwen2_vl": build_qwen2_vl, "idefics3": build_idefics3,
    "llava": build_llava}


def build_captioner(kind: str, folder, seed: int = 0) -> Path:
    """A miniature captioner of the family ``kind`` (BUILDERS) saved in ``folder``."""
    folder = Path(folder)
    torch.manual_seed(seed)
    BUILDERS[kind](folder)
    return folder


# ---- a WD-format ONNX tagger --------------------------------------------------------------------
TAGGER_TAGS = (("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
               ("1girl", 0), ("solo", 0), ("long_hair", 0), ("smile", 0), ("^_^", 0), ("blue_sky", 0),
               ("outdoors", 0), ("hat_(object)", 0), ("simple_background", 0), ("white_background", 0),
               ("hatsune_miku", 4), ("kirisame_marisa", 4))


class _TinyTagger(torch.nn.Module):
    """NHWC BGR 0-255 in, one sigmoid score per tag out, as WD taggers take and give."""

    def __init__(self, tags: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.head = torch.nn.Linear(8, tags)

    def forward(self, x):
        features = torch.relu(self.conv(x.permute(0, 3, 1, 2) / 255.0)).mean(dim=(2, 3))
        return torch.sigmoid(self.head(features) * 4)


def build_tagger(folder, tags=TAGGER_TAGS, side: int = 32, seed: int = 0) -> Path:
    """A miniature WD-format tagger: ``model.onnx`` exported from a tiny torch model (input ``[b, side, side,
    3]``), and ``selected_tags.csv`` (tag_id, name, category, count)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = _TinyTagger(len(tags)).eval()
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (torch.rand(1, side, side, 3) * 255,), str(folder / "model.onnx"),
                      input_names=["input_1:0"], output_names=["predictions_sigmoid"],
                      dynamic_axes={"input_1:0": {0: "batch"}, "predictions_sigmoid": {0: "batch"}}, **options)
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags):
            writer.writerow([1000 + i, name, category, 100 - i])
    return folder
