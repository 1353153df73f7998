"""The plan's compact listing (core/listing.py) against the plain lists it replaces: every item, slice and
duplicate the same, and a shard's members read again exactly as the plan's listing read them."""
import random
import tarfile
from pathlib import Path

import pytest

from interrogator.core.errors import ConfigError
from interrogator.core.images import scan_folder, scan_tree
from interrogator.core.listing import ShardListing, Strings, first_duplicate, shard_counts, shard_members
from interrogator.core.samples import ImageFile, tar_samples

WORDS = ["", "a", "0000205", "é", "日本語.png", "a/b/c.jpg", "x" * 300, "\U0001F600", "tab\tname"]


def test_strings_hold_every_string_and_slice_like_a_list():
    rng = random.Random(0)
    items = [rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(400)]
    strings = Strings.of(items)
    assert len(strings) == 400 and list(strings) == items and strings == items and items == strings
    assert tuple(items) == strings and strings != items[:-1] and strings != "abc"
    for _ in range(300):
        lo, hi = rng.randrange(-450, 450), rng.randrange(-450, 450)
        view = strings[lo:hi]
        assert list(view) == items[lo:hi] and len(view) == len(items[lo:hi])
        if len(view):
            k = rng.randrange(-len(view), len(view))
            assert view[k] == items[lo:hi][k]
            assert list(view[1:3]) == items[lo:hi][1:3]
    assert strings[::3] == items[::3] and strings[-1] == items[-1]
    with pytest.raises(IndexError):
        strings[400]
    with pytest.raises(IndexError):
        strings[10:20][10]


def test_first_duplicate_is_brute_forces_first_pair():
    rng = random.Random(1)
    for trial in range(300):
        items = [str(rng.randrange(40 if trial % 2 else 4000)) for _ in range(rng.randrange(0, 60))]
        expected = None
        for second, item in enumerate(items):
            if item in items[:second]:
                expected = (items.index(item), second)
                break
        assert first_duplicate(Strings.of(items)) == expected == first_duplicate(items)


def test_first_duplicate_tells_equal_hashes_from_equal_ids():
    assert hash(-1) == hash(-2)  # CPython: -1 is no hash, so both hash to -2
    assert first_duplicate([-1, 5, -2]) is None
    assert first_duplicate([-1, 5, -2, 7, -1]) == (0, 4)


def test_a_folder_listing_is_the_sorted_image_files(tmp_path):
    rng = random.Random(2)
    names = {f"{rng.randrange(10**6):07d}{rng.choice(['', '.x', '-b'])}.{rng.choice(['png', 'jpg', 'webp'])}"
             for _ in range(300)}
    names = {n for n in names if not any(Path(m).stem == Path(n).stem and m != n for m in names)}
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    files = scan_folder(tmp_path).files
    expected = sorted((ImageFile(Path(n).stem, tmp_path / n) for n in names), key=lambda f: f.image_id)
    assert list(files) == expected and files == expected
    assert [files[i] for i in range(len(files))] == expected
    assert list(files[17:101]) == expected[17:101] and files[-1] == expected[-1]


def test_a_tree_listing_keeps_relative_paths(tmp_path):
    for relative in ["b/x.png", "a.png", "b/c/y.jpg", "b/a.png"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    files = scan_tree(tmp_path).files
    assert list(files) == [ImageFile(r, tmp_path / r) for r in ["a.png", "b/a.png", "b/c/y.jpg", "b/x.png"]]


def shards(folder: Path, sizes):
    paths, start = [], 0
    for n, size in enumerate(sizes):
        path = folder / f"{n:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for k in range(start, start + size):
                for ext in ("jpg", "txt"):
                    info = tarfile.TarInfo(f"{k:07d}.{ext}")
                    info.size = k % 7
                    tar.addfile(info, __import__("io").BytesIO(b"z" * info.size))
        paths.append(path)
        start += size
    return paths


def shard_listing(paths):
    from array import array
    starts, keys = array("q", [0]), []
    for path in paths:
        listed = tar_samples(path)
        starts.append(starts[-1] + len(listed))
        keys += [k for k, _ in listed]
    return ShardListing("tar", tuple(paths), starts, Strings.of(keys))


def test_a_shard_listing_rereads_each_shards_members_as_the_plan_listed_them(tmp_path):
    paths = shards(tmp_path, [5, 0, 3, 11, 1])
    listing = shard_listing(paths)
    expected = [ImageFile(k, p, m) for p in paths for k, m in tar_samples(p)]
    assert len(listing) == 20 and list(listing) == expected
    for lo in range(0, 21, 3):
        for hi in range(lo, 21, 4):
            window = listing[lo:hi]
            assert list(window) == expected[lo:hi] and list(window.ids) == [f.image_id for f in expected[lo:hi]]
            assert shard_counts(window) == {str(p): n for p, n in
                                           __import__("collections").Counter(str(f.path) for f in expected[lo:hi]).items()}


def test_a_shard_changed_during_the_run_is_one_line(tmp_path):
    paths = shards(tmp_path, [4, 4])
    listing = shard_listing(paths)
    shard_members.cache_clear()
    shards(tmp_path, [4, 5])  # shard 1 now holds 5 samples
    assert listing[0].image_id == "0000000"
    with pytest.raises(ConfigError, match=r"the shard .*00001.tar holds 5 samples, and held 4 when the run was "
                                          r"planned; it changed during the run: run again"):
        listing[5]


def test_listings_travel_to_loader_workers_whole(tmp_path):
    """A loader worker or a Ray task gets the listing pickled: the same items come back, windows included."""
    import pickle
    paths = shards(tmp_path, [3, 4])
    listing = shard_listing(paths)[2:6]
    back = pickle.loads(pickle.dumps(listing))
    assert list(back) == list(listing) and len(back) == 4
    (tmp_path / "f").mkdir()
    for name in ("b.png", "a.jpg", "c.webp"):
        (tmp_path / "f" / name).write_bytes(b"")
    files = scan_folder(tmp_path / "f").files[1:]
    assert list(pickle.loads(pickle.dumps(files))) == list(files) == [ImageFile("b", tmp_path / "f" / "b.png"),
                                                                       ImageFile("c", tmp_path / "f" / "c.webp")]


def test_loader_workers_get_shard_samples_whole_and_never_list_a_shard(tmp_path, monkeypatch):
    """With loader workers, the loader's own process reads each shard's headers (once: listing.shard_members)
    and hands each worker its files whole: a worker that listed a shard would fail this test."""
    import io
    import os
    import numpy as np
    import torch
    from PIL import Image
    import interrogator.core.listing as listing_module
    from interrogator.core.batches import Transforms, image_batches
    paths = []
    for n in range(3):
        paths.append(tmp_path / f"{n:05d}.tar")
        with tarfile.open(paths[-1], "w") as tar:
            for k in range(n * 6, n * 6 + 6):
                buffer = io.BytesIO()
                Image.new("RGB", (8, 8), (k * 9, 0, 0)).save(buffer, format="PNG")
                info = tarfile.TarInfo(f"{k:07d}.png")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    files = shard_listing(paths)
    parent, listed = os.getpid(), listing_module.tar_listing

    def only_here(shard):
        if os.getpid() != parent:
            raise AssertionError(f"a loader worker listed {shard}")
        return listed(shard)
    monkeypatch.setattr(listing_module, "tar_listing", only_here)
    shard_members.cache_clear()
    to_tensor = lambda im: torch.tensor(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
    batches = [range(0, 6), range(6, 12), range(12, 18)]
    parallel = list(image_batches(files, batches, Transforms(clip=to_tensor), 2, min_part=2))
    serial = list(image_batches(files, batches, Transforms(clip=to_tensor), 0))
    for one, many in zip(serial, parallel):
        assert one.indices == many.indices and one.errors == many.errors == [""] * 6
        assert torch.equal(one.clip_pixels, many.clip_pixels)
    assert [b.clip_pixels[:, 0, 0, 0].tolist() for b in parallel] == [[k * 9.0 for k in b] for b in batches]
    assert shard_members.cache_info().misses == 3  # each shard's headers read once, here
