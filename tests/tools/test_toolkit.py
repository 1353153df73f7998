"""The CLIP toolkit (index, search, classify, similarity, rerank, finetune-clip) against brute force."""
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import REPO, SAMPLES
from interrogator.commands.cli import main
from interrogator.core.config import load_config
from interrogator.tools.features import FeatureStore, build_index
from interrogator.core.images import load_image

SAMPLE_FILES = sorted(SAMPLES.glob("*.png"))


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory, demo_models):
    folder = tmp_path_factory.mktemp("toolkit")
    path = folder / "clip.json"
    path.write_text(json.dumps({"clip_model": "demo-tiny-clip", "clip_path": str(demo_models.clip_path),
                                "device": "cpu", "num_workers": 0, "batch_size": 3}))
    return path


@pytest.fixture(scope="module")
def clip(clip_config):
    from interrogator.tools.toolkit import load_toolkit_clip
    return load_toolkit_clip(load_config(clip_config))


@pytest.fixture(scope="module")
def sample_index(clip_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "samples.safetensors"
    assert main(["index", "--config", str(clip_config), "--images", str(SAMPLES), "--out", str(out),
                 "--no-progress"]) == 0
    return out


def brute_image(clip, path):
    pixels = clip.preprocess(load_image(path)).unsqueeze(0)
    with torch.no_grad():
        return F.normalize(clip.model.encode_image(pixels).float(), dim=-1)[0]


def brute_text(clip, text):
    import open_clip
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(open_clip.get_tokenizer(clip.name)([text])).float(), dim=-1)[0]


def test_search_by_each_sample_returns_it_first(sample_index, clip_config, tmp_path, capsys):
    store = FeatureStore.load(sample_index)
    assert store.ids == [p.name for p in SAMPLE_FILES] and store.dim == 32
    out = tmp_path / "hits.csv"
    args = ["search", "--index", str(sample_index), "-k", "3", "--output", str(out)]
    for p in SAMPLE_FILES:
        args += ["--image", str(p)]
    assert main(args) == 0
    hits = pd.read_csv(out)
    first = hits[hits["rank"] == 1]
    assert first.path.tolist() == [p.name for p in SAMPLE_FILES]
    assert np.allclose(first.score, 1.0, atol=1e-5)
    assert (hits.groupby("query").score.apply(lambda s: s.is_monotonic_decreasing)).all()


def test_search_by_text_equals_brute_force_and_faiss(sample_index, clip, tmp_path):
    text = "a watercolor of a harbor"
    truth = torch.stack([brute_image(clip, p) for p in SAMPLE_FILES]) @ brute_text(clip, text)
    want = [SAMPLE_FILES[i].name for i in torch.sort(truth, descending=True, stable=True).indices.tolist()]
    for backend in ("torch", "faiss"):
        if backend == "faiss":
            pytest.importorskip("faiss")
        out = tmp_path / f"{backend}.csv"
        assert main(["search", "--index", str(sample_index), "--text", text, "-k", "7", "--backend", backend,
                     "--output", str(out)]) == 0
        hits = pd.read_csv(out)
        assert hits.path.tolist() == want, backend
        assert np.allclose(hits.score, torch.sort(truth, descending=True).values.numpy(), atol=1e-5)


def test_contact_sheet_holds_each_hit_thumbnail(sample_index, tmp_path):
    from interrogator.tools.pictures import sheet_size, thumbnail, tile_box
    sheet, out = tmp_path / "sheet.png", tmp_path / "hits.csv"
    assert main(["search", "--index", str(sample_index), "--text", "a robot", "--text", "a lizard", "-k", "4",
                 "--sheet", str(sheet), "--output", str(out)]) == 0
    image = Image.open(sheet).convert("RGB")
    assert image.size == sheet_size(2, 4)
    hits = pd.read_csv(out)
    for r, query in enumerate(["a robot", "a lizard"]):
        for c, path in enumerate(hits[hits["query"] == query].path):
            tile = np.asarray(image.crop(tile_box(r, c)), dtype=np.int16)
            assert np.abs(tile - np.asarray(thumbnail(SAMPLES / path), dtype=np.int16)).max() == 0, (r, c)


def test_search_refuses_an_index_of_other_clip_weights(sample_index, tmp_path, demo_models, capsys):
    from interrogator.models.demo import build_clip
    other = tmp_path / "other.safetensors"
    build_clip(other, seed=1)
    config = tmp_path / "other.json"
    config.write_text(json.dumps({"clip_model": "demo-tiny-clip", "clip_path": str(other), "device": "cpu"}))
    assert main(["search", "--index", str(sample_index), "--text", "x", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: --index {sample_index} was built with other CLIP weights (demo-tiny-clip from "
                       f"{demo_models.clip_path}); give the config of that CLIP")


def test_classify_probabilities_sum_to_one_and_filter(clip_config, clip, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("robot\nlizard\ntext screenshot\nportrait\n")
    out, kept = tmp_path / "classes.csv", tmp_path / "kept.txt"
    templates = ["a photo of a {}", "a painting of a {}"]
    assert main(["classify", "--config", str(clip_config), "--images", str(SAMPLES), "--labels", str(labels),
                 "--template", templates[0], "--template", templates[1], "--top", "4", "--output", str(out),
                 "--threshold", "0.3", "--reject", "text screenshot", "--kept", str(kept)]) == 0
    frame = pd.read_csv(out)
    assert frame.path.tolist() == [p.name for p in SAMPLE_FILES]
    probs = np.array([[float(x.split("=")[1]) for x in row.split("; ")] for row in frame.top])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # brute force: each label's templates averaged, softmax at the model's temperature
    names = ["robot", "lizard", "text screenshot", "portrait"]
    weights = F.normalize(torch.stack([torch.stack([brute_text(clip, t.format(n)) for t in templates]).mean(0)
                                       for n in names]), dim=-1)
    images = torch.stack([brute_image(clip, p) for p in SAMPLE_FILES])
    truth = torch.softmax(clip.model.logit_scale.exp().item() * images.double() @ weights.double().T, dim=1)
    assert frame.label.tolist() == [names[i] for i in truth.argmax(1).tolist()]
    assert np.allclose(frame.probability, truth.max(1).values.numpy(), atol=1e-5)
    screenshot = truth[:, names.index("text screenshot")].numpy()
    assert kept.read_text().splitlines() == [p.name for p, s in zip(SAMPLE_FILES, screenshot) if s < 0.3]


def test_similarity_matrix_equals_brute_force_and_plots(clip_config, clip, tmp_path):
    pytest.importorskip("matplotlib")
    texts = ["a robot", "an astronaut under cherry trees", "a man with a fish on his head"]
    out, plot = tmp_path / "sim.csv", tmp_path / "sim.png"
    assert main(["similarity", "--config", str(clip_config), "--images", *map(str, SAMPLE_FILES),
                 "--texts", *texts, "--output", str(out), "--plot", str(plot)]) == 0
    frame = pd.read_csv(out)
    assert frame.columns.tolist() == ["image", *texts]
    truth = torch.stack([brute_image(clip, p) for p in SAMPLE_FILES]) @ torch.stack([brute_text(clip, t) for t in texts]).T
    assert np.abs(frame[texts].to_numpy() - truth.numpy()).max() < 1e-5
    assert Image.open(plot).size[0] > 400


def test_rerank_orders_by_brute_force_score_and_copies_best(clip_config, clip, tmp_path):
    prompt = "a blue lizard holding cheese in a forest"
    out, best = tmp_path / "ranking.csv", tmp_path / "best"
    assert main(["rerank", "--config", str(clip_config), "--prompt", prompt, "--images", str(SAMPLES),
                 "--output", str(out), "--best", "2", "--copy-to", str(best)]) == 0
    truth = torch.stack([brute_image(clip, p) for p in SAMPLE_FILES]) @ brute_text(clip, prompt)
    want = [SAMPLE_FILES[i].name for i in torch.sort(truth, descending=True, stable=True).indices.tolist()]
    ranking = pd.read_csv(out)
    assert ranking.path.tolist() == want and ranking["rank"].tolist() == list(range(1, 8))
    assert sorted(p.name for p in best.iterdir()) == sorted(want[:2])
    assert (best / want[0]).read_bytes() == (SAMPLES / want[0]).read_bytes()
    assert main(["rerank", "--config", str(clip_config), "--prompt", prompt, "--images", str(SAMPLES),
                 "--output", str(out), "--best", "1", "--copy-to", str(best)]) == 2  # never overwrites


KILL_ON_THIRD_BATCH = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from interrogator.models.clip import Clip
from interrogator.commands.cli import main
original, calls = Clip.encode_images, []
def encode(self, pixels, batch_size=0):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, pixels, batch_size)
Clip.encode_images = encode
main(["index", "--config", {config!r}, "--images", {images!r}, "--out", {out!r}, "--no-progress"])
"""


def test_index_resumes_after_kill_and_follows_the_folder(clip_config, tmp_path, monkeypatch):
    from interrogator.models.clip import Clip
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, p in enumerate(SAMPLE_FILES):
        shutil.copy(p, images / ("sub" if i % 2 else ".") / p.name)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "idx" / "index.safetensors"
    config = load_config(clip_config)
    reference = build_index(config, str(images), str(tmp_path / "reference.safetensors"), progress=False).store

    proc = subprocess.run([sys.executable, "-c", KILL_ON_THIRD_BATCH.format(
        repo=str(REPO), config=str(clip_config), images=str(images), out=str(out))],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    (work,) = (out.parent / ".index.safetensors.work").iterdir()
    assert len(list(work.glob("part-*.safetensors"))) == 2  # batches 1 and 2 were saved

    encoded = []
    original = Clip.encode_images
    monkeypatch.setattr(Clip, "encode_images", lambda self, px, bs=0: encoded.append(len(px)) or original(self, px))
    report = build_index(config, str(images), str(out), progress=False)
    # 8 files in batches of 3 by path: [2 images + broken.png] and [3 images] were saved, the last 2 are left
    assert (report.reused, report.encoded) == (6, 2) and encoded == [2]
    assert report.failed.keys() == {"broken.png"}
    assert report.store.ids == reference.ids and torch.equal(report.store.features, reference.features)
    assert not (out.parent / ".index.safetensors.work").exists()

    # follow the folder: one removed, one rewritten, one added
    (images / "sub" / SAMPLE_FILES[1].name).unlink()
    shutil.copy(SAMPLE_FILES[2], images / SAMPLE_FILES[0].name)  # same name, other bytes
    shutil.copy(SAMPLE_FILES[3], images / "sub" / "new.png")
    encoded.clear()
    report = build_index(config, str(images), str(out), progress=False)
    assert (report.reused, report.encoded, report.removed) == (6, 2, 1) and encoded == [2]
    store = FeatureStore.load(out)
    assert f"sub/{SAMPLE_FILES[1].name}" not in store.ids and "sub/new.png" in store.ids
    assert torch.equal(store.rows([SAMPLE_FILES[0].name])[0], reference.rows([SAMPLE_FILES[2].name])[0])
    assert torch.equal(store.rows(["sub/new.png"])[0], reference.rows([f"sub/{SAMPLE_FILES[3].name}"])[0])


def test_index_of_another_clip_is_rebuilt_with_one_warning(clip_config, tmp_path, caplog):
    from interrogator.core.config import replace
    out = tmp_path / "index.safetensors"
    config = load_config(clip_config)
    build_index(config, str(SAMPLES), str(out), progress=False)
    report = build_index(replace(config, dtype="bf16"), str(SAMPLES), str(out), progress=False)
    assert (report.reused, report.encoded) == (0, 7)
    assert [r.message for r in caplog.records if "computed by another CLIP" in r.message] == [
        f"feature store {out} was computed by another CLIP, dtype or device (demo-tiny-clip, float32, cpu); "
        f"building it anew"]
    assert FeatureStore.load(out).clip.dtype == "bfloat16"


def test_a_damaged_store_is_rebuilt(clip_config, tmp_path):
    out = tmp_path / "index.safetensors"
    out.write_bytes(b"\x00" * 100)
    report = build_index(load_config(clip_config), str(SAMPLES), str(out), progress=False)
    assert report.encoded == 7 and len(FeatureStore.load(out)) == 7


def test_finetune_clip_lowers_the_loss_and_loads_in_the_pipeline(clip_config, tmp_path, write_config):
    pytest.importorskip("open_clip_train")
    pytest.importorskip("webdataset")
    pytest.importorskip("braceexpand")
    from interrogator.runner.pipeline import run
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "pairs").mkdir()
    colours = ["red", "green", "blue", "yellow"]
    values = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 30)]
    for i in range(32):
        c = i % 4
        pixels = np.clip(np.array(values[c]) + rng.integers(-20, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "pairs" / f"{i}.png")
        rows.append((f"pairs/{i}.png", f"a {colours[c]} square"))
    pd.DataFrame(rows, columns=["image", "prompt"]).to_csv(tmp_path / "pairs.csv", index=False)
    from interrogator.learn.finetune import finetune_clip
    result = finetune_clip(load_config(clip_config), str(tmp_path / "pairs.csv"), str(tmp_path / "ft"),
                           epochs=3, batch_size=8, lr=1e-3)
    assert result.loss_after < result.loss_before
    assert result.checkpoint == tmp_path / "ft" / "clip.safetensors"
    out = run(load_config(write_config(clip_path=str(result.checkpoint))), progress=False, write=False)
    assert len(out.image_ids) == 7 and np.isfinite(out.embeddings).all()


def test_finetune_clip_takes_images_for_a_csv_of_ids(clip_config, tmp_path, capsys):
    """Its message says "give --images", and --images is an option of it, as of train-head."""
    pytest.importorskip("open_clip_train")
    pytest.importorskip("webdataset")
    pytest.importorskip("braceexpand")
    from interrogator.commands.cli import main
    pairs = tmp_path / "prompts.csv"
    pairs.write_text("imgId,prompt\n20057f34d,a cat\nnot-there,a dog\n", encoding="utf-8")
    args = ["finetune-clip", "--config", str(clip_config), "--pairs", str(pairs), "--out", str(tmp_path / "ft")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: --pairs: {pairs} names images by imgId; give --images, the "
                                               f"folder that holds them")
    assert main(args + ["--images", str(SAMPLES)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --pairs: {pairs} names imgId 'not-there', which has no image "
                                               f"in {SAMPLES}")
