import shutil
import sys

import pytest
import torch

from helpers import captioning
from PIL import Image

from conftest import SAMPLES
from interrogator.models.caption import load_captioner
from interrogator.core.errors import ModelLoadError

IMAGE = Image.open(sorted(SAMPLES.glob("*.png"))[0]).convert("RGB")


def test_blip2_captions_a_batch(demo_models):
    captioner = load_captioner(captioning(str(demo_models.blip_path), max_new_tokens=5, min_new_tokens=5), "cpu", torch.float32)
    pixels = torch.stack([captioner.transform(IMAGE)] * 3)
    captions = captioner.caption(pixels)
    assert len(captions) == 3 and all(c and c == captions[0] for c in captions)
    assert captioner.caption(pixels[:0]) == []


@pytest.fixture(scope="module")
def blip1_folder(tmp_path_factory, minilm_path):
    """A miniature BLIP (v1) captioner with the MiniLM WordPiece tokenizer, saved like a real checkpoint."""
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)
    folder = tmp_path_factory.mktemp("blip1")
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_path), local_files_only=True)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 96, "width": 96}), tokenizer)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 96, "patch_size": 16},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "vocab_size": tokenizer.vocab_size, "encoder_hidden_size": 32,
                     "bos_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
                     "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_blip_v1_is_chosen_by_model_type(blip1_folder):
    captioner = load_captioner(captioning(str(blip1_folder), max_new_tokens=4, min_new_tokens=4), "cpu", torch.float32)
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"
    pixels = torch.stack([captioner.transform(IMAGE)] * 2)
    assert pixels.shape == (2, 3, 96, 96)
    assert len(captioner.caption(pixels)) == 2


def test_eight_bit_loading_uses_bitsandbytes(demo_models):
    bnb = pytest.importorskip("bitsandbytes", reason="the quant extra is not installed (the floor-versions venv)")
    captioner = load_captioner(captioning(str(demo_models.blip_path), load_in_8bit=True,
                               max_new_tokens=3, min_new_tokens=3), "cpu", torch.float32)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in captioner.model.modules())
    assert len(captioner.caption(torch.stack([captioner.transform(IMAGE)] * 2))) == 2


def test_eight_bit_without_bitsandbytes_is_named(demo_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ModelLoadError, match=r"config key 'load_in_8bit' is true but bitsandbytes is not installed"):
        load_captioner(captioning(str(demo_models.blip_path), load_in_8bit=True), "cpu", torch.float32)


def test_corrupt_weights_are_named(demo_models, tmp_path):
    folder = tmp_path / "blip"
    shutil.copytree(demo_models.blip_path, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=f"config key 'blip_path': cannot load the blip-2 model in {folder}"):
        load_captioner(captioning(str(folder)), "cpu", torch.float32)


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match=f"config key 'blip_path': no config.json in captioner folder {tmp_path}"):
        load_captioner(captioning(str(tmp_path)), "cpu", torch.float32)


def test_static_kv_cache_gives_the_same_captions(demo_models):
    captioner = load_captioner(captioning(str(demo_models.blip_path), max_new_tokens=6, min_new_tokens=6), "cpu", torch.float32)
    pixels = torch.stack([captioner.transform(IMAGE), torch.zeros(3, 224, 224)])
    dynamic = captioner.caption(pixels)
    captioner.generate_options["cache_implementation"] = "static"
    assert captioner.caption(pixels) == dynamic


def test_transform_pickles_without_the_model(demo_models):
    import pickle
    captioner = load_captioner(captioning(str(demo_models.blip_path)), "cpu", torch.float32)
    image = Image.open(sorted(SAMPLES.glob("*.png"))[0]).convert("RGB")
    shipped = pickle.loads(pickle.dumps(captioner.transform))  # what a spawned loader worker receives
    expected = captioner.processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(shipped(image), expected)
    assert len(pickle.dumps(captioner.transform)) < len(pickle.dumps(captioner.model)) / 100


@pytest.mark.parametrize("which", ["blip-2", "blip"])
def test_blip_batched_greedy_captions_equal_one_image_at_a_time(which, demo_models, blip1_folder):
    folder = demo_models.blip_path if which == "blip-2" else blip1_folder
    captioner = load_captioner(captioning(str(folder), max_new_tokens=5, min_new_tokens=3), "cpu", torch.float32)
    pixels = torch.stack([captioner.transform(Image.open(p).convert("RGB")) for p in sorted(SAMPLES.glob("*.png"))])
    assert captioner.caption(pixels) == [captioner.caption(pixels[i:i + 1])[0] for i in range(len(pixels))]


def test_a_checkpoint_that_leaves_weights_unset_is_refused_in_one_line(demo_models, tmp_path, caplog):
    """Weight names that match none of the model's parameters would caption with random weights."""
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "renamed"
    shutil.copytree(demo_models.blip_path, folder)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({f"old.{k}": v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"config key 'blip_path': the checkpoint in .* leaves \d+ weights of "
                                             r"the model unset \(first: "):
        load_captioner(captioning(str(folder)), "cpu", torch.float32)
    extra = tmp_path / "extra"
    shutil.copytree(demo_models.blip_path, extra)
    save_file({**weights, "unused.weight": torch.zeros(2)}, str(extra / "model.safetensors"), metadata={"format": "pt"})
    load_captioner(captioning(str(extra)), "cpu", torch.float32)
    assert "has 1 weights the model does not use (first: unused.weight)" in caplog.text
