"""The WD-style ONNX tagger: selection and cleaning against hand-computed references, the taggers' own
preprocessing, the exported miniature model run by onnxruntime, and the missing CUDA provider's warning."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from interrogator.core.errors import ModelLoadError
from interrogator.core.record import ImageTags
from interrogator.models.tagger import TagLabels, TagRules, input_layout, mcut_threshold, providers, read_tag_labels, square_on_white

LABELS = TagLabels(
    ("general", "sensitive", "questionable", "explicit", "1girl", "solo", "long_hair", "^_^", "hat_(object)",
     "blue_sky", "hatsune_miku", "kirisame_marisa"),
    ("rating",) * 4 + ("general",) * 6 + ("character",) * 2)
#                  general sens  quest expl  1girl solo  long  ^_^   hat   sky   miku  marisa
SCORES = np.array([0.20, 0.70, 0.05, 0.01, 0.95, 0.90, 0.60, 0.60, 0.40, 0.15, 0.88, 0.30], dtype=np.float32)


def select(**rules):
    return TagRules(**rules).select(LABELS, SCORES)


def names(tags: ImageTags):
    return tags.names()


def test_thresholds_per_category_and_the_rating_apart():
    out = select(threshold=0.5, character_threshold=0.85)
    # character first; general by score, the tie (long_hair, ^_^ at 0.60) in the CSV's order; kaomoji kept
    assert names(out) == ["hatsune miku", "1girl", "solo", "long hair", "^_^"]
    assert out.tags[0] == ("hatsune miku", float(np.float32(0.88)))
    assert (out.rating, out.rating_score) == ("sensitive", float(np.float32(0.70)))
    assert names(select(threshold=0.35, character_threshold=0.9)) == ["1girl", "solo", "long hair", "^_^",
                                                                      "hat (object)"]


def test_mcut_cuts_at_the_largest_gap():
    # general scores sorted: .95 .90 .60 .60 .40 .15; gaps .05 .30 0 .20 .25: the largest, (.90+.60)/2
    assert mcut_threshold(SCORES[4:10]) == pytest.approx((0.90 + 0.60) / 2)
    assert names(select(mcut=True, character_threshold=0.99)) == ["1girl", "solo"]
    assert mcut_threshold(np.array([0.4])) == 1.0


def test_top_k_keeps_the_best_general_tags():
    assert names(select(threshold=0.35, max_tags=2)) == ["hatsune miku", "1girl", "solo"]


def test_undesired_as_written_or_cleaned_then_replacements_then_escape():
    out = select(threshold=0.35, undesired=("long_hair", "solo"), replacements=(("1girl", "one girl"),),
                 escape=True)
    assert names(out) == ["hatsune miku", "one girl", "^_^", "hat \\(object\\)"]


def test_tags_first_come_first_in_their_order():
    out = select(threshold=0.35, first=("long hair", "hat (object)", "absent"))
    assert names(out) == ["long hair", "hat (object)", "hatsune miku", "1girl", "solo", "^_^"]


def test_square_on_white_pads_resizes_and_turns_bgr():
    image = Image.new("RGB", (4, 2), (10, 20, 30))
    out = square_on_white(image, 4)
    want = np.full((4, 4, 3), 255, dtype=np.float32)
    want[1:3, :, :] = (30, 20, 10)  # centred rows, BGR
    assert out.dtype == np.float32 and np.array_equal(out, want)
    assert square_on_white(Image.new("RGB", (3, 6), (0, 0, 0)), 2).shape == (2, 2, 3)


class FakeInput:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeSession:
    def __init__(self, shape):
        self.shape = shape

    def get_inputs(self):
        return [FakeInput("x", self.shape)]


def test_the_layout_comes_from_the_model_input():
    assert input_layout(FakeSession(["b", 448, 448, 3])) == ("x", 448, True)
    assert input_layout(FakeSession([1, 3, 224, 224])) == ("x", 224, False)
    with pytest.raises(ModelLoadError, match=r"has shape \['b', 10\]; expected"):
        input_layout(FakeSession(["b", 10]))


def test_the_onnx_tagger_gives_the_torch_model_scores_in_batches(tagger_folder):
    from interrogator.models.miniatures import TAGGER_TAGS, _TinyTagger
    from interrogator.models.tagger import load_tagger
    tagger = load_tagger(str(tagger_folder), "cpu", TagRules(threshold=0.5, character_threshold=0.5))
    assert (tagger.transform.side, tagger.transform.channels_last, tagger.input_name) == (32, True, "input_1:0")
    pictures = [Image.fromarray(np.random.RandomState(i).randint(0, 256, (20 + 7 * i, 32, 3), dtype=np.uint8))
                for i in range(5)]
    pixels = torch.stack([tagger.transform(p) for p in pictures])
    torch.manual_seed(0)
    reference = _TinyTagger(len(TAGGER_TAGS)).eval()
    with torch.no_grad():
        want = reference(pixels).numpy()
    got = tagger.scores(pixels)
    assert np.abs(got - want).max() < 1e-5
    assert tagger.tag(pixels) == [tagger.rules.select(tagger.labels, row) for row in got]
    assert [t.names() for t in tagger.tag(pixels)] == [tagger.tag(pixels[i:i + 1])[0].names() for i in range(5)]


def test_a_missing_cuda_provider_is_one_warning(monkeypatch, caplog):
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        assert providers("cuda:1") == ["CPUExecutionProvider"]
    assert [r.getMessage() for r in caplog.records] == [
        f"tagger: onnxruntime {ort.__version__} has no CUDA provider, so the tagger runs on the CPU; pip install "
        f"onnxruntime-gpu (in place of onnxruntime) to run it on the GPU"]
    caplog.clear()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers("cpu") == ["CPUExecutionProvider"] and not caplog.records


def test_a_tag_file_without_categories_is_named(tmp_path):
    bad = tmp_path / "selected_tags.csv"
    bad.write_text("tag_id,name,category,count\n1,1girl,0,5\n2,solo,7,5\n")
    with pytest.raises(ModelLoadError) as info:
        read_tag_labels(bad)
    assert str(info.value) == (f"config key 'tagger_path': {bad} line 3: expected a name and a category among "
                               f"0 (general), 4 (character), 9 (rating)")
