"""The training-set workspace through its API: a folder of small images with caption files, filtered, edited one
by one and in batches, undone across restarts, counted, and exported to the files trainers read."""
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from interrogator.core.config import load_config
from interrogator.core.owned import record_written
from interrogator.workspace.edits import Edit, EditRefused
from interrogator.workspace.journal import Conflict
from interrogator.workspace.view import Query
from interrogator.workspace.workspace import Workspace

from helpers import CAPTIONS, make_folder, snapshot

@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "set")


@pytest.fixture
def space(folder, tmp_path):
    return Workspace(load_config(data_path=str(folder)), tmp_path / "work")


def names(entries):
    return [e.name for e in entries]


def test_a_page_shows_every_image_with_its_caption_and_a_thumbnail_made_once(space, tmp_path):
    page = space.page(Query(), 1, size=4)
    assert (page.number, page.pages, page.total) == (1, 2, 7)
    assert [(c.name, c.text) for c in page.cards] == [(n, CAPTIONS[n]) for n in ("a.png", "b.png", "c.png", "d.png")]
    for card in page.cards:
        assert card.thumb.parent.parent == tmp_path / "work" / "thumbs"
        assert Image.open(card.thumb).size == (40, 30)  # small images are not enlarged
    stamps = [c.thumb.stat().st_mtime_ns for c in page.cards]
    again = space.page(Query(), 1, size=4)
    assert [c.thumb for c in again.cards] == [c.thumb for c in page.cards]
    assert [c.thumb.stat().st_mtime_ns for c in again.cards] == stamps
    last = space.page(Query(), 9, size=4)
    assert last.number == 2 and [c.name for c in last.cards] == ["e.png", "f.png", "g.jpg"]
    assert last.cards[1].text is None and last.cards[0].text == ""


def test_filters_and_orders(space, folder):
    def shown(**words):
        return names(space.select(Query(**words)))
    assert shown(tag="solo") == ["a.png", "b.png", "g.jpg"]
    assert shown(without_tag="solo") == ["c.png", "d.png", "e.png", "f.png"]
    assert shown(contains="CAT") == ["c.png"]
    assert shown(tag="cat") == ["c.png"]  # a whole tag, not 'a photo of a cat'
    assert shown(excludes="o") == ["e.png", "f.png"]
    assert shown(state="missing") == ["f.png"] and shown(state="empty") == ["e.png"]
    assert shown(rating="explicit") == ["d.png"]
    assert shown(sort="tags", descending=True)[:2] == ["b.png", "c.png"]
    assert shown(sort="length") == ["e.png", "f.png", "g.jpg", "a.png", "b.png", "d.png", "c.png"]
    record_written([folder / "a.txt", folder / "b.txt"])  # as a run records the caption files it wrote
    (folder / "b.txt").write_text("1boy, fixed by hand\n", encoding="utf-8")
    space.reload()
    assert shown(state="changed") == ["b.png"]
    with pytest.raises(Exception, match=r"^filter: expected one of all, captioned, missing, empty, changed, got 'x'$"):
        shown(state="x")


@pytest.mark.parametrize("edit, before, after", [
    (Edit("add", "sks", at="start"), "1girl, solo", "sks, 1girl, solo"),
    (Edit("add", "sks", at="start"), "sks, 1girl", "sks, 1girl"),
    (Edit("add", "sks", at="end"), "1girl,solo", "1girl,solo, sks"),
    (Edit("add", "sks"), "", "sks"),
    (Edit("remove-tag", "solo"), "solo, 1girl,  solo , hat", "1girl, hat"),
    (Edit("remove-tag", "solo"), "1girl,  hat", "1girl,  hat"),
    (Edit("replace-tag", "hat", "cap"), "hat, red hat, hat", "cap, red hat, cap"),
    (Edit("replace-tag", "hat", ""), "hat, red hat", "red hat"),
    (Edit("replace-text", "cat", "dog"), "a cat, cats", "a dog, dogs"),
    (Edit("sort-tags"), "b, a, c", "a, b, c"),
    (Edit("dedupe-tags"), "a, b, a, c, b", "a, b, c"),
    (Edit("move-to-front", "hat, solo"), "1girl, solo, smile, hat", "hat, solo, 1girl, smile"),
    (Edit("move-to-front", "missing"), "1girl, solo", "1girl, solo"),
])
def test_each_edit(edit, before, after):
    assert edit.apply(before, ", ") == after


def test_an_edit_without_its_text_is_one_line():
    with pytest.raises(EditRefused, match=r"^edit remove-tag: give the text$"):
        Edit("remove-tag", " ").check()
    with pytest.raises(EditRefused, match=r"^edit: expected one of add, remove-tag, .*, got 'x'$"):
        Edit("x").check()


def test_saving_one_caption_writes_it_and_a_change_on_disk_since_is_not_overwritten(space, folder):
    shown = space.entry("a.png")
    space.save("a.png", "1girl, solo, smile, blue sky", shown.version)
    assert (folder / "a.txt").read_bytes() == b"1girl, solo, smile, blue sky\n"
    space.save("f.png", "new caption", space.entry("f.png").version)  # no caption file yet: made
    assert (folder / "f.txt").read_bytes() == b"new caption\n"
    shown = space.entry("b.png")
    (folder / "b.txt").write_bytes(b"edited elsewhere\n")  # another tab, an editor
    before = snapshot(folder)
    with pytest.raises(Conflict, match=r"^b\.png: its caption file was changed on disk since it was shown; "
                                       r"nothing was written \(reload, then edit again\)$"):
        space.save("b.png", "mine", shown.version)
    assert snapshot(folder) == before


def test_a_batch_edit_changes_exactly_the_matching_files_and_undo_puts_every_byte_back(space, folder, tmp_path):
    original = snapshot(folder)
    plan = space.preview(Edit("remove-tag", "solo"), query=Query(tag="solo"))
    assert [c.name for c in plan.changes] == ["a.png", "b.png", "g.jpg"]
    assert plan.summary() == "remove the tag 'solo': 3 of 3 caption files change"
    assert plan.sample(1) == [("a.png", "1girl, solo, smile", "1girl, smile")]
    assert snapshot(folder) == original  # a preview writes nothing
    assert space.apply(plan) == 3
    after = snapshot(folder)
    assert {n for n in after if after[n] != original[n]} == {"a.txt", "b.txt", "g.txt"}
    assert (after["a.txt"], after["b.txt"], after["g.txt"]) == (b"1girl, smile\n", b"1boy, hat\n", b"hat\n")
    assert space.undo() == "remove the tag 'solo' (3 files)"
    assert snapshot(folder) == original
    again = Workspace(load_config(data_path=str(folder)), tmp_path / "work")  # a restart
    assert again.redo() == "remove the tag 'solo' (3 files)" and snapshot(folder) == after
    assert again.undo() and snapshot(folder) == original
    assert again.undo() is None and snapshot(folder) == original


def test_undo_of_a_file_changed_since_is_refused_and_writes_nothing(space, folder):
    space.apply(space.preview(Edit("add", "sks"), names=["a.png", "b.png"]))
    (folder / "b.txt").write_bytes(b"changed by hand\n")
    before = snapshot(folder)
    with pytest.raises(Conflict, match=r"^b\.png: its caption file was changed on disk"):
        space.undo()
    assert snapshot(folder) == before


def test_a_batch_with_one_file_changed_since_the_preview_writes_nothing(space, folder):
    plan = space.preview(Edit("sort-tags"))
    (folder / "d.txt").write_bytes(b"zebra, apple\n")
    before = snapshot(folder)
    with pytest.raises(Conflict, match=r"^d\.png: "):
        space.apply(plan)
    assert snapshot(folder) == before


def test_a_write_cut_short_is_still_undone(space, folder):
    """The journal keeps a write before its files change: a write killed after one file is undone whole."""
    original = snapshot(folder)
    plan = space.preview(Edit("add", "sks"), names=["a.png", "b.png"])
    space.journal.record("add (cut short)", plan.changes)
    (folder / "a.txt").write_bytes(plan.changes[0].new)  # the kill came before b.txt
    assert space.undo() == "add (cut short)" and snapshot(folder) == original


def test_the_tag_table_counts_equal_a_count_from_the_files(space, folder):
    stats = space.stats()
    counted = {}
    for path in folder.glob("*.txt"):
        for tag in {t.strip() for t in path.read_text(encoding="utf-8").split(",") if t.strip()}:
            counted[tag] = counted.get(tag, 0) + 1
    assert {t.tag: t.count for t in stats.tags} == counted
    assert stats.tags[0].tag == "solo" and stats.tags[0].count == 3 and stats.tags[0].share == 3 / 6
    assert (stats.images, stats.captions, stats.missing, stats.empty) == (7, 6, 1, 1)
    from open_clip.tokenizer import SimpleTokenizer
    simple = SimpleTokenizer()
    texts = [CAPTIONS[n] for n in sorted(CAPTIONS) if CAPTIONS[n] is not None]
    assert list(stats.tokens) == [len(simple.encode(t)) + 2 for t in texts]
    assert space.tokens("word " * 80) == 82 and stats.over == 0
    assert space.vocabulary(["solo", "zzz"])[:2] == ["solo", "hat"] and space.vocabulary(["zzz"])[-1] == "zzz"


def test_the_hf_export_is_read_by_datasets_imagefolder(space, folder, tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is not installed")
    path = space.export("hf")
    assert path == folder / "metadata.jsonl"
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))  # never the user's ~/.cache
    got = sorted(zip([Path(i.filename).name for i in loaded["image"]], loaded["text"]))
    assert got == sorted((n, t or "") for n, t in CAPTIONS.items())
    assert space.export("hf") == path  # its own export, unchanged: replaced


def kohya_merge(train_data_dir: Path, caption_extension: str, field: str) -> str:
    """merge_captions_to_metadata.py's (merge_dd_tags_to_metadata.py's for "tags") logic, without --full_path:
    every image, its caption file read and stripped, keyed by stem, dumped with indent=2."""
    metadata = {}
    for image_path in sorted(p for p in train_data_dir.iterdir() if p.suffix in (".png", ".jpg")):
        caption = image_path.with_suffix(caption_extension).read_text(encoding="utf-8").strip()
        metadata.setdefault(image_path.stem, {})[field] = caption
    return json.dumps(metadata, indent=2)


@pytest.mark.parametrize("field", ["caption", "tags"])
def test_the_kohya_export_equals_what_its_merge_scripts_write(space, folder, tmp_path, field):
    (folder / "f.png").unlink()  # kohya's scripts need a caption file for every image
    space.reload()
    path = space.export("kohya", str(tmp_path / "meta.json"), kohya_field=field)
    assert path.read_text(encoding="utf-8") == kohya_merge(folder, ".txt", field)


def test_the_csv_export_and_the_paths_an_export_refuses(space, folder, tmp_path):
    import pandas as pd
    table = pd.read_csv(space.export("csv", str(tmp_path / "c.csv")), keep_default_na=False)
    assert table.to_dict("list") == {"file_name": list(CAPTIONS), "text": [t or "" for t in CAPTIONS.values()]}
    before = snapshot(folder)
    with pytest.raises(Exception, match=r"^the csv export .*a\.txt is the caption file of a\.png: this tool never "):
        space.export("csv", str(folder / "a.txt"))
    (tmp_path / "mine.csv").write_text("the user's\n")
    with pytest.raises(Exception, match=r"exists and was not written by this tool"):
        space.export("csv", str(tmp_path / "mine.csv"))
    assert snapshot(folder) == before and (tmp_path / "mine.csv").read_text() == "the user's\n"


def test_a_recursive_folder_with_a_txt_dir_keeps_its_sub_folders(tmp_path):
    folder = tmp_path / "set"
    make_folder(folder / "cats", {"a.png": None, "b.png": None})
    make_folder(folder / "dogs", {"a.png": None})
    (tmp_path / "captions" / "cats").mkdir(parents=True)
    (tmp_path / "captions" / "cats" / "a.caption").write_text("tabby, sitting\n")
    config = load_config(data_path=str(folder), recursive=True, txt_dir=str(tmp_path / "captions"),
                         txt_extension=".caption")
    space = Workspace(config, tmp_path / "work")
    assert [(e.name, e.text) for e in space.entries] == [("cats/a.png", "tabby, sitting"), ("cats/b.png", None),
                                                         ("dogs/a.png", None)]
    space.save("dogs/a.png", "a dog", space.entry("dogs/a.png").version)
    assert (tmp_path / "captions" / "dogs" / "a.caption").read_text() == "a dog\n"
    assert sorted(p.name for p in (folder / "dogs").iterdir()) == ["a.png"]  # nothing beside the images
    kohya = json.loads(space.export("kohya", str(tmp_path / "k.json")).read_text())
    assert kohya == {str(folder / "cats" / "a.png"): {"caption": "tabby, sitting"},
                     str(folder / "dogs" / "a.png"): {"caption": "a dog"}}  # full paths, as kohya's --full_path


def test_the_app_refuses_caption_files_outside_the_allowed_folders(tmp_path):
    from interrogator.app.paths import PathRefused, Roots
    from interrogator.app.service import Service
    folder = make_folder(tmp_path / "allowed" / "set")
    config = load_config(data_path=str(folder), txt_dir=str(tmp_path / "elsewhere"))
    service = Service(config, Roots.of(tmp_path / "allowed"), work=str(tmp_path / "work"))
    with pytest.raises(PathRefused, match=rf"^caption file: {tmp_path / 'elsewhere'}/a\.txt is outside the allowed "):
        service.workspace(str(folder))
    link = tmp_path / "allowed" / "linked"
    link.mkdir()
    (link / "x.png").symlink_to(folder.parent.parent / "allowed" / "set" / "a.png")
    outside = make_folder(tmp_path / "outside", {"o.png": "secret"})
    (link / "y.png").symlink_to(outside / "o.png")
    with pytest.raises(PathRefused, match=rf"^folder image: {link / 'y.png'} is outside the allowed "):
        service.workspace(str(link))
