import io

import numpy as np
import pytest
from PIL import Image

from interrogator.core.errors import ConfigError
from interrogator.core.identity import file_digest
from helpers import list_images
from interrogator.core.images import load_image
from interrogator.core.batches import ImageDataset, Transforms, image_batches, split_batches


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_folder_rule(tmp_path):
    for name in ["b.png", "a.JPG", "c.webp", ".hidden.png", "notes.txt", "labels.csv"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [f.image_id for f in list_images(tmp_path)] == ["a", "b", "c"]


def test_duplicate_stems_name_both_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="two images share the id 'a': a.jpg and a.png"):
        list_images(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ConfigError, match=f"config key 'data_path': no images .* in {tmp_path}"):
        list_images(tmp_path)
    with pytest.raises(ConfigError, match="config key 'data_path': not a folder"):
        list_images(tmp_path / "nope")


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"), ("I;16", "PNG"),
                                       ("CMYK", "JPEG"), ("P", "GIF"), ("1", "PNG")])
def test_modes_become_rgb(tmp_path, mode, fmt):
    img = Image.new(mode, (8, 6))
    rgb = load_image(save(img, tmp_path / f"x.{fmt.lower()}", format=fmt))
    assert rgb.mode == "RGB" and rgb.size == (8, 6)


def test_alpha_is_flattened_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    img.putpixel((0, 0), (10, 20, 30, 255))
    rgb = np.asarray(load_image(save(img, tmp_path / "a.png")))
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[1, 1]) == (255, 255, 255)


def test_sixteen_bit_grey_keeps_its_brightness(tmp_path):
    img = Image.new("I;16", (4, 4), 65535 // 2)
    assert 120 <= np.asarray(load_image(save(img, tmp_path / "g.png")))[0, 0, 0] <= 135


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (8, 4))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90
    assert load_image(save(img, tmp_path / "o.jpg", exif=exif)).size == (4, 8)


def test_animation_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(tmp_path / "a.gif"))[0, 0, 0] > 200


def test_large_image_is_downscaled(tmp_path):
    rgb = load_image(save(Image.new("RGB", (5000, 2500)), tmp_path / "big.png"))
    assert rgb.size == (2048, 1024)


@pytest.mark.parametrize("content", [b"", b"hello, I am text", None])
def test_undecodable_files_raise_value_error_with_reason(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is None:  # a truncated PNG
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
        content = buf.getvalue()[:60]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(path)


def test_dataset_marks_failed_items_with_blank_pixels(tmp_path):
    save(Image.new("RGB", (16, 16)), tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    to_tensor = lambda im: __import__("torch").ones(3, 4, 4)
    ds = ImageDataset(list_images(tmp_path), to_tensor, to_tensor)
    assert ds[0].error == "" and ds[0].caption_pixels.sum() == 48
    assert ds[0].digest == file_digest(tmp_path / "a.png")
    item = ds[1]
    assert item.index == 1 and item.caption_pixels.shape == (3, 4, 4) and item.caption_pixels.sum() == 0
    assert "cannot decode" in item.error and item.digest == file_digest(tmp_path / "b.png")


def test_decompression_bomb_limit_stays_on(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="refused by the decompression-bomb limit"):
        load_image(save(Image.new("RGB", (64, 64)), tmp_path / "bomb.png"))  # 4096 px > 2 x limit
    assert load_image(save(Image.new("RGB", (40, 40)), tmp_path / "big.png")).size == (40, 40)  # warning level only


def test_batches_are_split_over_the_workers():
    assert [[len(p) for p in b] for b in split_batches([list(range(20))], 3)] == [[8, 8, 4]]
    assert [len(p) for p in split_batches([list(range(512))], 15)[0]] == [35] * 14 + [22]
    assert split_batches([[5, 6, 7], list(range(8, 24))], 2, min_part=4) == [[[5, 6, 7]], [list(range(8, 16)), list(range(16, 24))]]


def test_loader_workers_give_the_same_batches_as_one_process(tmp_path):
    import torch
    for i in range(13):
        save(Image.new("RGB", (8 + i, 8), (i * 10, 0, 0)), tmp_path / f"{i:02d}.png")
    (tmp_path / "05.png").write_bytes(b"not a png")
    to_tensor = lambda im: torch.tensor(np.asarray(im.resize((4, 4)), dtype=np.float32)).permute(2, 0, 1)
    files, transforms = list_images(tmp_path), Transforms(to_tensor, to_tensor)
    batches = [list(range(0, 10)), list(range(10, 13))]
    serial = list(image_batches(files, batches, transforms, 0, pin_memory=False))
    parallel = list(image_batches(files, batches, transforms, 2, pin_memory=False))  # batch 0 in parts of 8 and 2
    assert len(serial) == len(parallel) == 2
    for one, many in zip(serial, parallel):
        assert one.indices == many.indices and one.errors == many.errors
        assert torch.equal(one.caption_pixels, many.caption_pixels) and torch.equal(one.clip_pixels, many.clip_pixels)
    assert [b.indices for b in parallel] == batches
    assert parallel[0].ok == [0, 1, 2, 3, 4, 6, 7, 8, 9] and "cannot decode" in parallel[0].errors[5]
    assert torch.equal(parallel[0].decoded(parallel[0].clip_pixels), parallel[0].clip_pixels[parallel[0].ok])
    assert parallel[1].decoded(parallel[1].clip_pixels) is parallel[1].clip_pixels  # all decoded: no copy


def test_jfif_files_are_images_and_an_unlistable_folder_is_named(tmp_path):
    """A .jfif decodes like a .jpg; a folder whose path the system refuses (over 4,096 bytes) is named among
    the skipped entries, not left out without a word."""
    import os
    from interrogator.core.images import scan_tree
    save(Image.new("RGB", (16, 16), (200, 0, 0)), tmp_path / "photo.jfif", format="JPEG")
    assert load_image(tmp_path / "photo.jfif").size == (16, 16)
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(20):  # 20 x 251 bytes: past PATH_MAX, made through directory descriptors
        os.mkdir("d" * 250, dir_fd=fd)
        deeper = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    with open(os.open("deep.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as handle:
        handle.write((tmp_path / "photo.jfif").read_bytes())
    os.close(fd)
    scan = scan_tree(tmp_path)
    assert [f.image_id for f in scan.files] == ["photo.jfif"]
    assert len(scan.skipped) == 1 and scan.skipped[0][1] == "cannot list: File name too long"


def test_the_plans_stem_is_paths_stem_for_every_short_file_path():
    """Every relative file path of up to 6 characters over a, b, '.' and '/' (the plan takes the stems of millions
    without making Path objects)."""
    import itertools
    from pathlib import Path
    from interrogator.core.plan import stem
    checked = 0
    for k in range(1, 7):
        for letters in itertools.product("ab./", repeat=k):
            path = "".join(letters)
            if path.startswith("/") or path.endswith("/") or "//" in path or path.rsplit("/", 1)[-1] == "." != path:
                continue  # not a file's path ("a/." is the folder a)
            assert stem(path) == Path(path).stem, path
            checked += 1
    assert checked > 1500


def test_check_names_ascii_shortcut_refuses_exactly_what_the_full_rule_refuses():
    """check_name passes a printable ASCII name without its per-character rule: over all of ASCII, a character
    is unprintable exactly where that rule refuses it."""
    import unicodedata
    from interrogator.core.images import LINE_BREAKS, check_name
    for code in range(128):
        c = chr(code)
        refused = c in LINE_BREAKS or unicodedata.category(c) in ("Cc", "Cs")
        assert refused == (not c.isprintable()), code
        if refused:
            with pytest.raises(ConfigError, match="holds the control character"):
                check_name(f"a{c}b", "folder")
        else:
            check_name(f"a{c}b", "folder")


def test_the_listings_bare_name_rule_is_the_path_rule_for_every_short_name():
    """unlisted() decides a bare name (what a folder listing meets millions of times) without a Path: over every
    name of up to 5 pieces of a, '.', png, JPG, jpeg, x and é, it says what the Path-based rule says."""
    import itertools
    from pathlib import Path
    from interrogator.core.config import IMAGE_EXTENSIONS
    from interrogator.core.images import unlisted
    checked = 0
    for k in range(1, 6):
        for pieces in itertools.product(["a", ".", "png", "JPG", "jpeg", "x", "é"], repeat=k):
            name = "".join(pieces)
            if name in (".", ".."):
                continue
            hidden = name.startswith(".")
            expected = "hidden" if hidden else None if Path(name).suffix.lower() in IMAGE_EXTENSIONS else "extension"
            got = unlisted(name)
            assert (got is None and expected is None) or (got is not None and expected in got.replace(
                "starts with '.'", "hidden")), name
            checked += 1
    assert checked > 15000
