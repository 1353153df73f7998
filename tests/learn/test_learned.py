"""Past the interrogator: the learned head, the retrieval bank and the blend, on planted data and demo models."""
import json
import re
import shutil

import numpy as np
import pytest
import torch

from helpers import demo_config
from conftest import SAMPLE, SAMPLES, needs_shared
from interrogator.learn.bank import Bank
from interrogator.learn.blend import blend_vectors, simplex_grid
from interrogator.commands.cli import main
from interrogator.core.config import load_config
from interrogator.learn.head import train_head


def planted(n=2000, dim=64, out=384, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal((out, dim)).astype(np.float32)
    y = x @ w.T
    return x, (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def test_head_learns_a_planted_relation_and_not_shuffled_targets():
    x, y = planted()
    kwargs = dict(clip_model="m", clip_weights="w", epochs=40, lr=1e-2, batch_size=128, patience=40)
    learned = train_head(x, y, **kwargs)
    assert learned.val_score > 0.95
    assert learned.history[-1].val_score == max(e.val_score for e in learned.history) or learned.best_epoch < 40
    shuffled = train_head(x, y[np.random.default_rng(1).permutation(len(y))], **kwargs)
    assert shuffled.val_score < 0.5
    again = train_head(x, y, **kwargs)  # seeded and deterministic on the CPU
    assert all(torch.equal(a, b) for a, b in zip(learned.head.state_dict().values(), again.head.state_dict().values()))


def test_mlp_head_trains_and_early_stopping_keeps_the_best_epoch():
    x, y = planted(n=600)
    trained = train_head(x, y, "m", "w", hidden=64, epochs=30, lr=1e-2, batch_size=64, patience=3)
    assert trained.val_score == max(e.val_score for e in trained.history)
    assert trained.history[trained.best_epoch - 1].val_score == trained.val_score
    assert len(trained.history) <= 30 and trained.spec.hidden == 64


def test_bank_returns_a_duplicates_own_embedding_at_k1():
    x, y = planted(n=50, seed=3)
    bank = Bank([str(i) for i in range(50)], torch.from_numpy(x), torch.from_numpy(y), "m", "w")
    got = bank.query(torch.from_numpy(x[[7, 21]]), k=1, temperature=0.05)
    assert np.abs(got - y[[7, 21]]).max() < 1e-7
    # many neighbours at a high temperature: the plain mean of all, normalised
    mean = y.astype(np.float64).mean(axis=0)
    got = bank.query(torch.from_numpy(x[:1]), k=50, temperature=1e6)
    assert np.abs(got[0] - mean / np.linalg.norm(mean)).max() < 1e-5


def test_bank_with_faiss_equals_torch_and_builds_its_index_once(monkeypatch):
    pytest.importorskip("faiss")
    import interrogator.learn.bank as nearest  # the module that builds the index
    x, y = planted(n=80, seed=5)
    bank = Bank([str(i) for i in range(80)], torch.from_numpy(x), torch.from_numpy(y), "m", "w")
    built = []
    original = nearest.faiss_index
    monkeypatch.setattr(nearest, "faiss_index", lambda keys: built.append(1) or original(keys))
    for rows in ([0, 1, 2], [3, 4]):
        q = torch.from_numpy(x[rows])
        assert np.abs(bank.query(q, 5, 0.05, "faiss") - bank.query(q, 5, 0.05, "torch")).max() < 1e-6
    assert built == [1]


def test_blend_of_the_prompt_alone_is_the_prompt_exactly_and_others_normalised():
    _, y = planted(n=6, seed=4)
    head, bank = np.roll(y, 1, axis=0), np.roll(y, 2, axis=0)
    assert blend_vectors([1, 0, 0], y, head, bank) is y and blend_vectors(None, y) is y
    head[2] = 0  # an undecodable image has no prediction: its vector stays the fallback prompt's
    got = blend_vectors([0.5, 0.3, 0.2], y, head, bank)
    want = 0.5 * y.astype(np.float64) + 0.3 * head + 0.2 * bank
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    assert np.abs(got[[0, 1, 3, 4, 5]] - want[[0, 1, 3, 4, 5]]).max() < 1e-6
    assert np.abs(blend_vectors([0, 1, 0], y, head, bank)[2] - y[2]).max() == 0
    assert len(simplex_grid((True, True, True), 0.1)) == 66 and simplex_grid((True, False, False), 0.5) == [(1.0, 0.0, 0.0)]


@pytest.fixture(scope="module")
def learned_chain(tmp_path_factory, demo_models, small_dicts):
    """features -> train-head -> build-bank on the 7 samples and their true prompts, demo models."""
    folder = tmp_path_factory.mktemp("learned")
    base = str(demo_config(folder, demo_models, small_dicts, "base.json"))
    config = json.loads((folder / "base.json").read_text())
    store = str(folder / "features.safetensors")
    assert main(["features", "--config", base, "--images", str(SAMPLES), "--out", store, "--no-progress"]) == 0
    pairs = str(SAMPLE / "prompts.csv")
    assert main(["train-head", "--config", base, "--pairs", pairs, "--images", str(SAMPLES), "--out",
                 str(folder / "head"), "--features", store, "--epochs", "5", "--no-progress"]) == 0
    assert main(["build-bank", "--config", base, "--pairs", pairs, "--images", str(SAMPLES), "--out",
                 str(folder / "bank"), "--features", store, "--no-progress"]) == 0
    return folder, config


def write_json(path, values):
    path.write_text(json.dumps(values))
    return str(path)


@needs_shared
def test_chain_tune_blend_then_submit_scores_what_tune_said(learned_chain, capsys, minilm_path):
    folder, config = learned_chain
    capsys.readouterr()
    tuned = write_json(folder / "tune.json", {**config, "head_path": str(folder / "head"),
                                              "bank_path": str(folder / "bank"), "blend": [1, 1, 1]})
    assert main(["tune-blend", "--config", tuned, "--prompts", str(SAMPLE / "prompts.csv"), "--step", "0.25",
                 "--output", str(folder / "best.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    scores = [float(r.split("|")[5]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r.split("|")[6].strip() for r in rows} >= {"prompt alone", "head alone", "bank alone"}
    best = json.loads((folder / "best.json").read_text())["blend"]
    assert f"best: {json.dumps({'blend': best})} score {scores[0]:.6f}" in out

    submission = folder / "blended.csv"
    blended = write_json(folder / "blended.json", {**json.loads((folder / "tune.json").read_text()), "blend": best,
                                                   "output": str(submission)})
    assert main(["submit", "--config", blended, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", "--submission", str(submission), "--prompts", str(SAMPLE / "prompts.csv"),
                 "--embedding-path", str(minilm_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"score {scores[0]:.6f}"


@needs_shared
def test_blend_of_the_prompt_alone_is_byte_identical_to_todays_submission(learned_chain, tmp_path):
    folder, config = learned_chain
    today, blended = tmp_path / "today.csv", tmp_path / "blended.csv"
    assert main(["submit", "--config", write_json(tmp_path / "a.json", {**config, "output": str(today)}),
                 "--no-progress"]) == 0
    assert main(["submit", "--config", write_json(tmp_path / "b.json", {
        **config, "output": str(blended), "head_path": str(folder / "head"), "bank_path": str(folder / "bank"),
        "blend": [1, 0, 0]}), "--no-progress"]) == 0
    assert blended.read_bytes() == today.read_bytes()


@needs_shared
def test_a_head_or_bank_of_other_clip_weights_is_refused(learned_chain, tmp_path, capsys):
    from interrogator.models.clip_checkpoint import resolve_clip
    from interrogator.models.demo import build_clip
    folder, config = learned_chain
    other = tmp_path / "other.safetensors"
    build_clip(other, seed=1)
    trained_on = json.loads((folder / "head" / "head.json").read_text())["clip_weights"]
    now = resolve_clip("demo-tiny-clip", other).identity(other)
    for key, blend, what in (("head_path", [0, 1, 0], "the head in {} was trained on features"),
                             ("bank_path", [0, 0, 1], "the bank in {} holds features")):
        path = str(folder / key.split("_")[0])
        cfg = write_json(tmp_path / "c.json", {**config, "clip_path": str(other), key: path, "blend": blend,
                                               "output": str(tmp_path / "x.csv")})
        capsys.readouterr()
        assert main(["submit", "--config", cfg, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: config key '{key}': {what.format(path)} of other CLIP weights (demo-tiny-clip, "
                       f"{trained_on}); this run's CLIP is {now}"]
        assert not (tmp_path / "x.csv").exists()


def test_blend_settings_are_checked(tmp_path, write_config):
    from interrogator.core.errors import ConfigError
    from interrogator.runner.pipeline import run
    with pytest.raises(ConfigError, match=r"config key 'blend': expected three finite weights >= 0"):
        load_config(write_config(blend=[1, -1, 0]))
    with pytest.raises(ConfigError, match=r"config key 'blend' must be set when 'head_path' is"):
        run(load_config(write_config(head_path=str(tmp_path))), progress=False, write=False)
    with pytest.raises(ConfigError, match=r"config key 'bank_path' is required but not set"):
        run(load_config(write_config(blend=[1, 0, 1])), progress=False, write=False)


@needs_shared
def test_features_is_the_index_store(learned_chain, tmp_path):
    from interrogator.tools.features import FeatureStore
    folder, config = learned_chain
    cfg = write_json(tmp_path / "c.json", config)
    assert main(["index", "--config", cfg, "--images", str(SAMPLES), "--out", str(tmp_path / "i.safetensors"),
                 "--no-progress"]) == 0
    a, b = FeatureStore.load(folder / "features.safetensors"), FeatureStore.load(tmp_path / "i.safetensors")
    assert a.ids == b.ids and torch.equal(a.features, b.features) and a.clip == b.clip


def test_a_store_named_with_features_is_never_shrunk_or_rebuilt(tmp_path, demo_models, small_dicts, capsys):
    """train-head --features over a sub-folder of the store's folder (0.3.0 rebuilt the store of 7 as one of 2)."""
    import hashlib
    import shutil
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data / "sub", ignore=shutil.ignore_patterns("*.csv"))
    for path in sorted((data / "sub").glob("*.png"))[2:]:
        path.rename(data / path.name)
    base = str(demo_config(tmp_path, demo_models, small_dicts))
    store = tmp_path / "train.safetensors"
    assert main(["index", "--config", base, "--images", str(data), "--out", str(store), "--no-progress"]) == 0
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,prompt\n" + "".join(f"{p.name},a picture\n" for p in (data / "sub").glob("*.png")))
    assert main(["train-head", "--config", base, "--pairs", str(pairs), "--images", str(data / "sub"), "--out",
                 str(tmp_path / "head"), "--features", str(store), "--epochs", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --features {store}: it holds the features of {data.resolve()}, and these images are under "
        f"{(data / 'sub').resolve()}; a command that reads a store never shrinks it: name another --features file")
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    (data / "sub" / sorted(p.name for p in (data / "sub").glob("*.png"))[0]).unlink()  # an image leaves the folder
    pairs.write_text("image,prompt\n" + "".join(f"{p.relative_to(data)},a picture\n" for p in data.rglob("*.png")))
    assert main(["build-bank", "--config", base, "--pairs", str(pairs), "--images", str(data), "--out",
                 str(tmp_path / "bank"), "--features", str(store), "--no-progress"]) == 0
    from interrogator.tools.features import FeatureStore
    assert len(FeatureStore.load(store)) == 7  # read, never shrunk


def test_pairs_outside_the_image_folder_are_one_line_before_indexing(tmp_path, demo_models, small_dicts, capsys):
    base = str(demo_config(tmp_path, demo_models, small_dicts))
    inside = tmp_path / "inside"
    inside.mkdir()
    images = sorted(SAMPLES.glob("*.png"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image,prompt\n{images[0]},a\n{images[1]},b\n")
    for command in ("train-head", "build-bank"):
        assert main([command, "--config", base, "--pairs", str(pairs), "--images", str(inside), "--out",
                     str(tmp_path / command), "--no-progress"]) == 2
        assert capsys.readouterr().err.strip() == (f"error: --pairs: the image {images[0]} is not under --images "
                                                   f"{inside.resolve()}; give the folder that holds every image of "
                                                   f"the pairs")
        assert not (tmp_path / command / "features.safetensors").exists()


def test_pairs_in_a_hidden_folder_are_one_line_not_undecodable(tmp_path, demo_models, small_dicts, capsys):
    """The listing skips hidden folders; a pair there is named before indexing, never counted undecodable."""
    base = str(demo_config(tmp_path, demo_models, small_dicts))
    data = tmp_path / "data"
    (data / ".thumbs").mkdir(parents=True)
    images = sorted(SAMPLES.glob("*.png"))[:3]
    for n, image in enumerate(images):
        shutil.copy(image, data / (".thumbs" if n == 0 else "") / image.name)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,prompt\n" + "".join(
        f"{'.thumbs/' if n == 0 else ''}{p.name},a picture\n" for n, p in enumerate(images)))
    assert main(["build-bank", "--config", base, "--pairs", str(pairs), "--images", str(data), "--out",
                 str(tmp_path / "bank"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --pairs: the image {data.resolve() / '.thumbs' / images[0].name} is never read: its folder "
        f".thumbs starts with '.', and hidden files and folders are never listed; move or rename it")
    assert not (tmp_path / "bank").exists()
