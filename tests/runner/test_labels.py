import shutil

import pytest
import torch

from interrogator.models.clip import Clip, load_clip
from interrogator.runner.labels import LabelCache, load_tables


@pytest.fixture
def clip(demo_models):
    return load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.float32)


@pytest.fixture
def dicts(tmp_path, small_dicts):
    folder = tmp_path / "dicts"
    shutil.copytree(small_dicts, folder)
    return folder


@pytest.fixture
def encode_calls(monkeypatch):
    """Records the length of every label list that CLIP encodes."""
    calls = []
    original = Clip.encode_labels

    def counting(self, labels, *args, **kwargs):
        calls.append(len(labels))
        return original(self, labels, *args, **kwargs)
    monkeypatch.setattr(Clip, "encode_labels", counting)
    return calls


def test_second_load_encodes_nothing(clip, dicts, tmp_path, encode_calls):
    cache = LabelCache(str(tmp_path / "cache"))
    first = load_tables(clip, str(dicts), cache)
    assert encode_calls == [95, 200, 2914]  # 86 of the 3000 flavors tokenize like an earlier one
    assert not any(t.from_cache for t in first.values())
    second = load_tables(clip, str(dicts), cache)
    assert encode_calls == [95, 200, 2914]
    assert all(t.from_cache for t in second.values())
    for name in first:
        assert torch.equal(first[name].embeddings, second[name].embeddings)


def test_changed_list_re_encodes_that_table_only(clip, dicts, tmp_path, encode_calls):
    cache = LabelCache(str(tmp_path / "cache"))
    load_tables(clip, str(dicts), cache)
    with open(dicts / "movements.txt", "a") as f:
        f.write("a brand new movement\n")
    tables = load_tables(clip, str(dicts), cache)
    assert encode_calls == [95, 200, 2914, 201]
    assert {n: t.from_cache for n, t in tables.items()} == {"mediums": True, "movements": False, "flavors": True}


def test_other_weights_miss_the_cache(clip, dicts, tmp_path, encode_calls):
    from interrogator.models.demo import build_clip
    cache = LabelCache(str(tmp_path / "cache"))
    load_tables(clip, str(dicts), cache, names=["mediums"])
    other = tmp_path / "other.safetensors"
    build_clip(other, seed=1)
    load_tables(load_clip("demo-tiny-clip", str(other), "cpu", torch.float32), str(dicts), cache, names=["mediums"])
    assert encode_calls == [95, 95]


def test_cache_filled_in_one_dtype_is_a_hit_in_another(clip, demo_models, dicts, tmp_path, encode_calls):
    cache = LabelCache(str(tmp_path / "cache"))
    filled = load_tables(clip, str(dicts), cache, names=["mediums"])["mediums"]
    bf16 = load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.bfloat16)
    table = load_tables(bf16, str(dicts), cache, names=["mediums"])["mediums"]
    assert encode_calls == [95] and table.from_cache
    assert table.embeddings.dtype == torch.bfloat16
    assert torch.equal(table.embeddings, filled.embeddings.to(torch.bfloat16))
    (path,) = (tmp_path / "cache").glob("mediums-*.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("embeddings").dtype == torch.float32


def test_a_copied_checkpoint_is_a_hit(clip, demo_models, dicts, tmp_path, encode_calls):
    cache = LabelCache(str(tmp_path / "cache"))
    load_tables(clip, str(dicts), cache, names=["mediums"])
    copy = tmp_path / "elsewhere" / "clip.safetensors"
    copy.parent.mkdir()
    shutil.copy(demo_models.clip_path, copy)  # a new path and a new modification time
    table = load_tables(load_clip("demo-tiny-clip", str(copy), "cpu", torch.float32), str(dicts), cache,
                        names=["mediums"])["mediums"]
    assert encode_calls == [95] and table.from_cache


def test_mismatched_or_corrupt_cache_file_is_rebuilt(clip, dicts, tmp_path, encode_calls):
    cache = LabelCache(str(tmp_path / "cache"))
    load_tables(clip, str(dicts), cache, names=["mediums"])
    (path,) = (tmp_path / "cache").glob("mediums-*.safetensors")
    from safetensors.torch import save_file
    save_file({"embeddings": torch.zeros(3, 32)}, str(path), metadata={"format": "2"})
    table = load_tables(clip, str(dicts), cache, names=["mediums"])["mediums"]
    assert not table.from_cache and table.embeddings.shape == (95, 32)
    path.write_bytes(b"truncated")
    assert not load_tables(clip, str(dicts), cache, names=["mediums"])["mediums"].from_cache
    assert encode_calls == [95, 95, 95]
    assert load_tables(clip, str(dicts), cache, names=["mediums"])["mediums"].from_cache


def test_unwritable_cache_path_warns_and_goes_on(clip, dicts, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    tables = load_tables(clip, str(dicts), LabelCache(str(blocker / "cache")), names=["mediums"])
    assert tables["mediums"].embeddings.shape == (95, 32)
    assert f"label cache: cannot save {blocker / 'cache'}" in caplog.text


def test_table_top_is_exact(clip, dicts):
    table = load_tables(clip, str(dicts), LabelCache(None), names=["flavors"])["flavors"]
    features = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    brute = torch.sort(features @ table.embeddings.T, dim=1, descending=True, stable=True).indices[:, :3]
    assert table.top(features, 3, chunk_size=128) == [[table.labels[i] for i in row] for row in brute.tolist()]
