

import pytest

from conftest import REPO

from interrogator.runner.labels import clean_labels, read_labels

SOURCE = REPO.parent / "shared" / "dicts-source"

COUNTS = {"mediums": 95, "movements": 200, "flavors": 100954, "artists": 5265, "negative": 41}


@pytest.mark.parametrize("name, count", COUNTS.items())
def test_shipped_dicts_are_clean_with_known_counts(name, count):
    labels = (REPO / "dicts" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == count
    assert clean_labels(labels) == labels


@pytest.mark.skipif(not SOURCE.is_dir(), reason="../shared/dicts-source is absent")
@pytest.mark.parametrize("name", COUNTS)
def test_dicts_are_the_cleaned_source(name):
    source = (SOURCE / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert read_labels(REPO / "dicts" / f"{name}.txt") == clean_labels(source)


def test_clean_labels_keeps_first_occurrence_order():
    assert clean_labels(["  b ", "a", "", "b", "\t", "c", "a "]) == ["b", "a", "c"]


def test_license_names_clip_interrogator():
    text = (REPO / "dicts" / "LICENSE").read_text()
    assert "clip-interrogator" in text and "MIT License" in text
