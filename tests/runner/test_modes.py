"""Each interrogation mode against a straightforward per-image reference (clip-interrogator 0.6.0's logic,
written out image by image here), on the demo models; and the label merge."""
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO
from interrogator.core.config import load_config, replace
from helpers import demo_config, list_images
from interrogator.core.batches import ImageDataset, collate
from interrogator.runner.labels import LabelCache, load_tables
from interrogator.runner.pipeline import run

BATCH = 4


@pytest.fixture(scope="module")
def mode_dicts(tmp_path_factory, small_dicts):
    folder = tmp_path_factory.mktemp("mode_dicts")
    for name in ("mediums", "movements", "flavors"):
        shutil.copy(small_dicts / f"{name}.txt", folder)
    shutil.copy(REPO / "dicts" / "negative.txt", folder)
    artists = (REPO / "dicts" / "artists.txt").read_text(encoding="utf-8").splitlines()[:300]
    (folder / "artists.txt").write_text("\n".join(artists) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory, demo_models, mode_dicts):
    folder = tmp_path_factory.mktemp("modes")
    return load_config(demo_config(folder, demo_models, mode_dicts, "c.json", batch_size=BATCH, max_flavors=6,
                                   min_flavors=2, intermediate_count=48))


@pytest.fixture(scope="module")
def clip(base):
    from interrogator.models.clip import load_clip
    return load_clip(base.clip_model, base.clip_path, "cpu", torch.float32)


def features_of_batches(clip, config):
    """The CLIP features of each image as the pipeline computes them (the same batches of BATCH)."""
    files = list_images(config.data_path)
    out = []
    for i in range(0, len(files), BATCH):
        part = files[i:i + BATCH]
        batch = collate([ImageDataset(part, None, clip.preprocess)[j] for j in range(len(part))])
        out += list(clip.encode_images(batch.clip_pixels).float())
    return out


# ---- the reference: one image at a time ------------------------------------------------------
def ranked(table, feature, k, reverse=False):
    scores = table.embeddings.float() @ feature
    order = torch.sort(-scores if reverse else scores, descending=True, stable=True).indices
    return [table.labels[i] for i in order[:k].tolist()]


def fills_context(clip, text):
    return clip.count_tokens([text])[0] >= clip.context_length


def truncate(clip, text):
    parts = text.split(", ")
    kept = parts[0]
    for part in parts[1:]:
        if fills_context(clip, kept + part):
            break
        kept += ", " + part
    return kept


def sim(clip, feature, text):
    return float(clip.encode_labels([text]).float()[0] @ feature)


def top_text(clip, feature, texts, reverse=False):
    scores = clip.encode_labels(texts).float() @ feature
    return texts[int(torch.argmax(-scores if reverse else scores))]


def ref_chain(clip, feature, phrases, best_prompt, min_count, max_count, reverse=False):
    phrases = list(dict.fromkeys(phrases))
    if not best_prompt:
        best_prompt = top_text(clip, feature, phrases, reverse)
        best_sim = sim(clip, feature, best_prompt)
        phrases.remove(best_prompt)
    else:
        best_sim = sim(clip, feature, best_prompt)
    curr_prompt, curr_sim = best_prompt, best_sim
    for idx in range(max_count):
        if not phrases:
            break
        prompt = top_text(clip, feature, [f"{curr_prompt}, {f}" for f in phrases], reverse)
        flave = prompt[len(curr_prompt) + 2:]
        s = sim(clip, feature, prompt) * (-1 if reverse else 1)
        if s > best_sim:
            best_prompt, best_sim = prompt, s
        if not (s > curr_sim or idx < min_count):
            break
        curr_prompt, curr_sim = prompt, s
        if fills_context(clip, curr_prompt):
            break
        phrases.remove(flave)
    return best_prompt


def ref_classic(clip, t, cap, f, config):
    m, a, tr, v = (ranked(t[n], f, 1)[0] for n in ("mediums", "artists", "trendings", "movements"))
    flaves = ", ".join(ranked(t["flavors"], f, config.max_flavors))
    prompt = f"{cap} {a}, {tr}, {v}, {flaves}" if cap.startswith(m) else f"{cap}, {m} {a}, {tr}, {v}, {flaves}"
    return truncate(clip, prompt)


def merged(t):
    from interrogator.runner.labels import LabelTable
    names = ("artists", "flavors", "mediums", "movements", "trendings")
    return LabelTable("m", [x for n in names for x in t[n].labels], torch.cat([t[n].embeddings for n in names]))


def ref_fast(clip, t, cap, f, config):
    return truncate(clip, cap + ", " + ", ".join(ranked(merged(t), f, config.max_flavors)))


def ref_best(clip, t, cap, f, config):
    flaves = ranked(merged(t), f, config.intermediate_count)
    chained = ref_chain(clip, f, flaves, cap, config.min_flavors, config.max_flavors)
    candidates = [cap, ref_classic(clip, t, cap, f, config), ref_fast(clip, t, cap, f, config), chained]
    scores = clip.encode_labels(candidates).float() @ f
    return candidates[int(torch.argmax(scores))]


def ref_negative(clip, t, cap, f, config):
    lows = ranked(t["flavors"], f, config.intermediate_count, reverse=True)
    return ref_chain(clip, f, lows + list(t["negative"].labels), "", config.min_flavors, config.max_flavors,
                     reverse=True)


REFERENCES = {"classic": ref_classic, "fast": ref_fast, "best": ref_best, "negative": ref_negative}


@pytest.mark.parametrize("mode", ["classic", "fast", "best", "negative"])
def test_mode_equals_its_per_image_reference(base, clip, mode):
    from interrogator.runner.modes import TABLES
    config = replace(base, mode=mode)
    result = run(config, progress=False, write=False)
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache), names=TABLES[mode])
    feats = features_of_batches(clip, config)
    want = [REFERENCES[mode](clip, tables, cap, f, config) for cap, f in zip(result.captions, feats)]
    assert result.prompts == want
    assert len(set(result.prompts)) > 1


def test_caption_mode_is_the_caption_and_loads_no_clip(base, monkeypatch):
    import interrogator.models.clip as clip_module
    monkeypatch.setattr(clip_module, "load_clip", lambda *a, **k: pytest.fail("caption mode loaded CLIP"))
    result = run(replace(base, mode="caption", label_cache=None), progress=False, write=False)
    assert result.prompts == [c or base.fallback_prompt for c in result.captions]


def test_token_duplicates_are_merged_into_the_first(clip, tmp_path):
    (tmp_path / "flavors.txt").write_text("canon eos c300\nsharp focus\ncanon eos c 3 0 0\nSharp Focus\nbokeh\n")
    table = load_tables(clip, str(tmp_path), LabelCache(None), names=["flavors"])["flavors"]
    assert table.labels == ["canon eos c300", "sharp focus", "bokeh"] and table.merged == 2


def dropped_flavors(config):
    """The flavors the merge drops (each tokenizes like an earlier one)."""
    from interrogator.models.clip import load_clip, tokenize_many
    from interrogator.runner.labels import read_labels
    clip = load_clip(config.clip_model, config.clip_path, "cpu", torch.float32)
    flavors = read_labels(Path(config.dicts) / "flavors.txt")
    first = {}
    return {label for label, row in zip(flavors, tokenize_many(clip.tokenizer, flavors).tolist())
            if first.setdefault(tuple(row), label) != label}


@pytest.mark.parametrize("max_flavors", [1, 6])
def test_seed_mode_changes_only_where_a_merged_duplicate_reached_a_prompt(base, monkeypatch, tmp_path, max_flavors):
    import interrogator.runner.labels as labels
    config = replace(base, max_flavors=max_flavors, output=str(tmp_path / "merged.csv"))
    merged = run(config, progress=False)
    with monkeypatch.context() as m:  # today's tables: no merge
        m.setattr(labels, "merge_token_duplicates", lambda found, tokens: list(found))
        plain = run(replace(config, output=str(tmp_path / "plain.csv")), progress=False)
    dropped = dropped_flavors(base)
    assert "canon eos c300" in dropped  # it tokenizes like 'canon eos c 3 0 0', earlier in the list
    reached = [any(d in p.split(", ") for d in dropped) for p in plain.prompts]
    assert not any(any(d in p.split(", ") for d in dropped) for p in merged.prompts)
    for before, after, hit in zip(plain.prompts, merged.prompts, reached):
        assert (before == after) != hit
    if max_flavors == 1:  # the top flavor is the kept one of its group: no duplicate reaches a prompt
        assert not any(reached)
        assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    else:  # the demo CLIP ranks 'canon eos c 3 0 0' and 'canon eos c300' next to each other
        assert all(reached)


def test_tune_ranks_assemblies_and_its_best_row_rescores_the_same(base, tmp_path, capsys, minilm_path):
    import json
    import re
    from interrogator.commands.cli import main
    prompts = REPO / "samples" / "prompts.csv"
    values = {k: v for k, v in base.to_dict().items() if v is not None}
    values["output"] = str(tmp_path / "sub.csv")
    (tmp_path / "c.json").write_text(json.dumps(values))
    capsys.readouterr()
    assert main(["tune", "--config", str(tmp_path / "c.json"), "--prompts", str(prompts), "--modes",
                 "seed,classic,caption", "--flavor-counts", "1,3", "--show", "100", "--output",
                 str(tmp_path / "best.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    scores = [float(r.split("|")[3]) for r in rows]
    assert len(rows) > 20 and scores == sorted(scores, reverse=True)
    assert {r.split("|")[2].strip() for r in rows} >= {"caption", "classic k=3", "seed caption+medium+movement+flavors k=3"}
    # captions cached for the next tune: the caption run's batch records stay in the work folder
    assert len(list((tmp_path / ".tune").glob(".captions.csv.work/*/batch-*.safetensors"))) == 2
    assert (tmp_path / ".tune" / "features.safetensors").is_file()
    best = json.loads((tmp_path / "best.json").read_text())
    values.update(best, output=str(tmp_path / "best.csv"))
    (tmp_path / "best-config.json").write_text(json.dumps(values))
    assert main(["submit", "--config", str(tmp_path / "best-config.json"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", "--submission", str(tmp_path / "best.csv"), "--prompts", str(prompts),
                 "--embedding-path", str(minilm_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"score {scores[0]:.6f}"
