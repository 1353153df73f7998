"""Prefix-cached candidate encoding (Clip.encode_prefixed): the chain's shared prefix runs once."""
import json
import random

import pytest
import torch

from interrogator.core.config import load_config


def tiny_clip(tmp_path_factory, name, width, heads, layers, seed=0):
    """A miniature open_clip model of the given text tower, saved and loaded back like real weights."""
    import open_clip
    from safetensors.torch import save_file
    from interrogator.models.clip import load_clip
    folder = tmp_path_factory.mktemp(name)
    spec = {"embed_dim": 24, "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": heads, "layers": layers}}
    (folder / f"{name}.json").write_text(json.dumps(spec))
    open_clip.add_model_config(folder / f"{name}.json")
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    return load_clip(name, str(folder / "w.safetensors"), "cpu", torch.float32)


@pytest.fixture(scope="module", params=["demo", "wide"])
def clip(request, demo_models, tmp_path_factory):
    if request.param == "demo":
        from interrogator.models.clip import load_clip
        return load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.float32)
    return tiny_clip(tmp_path_factory, "tiny-clip-w48h6", width=48, heads=6, layers=3)


def words(rng, n):
    pool = ["oil", "painting", "of", "a", "harbor", "by", "night", "trending", "on", "artstation", "8k", "hdr",
            "canon", "eos", "c300", "cinematic", "lighting", "watercolor", "intricate", "detailed"]
    return " ".join(rng.choice(pool) for _ in range(n))


def test_prefixed_features_equal_the_full_encoding_for_every_prefix_length(clip):
    rng = random.Random(0)
    groups, texts = [], []
    for prefix_words in [1, 2, 5, 10, 20, 30, 40, 60, 70, 74, 80]:
        prefix = words(rng, prefix_words)
        start = len(texts)
        texts += [f"{prefix}, {words(rng, rng.randint(1, 6))}" for _ in range(rng.randint(1, 9))]
        groups.append((start, len(texts)))
    tokens = clip.tokenizer(texts)
    got, positions = clip.encode_prefixed(tokens, groups, max_positions=300)
    want = clip.encode_labels(texts).float()
    assert (got - want).abs().max() < 1e-5
    assert positions < sum(int(n) for n in (tokens != 0).sum(1))  # the prefixes ran once


def test_a_group_with_nothing_shared_or_one_row_is_encoded_in_full(clip):
    texts = ["a cat", "the dog sleeps", "x"]
    tokens = clip.tokenizer(texts)
    got, _ = clip.encode_prefixed(tokens, [(0, 2), (2, 3)])
    assert (got - clip.encode_labels(texts).float()).abs().max() < 1e-5


def test_texts_past_the_context_are_truncated_as_the_full_encoding_truncates_them(clip):
    rng = random.Random(1)
    prefix = words(rng, 74)
    texts = [f"{prefix}, {words(rng, k)}" for k in (1, 3, 8)]
    tokens = clip.tokenizer(texts)
    assert int((tokens[-1] != 0).sum()) == 77  # cut at the context, the end token last
    got, _ = clip.encode_prefixed(tokens, [(0, 3)])
    assert (got - clip.encode_labels(texts).float()).abs().max() < 1e-5


# ---- the chain with the cache on and off ----------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_setup(demo_models, tmp_path_factory):
    """The demo CLIP, the sample images' features, and label tables of best and negative (as in test_modes)."""
    import shutil
    from conftest import REPO, SAMPLES
    from interrogator.models.clip import load_clip
    from helpers import list_images
    from interrogator.core.batches import ImageDataset, collate
    from interrogator.runner.labels import LabelCache, load_tables
    from interrogator.runner.modes import TABLES
    clip = load_clip("demo-tiny-clip", str(demo_models.clip_path), "cpu", torch.float32)
    dicts = tmp_path_factory.mktemp("chain_dicts")
    for name in ("mediums", "movements", "negative"):
        shutil.copy(REPO / "dicts" / f"{name}.txt", dicts)
    for name, count in (("flavors", 3000), ("artists", 300)):
        lines = (REPO / "dicts" / f"{name}.txt").read_text(encoding="utf-8").splitlines()[:count]
        (dicts / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tables = load_tables(clip, str(dicts), LabelCache(None), names=sorted(set(TABLES["best"]) | set(TABLES["negative"])))
    files = list_images(SAMPLES)
    batch = collate([ImageDataset(files, None, clip.preprocess)[j] for j in range(len(files))])
    config = load_config(None, max_flavors=32, min_flavors=8, intermediate_count=256)
    return clip, tables, clip.encode_images(batch.clip_pixels).float(), config


@pytest.mark.parametrize("mode", ["best", "negative"])
@pytest.mark.parametrize("batch", [1, 4])
def test_the_chain_chooses_the_same_with_the_cache_on_and_off(chain_setup, mode, batch):
    from interrogator.runner.modes import Texts, interrogate
    clip, tables, features, config = chain_setup
    captions = [f"a picture number {i}" for i in range(len(features))]
    chosen = {}
    for cache in (True, False):
        chosen[cache] = []
        for i in range(0, len(features), batch):
            chosen[cache] += [c.prompt for c in interrogate(mode, captions[i:i + batch], features[i:i + batch], tables,
                                                             config, clip, Texts(clip, prefix_cache=cache))]
    assert chosen[True] == chosen[False]
    assert len(set(chosen[True])) == len(captions) and not set(chosen[True]) & set(captions)  # chains chose


def test_the_cache_computes_at_least_8x_fewer_token_positions(chain_setup):
    from interrogator.runner.modes import Texts, interrogate
    clip, tables, features, config = chain_setup
    captions = [f"a picture number {i}" for i in range(len(features))]
    counts = {}
    long_chain = load_config(None, max_flavors=32, min_flavors=28, intermediate_count=256)  # a fixed, long chain
    for cache in (True, False):
        texts = Texts(clip, prefix_cache=cache)
        interrogate("best", captions[:4], features[:4], tables, long_chain, clip, texts)
        counts[cache] = texts.positions
    assert counts[False] >= 8 * counts[True], counts
    print(f"token positions, 4 images: {counts[False]} in full, {counts[True]} with the prefix cache")


def test_the_merged_table_is_remembered_for_its_tables_and_forgotten_with_them():
    import gc
    import torch
    from interrogator.runner import modes
    from interrogator.runner.labels import LabelTable
    tables = {n: LabelTable(n, [f"{n} {i}" for i in range(3)], torch.randn(3, 4)) for n in modes.MERGED}
    merged = modes.merged_table(tables)
    assert modes.merged_table(tables) is merged and len(merged.labels) == 3 * len(modes.MERGED)
    other = dict(tables, flavors=LabelTable("flavors", ["x"], torch.randn(1, 4)))
    assert modes.merged_table(other) is not merged and modes.merged_table(other).labels[3] == "x"  # flavors: 2nd
    key = id(tables[modes.MERGED[0]])
    assert key in modes._MERGED
    del tables, other, merged
    gc.collect()
    assert key not in modes._MERGED  # nothing of a finished run stays alive
