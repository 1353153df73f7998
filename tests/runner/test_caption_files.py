"""Caption files are the user's: their bytes are never re-encoded, a read-only one is never replaced, an empty
one gets no separator; a replacement that empties a tag drops it; a template's brackets go with their field."""
import logging

import numpy as np
import pytest

from interrogator.core.template import render
from interrogator.models.tagger import TagLabels, TagRules
from interrogator.runner.outputs import TxtWriter


def test_appending_to_a_latin1_file_keeps_its_bytes(tmp_path):
    for policy, expected in (("append", b"caf\xe9, a cat\n"), ("prepend", b"a cat, caf\xe9\n")):
        path = tmp_path / f"{policy}.txt"
        path.write_bytes(b"caf\xe9\n")
        writer = TxtWriter(policy, ", ")
        writer.write([path], ["a cat"])
        assert path.read_bytes() == expected
        TxtWriter(policy, ", ").write([path], ["a cat"])  # a rerun adds nothing
        assert path.read_bytes() == expected


def test_a_read_only_caption_file_is_kept_and_named(tmp_path, caplog):
    path = tmp_path / "a.txt"
    path.write_bytes(b"mine\n")
    path.chmod(0o444)
    try:
        for policy in ("overwrite", "append", "prepend"):
            writer = TxtWriter(policy, ", ")
            with caplog.at_level(logging.WARNING):
                writer.write([path], ["a cat"])
                counts = writer.finish()
            assert path.read_bytes() == b"mine\n" and not path.stat().st_mode & 0o222, policy
            assert counts["read-only, kept"] == 1 and counts["written"] == 0
            assert f"1 read-only caption files were kept as they are: {path}" in caplog.text
    finally:
        path.chmod(0o644)


def test_an_empty_caption_file_gets_no_leading_separator(tmp_path):
    for content in (b"", b"\n", b"  \r\n"):
        for policy in ("append", "prepend"):
            path = tmp_path / "empty.txt"
            path.write_bytes(content)
            TxtWriter(policy, ", ").write([path], ["a cat"])
            assert path.read_bytes() == b"a cat\n", (content, policy)


def test_a_replacement_that_empties_a_tag_drops_it():
    labels = TagLabels(("safe", "solo", "blue_sky", "^_^"), ("rating", "general", "general", "general"))
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    tags = TagRules(threshold=0.35, replacements=(("solo", ""), ("blue sky", "  "))).select(labels, scores)
    assert tags.names() == ["^_^"]


@pytest.mark.parametrize("template, parts, expected", [
    ("[{trigger}] {caption}", {"caption": "a cat"}, "a cat"),
    ("[{trigger}] {caption}", {"trigger": "phot", "caption": "a cat"}, "[phot] a cat"),
    ("<{trigger}> {caption}, ({tags})", {"trigger": "phot"}, "<phot>"),
    ("<{trigger}> {caption}, ({tags})", {"caption": "a cat", "tags": "sky"}, "a cat, (sky)"),
    ("{trigger}, {tags}, {caption}", {"tags": "sky", "caption": "a cat"}, "sky, a cat"),
])
def test_brackets_around_an_empty_field_drop_with_it(template, parts, expected):
    assert render(template, parts) == expected
