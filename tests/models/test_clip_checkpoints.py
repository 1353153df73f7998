"""CLIP checkpoints in every common form load the same weights, with the activation their name or form implies."""
import logging

import pytest
import torch

from interrogator.models.clip import load_clip
from interrogator.models.clip_checkpoint import register_model_configs
from interrogator.models.clip_checkpoint import checkpoint_form, resolve_clip
from interrogator.core.errors import ModelLoadError

TINY = "demo-tiny-clip"


def tiny_quickgelu_model(seed=0):
    import open_clip
    register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True).eval()


def save_openai_archive(model, path):
    """A TorchScript archive laid out as OpenAI's releases are: the CLIP's own names plus three int buffers."""
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    mask = model.attn_mask  # OpenAI's archives hold the causal mask as a plain attribute, not in the state dict
    delattr(model, "attn_mask")
    model.attn_mask = mask
    torch.jit.save(torch.jit.script(model), str(path))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same QuickGELU weights as safetensors, torch.save (plain and wrapped), and an OpenAI archive."""
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("clip_forms")
    state = {k: v.clone().contiguous() for k, v in tiny_quickgelu_model().state_dict().items()}
    save_file(state, str(folder / "tiny.safetensors"))
    torch.save(state, folder / "tiny.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "open_clip_pytorch_model.bin")
    save_openai_archive(tiny_quickgelu_model(), folder / "ViT-tiny.pt")
    return folder


def features(clip):
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 224, 224)
    tokens = clip.tokenizer(["a photo of a cat", "an oil painting"])
    return clip.encode_images(pixels), clip.encode_text_tokens(tokens)


def test_forms_are_told_apart(checkpoints):
    forms = {p.name: checkpoint_form(p) for p in sorted(checkpoints.iterdir())}
    assert forms == {"ViT-tiny.pt": "torchscript", "open_clip_pytorch_model.bin": "state-dict",
                     "tiny.pt": "state-dict", "tiny.safetensors": "safetensors"}


def test_every_form_gives_the_same_features_with_quickgelu(checkpoints, caplog):
    reference = features(load_clip(f"{TINY}-quickgelu", str(checkpoints / "tiny.safetensors"), "cpu", torch.float32))
    for name in ("tiny.pt", "open_clip_pytorch_model.bin"):
        got = features(load_clip(f"{TINY}-quickgelu", str(checkpoints / name), "cpu", torch.float32))
        assert all(torch.equal(a, b) for a, b in zip(got, reference)), name
    caplog.set_level(logging.WARNING)
    archive = load_clip(TINY, str(checkpoints / "ViT-tiny.pt"), "cpu", torch.float32)  # the form implies QuickGELU
    assert all(torch.equal(a, b) for a, b in zip(features(archive), reference))
    assert (f"clip_path {checkpoints / 'ViT-tiny.pt'} is an OpenAI TorchScript archive, whose weights need "
            f"QuickGELU; building {TINY} with QuickGELU (write clip_model \"{TINY}/openai\" to say so)") in caplog.text


def test_the_activation_matters(checkpoints):
    """The same weights under GELU give other features: a silent GELU would give wrong tags."""
    quick = features(load_clip(f"{TINY}-quickgelu", str(checkpoints / "tiny.safetensors"), "cpu", torch.float32))
    gelu = features(load_clip(TINY, str(checkpoints / "tiny.safetensors"), "cpu", torch.float32))
    assert not torch.allclose(quick[0], gelu[0], atol=1e-4)


def test_arch_slash_tag_applies_the_tags_config(checkpoints):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    spec = resolve_clip("ViT-B-32/openai", checkpoints / "tiny.safetensors")
    assert (spec.arch, spec.tag, spec.quick_gelu, spec.form) == ("ViT-B-32", "openai", True, "safetensors")
    assert spec.preprocess["image_mean"] == OPENAI_DATASET_MEAN and spec.preprocess["image_std"] == OPENAI_DATASET_STD
    laion = resolve_clip("ViT-B-32/laion2b_s34b_b79k", checkpoints / "tiny.safetensors")
    assert not laion.quick_gelu and resolve_clip("ViT-B-32", checkpoints / "tiny.pt").quick_gelu is False
    assert resolve_clip("ViT-B-32", checkpoints / "ViT-tiny.pt").quick_gelu is True


@pytest.mark.parametrize("name, message", [
    ("ViT-B-32/laion2b_s34b_b79k", "is an OpenAI TorchScript archive, but 'ViT-B-32/laion2b_s34b_b79k' names the "
                                   "'laion2b_s34b_b79k' weights; write clip_model \"ViT-B-32/openai\""),
    ("ViT-B-32/nonsense", "ViT-B-32 has no pretrained tag 'nonsense' (known: openai, "),
    ("ViT-Nope-1", "unknown open_clip architecture 'ViT-Nope-1'"),
    ("hf" "-hub:someone/some-clip", "names a hub or folder model"),
])
def test_name_and_checkpoint_that_disagree_say_what_to_write(checkpoints, name, message):
    with pytest.raises(ModelLoadError, match=None) as info:
        resolve_clip(name, checkpoints / "ViT-tiny.pt")
    assert message in str(info.value)


def test_a_file_that_is_no_checkpoint_is_refused_before_any_model_loads(write_config, tmp_path, capsys, monkeypatch):
    from interrogator.commands.cli import main
    bad = tmp_path / "ViT-L-14.pt"
    bad.write_text("<html>a download that went wrong</html>")
    monkeypatch.setattr("interrogator.models.embed.load_sentence_model", lambda *a, **k: pytest.fail("a model loaded"))
    code = main(["submit", "--config", str(write_config(clip_path=str(bad))), "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: config key 'clip_path': {bad} is not a CLIP checkpoint this tool reads (.safetensors, "
        f"a torch.save state dict, or an OpenAI TorchScript archive)")
