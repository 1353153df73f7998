"""Every loader refuses a checkpoint that leaves a weight of its model unset, in one line naming the count and
the first names (the model would run on random values and give noise with exit 0); a weight the model does
not use is one warning. The captioners' case is in test_caption.py."""
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from interrogator.core.errors import ModelLoadError
from interrogator.core.identity import Weights


def without(source, target, drop: str, extra=None) -> str:
    """A copy of the safetensors file ``source`` without the tensor ``drop`` (and with ``extra`` tensors)."""
    state = load_file(str(source))
    assert drop in state
    del state[drop]
    save_file({**state, **(extra or {})}, str(target))
    return str(target)


def unset(what, path, names):
    return (f"{what}: the checkpoint in {path} leaves {len(names)} weights of the model unset "
            f"(first: {', '.join(names)}); it is not a checkpoint of this model")


def test_clip(demo_models, tmp_path, caplog):
    from interrogator.models.clip import load_clip
    bad = without(demo_models.clip_path, tmp_path / "clip.safetensors", "text_projection")
    with pytest.raises(ModelLoadError) as info:
        load_clip("demo-tiny-clip", bad, "cpu", torch.float32)
    assert str(info.value) == unset("config key 'clip_path'", bad, ["text_projection"])
    extra = without(demo_models.clip_path, tmp_path / "extra.safetensors", "logit_scale",
                    {"logit_scale": torch.ones(()), "spare.weight": torch.ones(2)})
    with caplog.at_level(logging.WARNING):
        load_clip("demo-tiny-clip", extra, "cpu", torch.float32)
    assert [r.getMessage() for r in caplog.records if "does not use" in r.getMessage()] == [
        f"config key 'clip_path': the checkpoint in {extra} has 1 weights the model does not use (first: spare.weight)"]


def test_head(tmp_path):
    from interrogator.learn.head import WEIGHTS_NAME, load_head, save_head, train_head
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 16)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    weights = Weights("arch:full-identity", "arch:legacy")
    folder = tmp_path / "head"
    save_head(train_head(x, y, "arch", weights.identity, hidden=4, epochs=1), str(folder))
    path = folder / WEIGHTS_NAME
    without(path, path, "mlp.0.bias")
    with pytest.raises(ModelLoadError) as info:
        load_head(str(folder), weights)
    assert str(info.value) == unset("config key 'head_path'", path, ["mlp.0.bias"])


def test_vqgan_converted(tmp_path):
    pytest.importorskip("diffusers", reason="the draw extra is not installed")
    from interrogator.draw.miniature import make_demo_vqgan
    from interrogator.draw.vqgan import build_vqgan, find_vqgan
    folder = make_demo_vqgan(tmp_path / "vqgan")
    weights = next(folder.glob("*.safetensors"))
    without(weights, weights, "post_quant_conv.bias")
    with pytest.raises(ModelLoadError) as info:
        build_vqgan(find_vqgan(folder))
    assert str(info.value) == unset("vqgan_path", folder, ["post_quant_conv.bias"])


def test_tagger_with_a_missing_tensor(tagger_folder, tmp_path):
    import onnx
    from interrogator.models.tagger import load_tagger
    bad = tmp_path / "wd"
    shutil.copytree(tagger_folder, bad)
    model = onnx.load(str(bad / "model.onnx"))
    name = model.graph.initializer[0].name
    del model.graph.initializer[0]
    onnx.save(model, str(bad / "model.onnx"))
    with pytest.raises(ModelLoadError) as info:
        load_tagger(str(bad), "cpu", None)
    message = str(info.value)
    assert message.startswith(f"config key 'tagger_path': cannot load {bad / 'model.onnx'}: ") and "\n" not in message
    assert f"'{name}' is not a graph input, initializer, or output of a previous node" in message
