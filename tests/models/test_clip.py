import pytest
import torch

from interrogator.models.clip import load_clip, token_lengths
from interrogator.core.errors import ModelLoadError
from interrogator.runner.labels import read_labels


@pytest.fixture(scope="module")
def clip(demo_models):
    return load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.float32)


def test_fast_label_encoding_equals_full_context(clip, small_dicts):
    labels = read_labels(small_dicts / "flavors.txt")[:700] + ["a", "a very long label " * 30]
    fast = clip.encode_labels(labels, batch_size=128)
    full = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(labels)).float(), dim=-1)
    assert fast.shape == full.shape == (len(labels), clip.embed_dim)
    assert (fast - full).abs().max().item() < 1e-5


def test_label_encoding_keeps_label_order(clip):
    labels = ["a cat", "an extremely long and detailed oil painting of a castle", "dog"]
    together = clip.encode_labels(labels, batch_size=2)
    for i, label in enumerate(labels):
        assert torch.allclose(together[i], clip.encode_labels([label])[0], atol=1e-5)


def test_token_lengths_count_start_and_end():
    tokens = torch.tensor([[49406, 320, 49407, 0, 0], [49406, 49407, 0, 0, 0]])
    assert token_lengths(tokens).tolist() == [3, 2]


def test_image_features_are_unit_norm(clip):
    features = clip.encode_images(torch.randn(3, 3, 224, 224), batch_size=2)
    assert features.shape == (3, clip.embed_dim)
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_checkpoint_for_another_architecture_is_named(demo_models):
    with pytest.raises(ModelLoadError, match=r"config key 'clip_path': checkpoint .*demo-tiny-clip.safetensors does not match clip_model 'ViT-B-32'"):
        load_clip("ViT-B-32", str(demo_models.clip_path), "cpu", torch.float32)


def test_unknown_architecture_and_corrupt_checkpoint(tmp_path, demo_models):
    with pytest.raises(ModelLoadError, match="unknown open_clip architecture 'ViT-Z-99'"):
        load_clip("ViT-Z-99", str(demo_models.clip_path), "cpu", torch.float32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match=f"config key 'clip_path'.*{bad.name}"):
        load_clip("demo-tiny-clip", str(bad), "cpu", torch.float32)


def test_tokenizing_in_workers_equals_one_call(small_dicts):
    import open_clip
    from interrogator.models.clip import tokenize_many
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    labels = read_labels(small_dicts / "flavors.txt") * 3  # 9000 labels, 5 chunks
    together = tokenize_many(tokenizer, labels, workers=2, min_parallel=1, chunk=2000)
    assert torch.equal(together, tokenizer(labels))
