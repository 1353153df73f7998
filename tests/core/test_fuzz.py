"""Random and mutated bytes through image loading, random JSON through config validation: never a crash."""
import io
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from interrogator.core.config import load_config
from interrogator.core.errors import ConfigError
from interrogator.core.identity import file_digest
from helpers import list_images
from interrogator.core.batches import ImageDataset


def _seed_images():
    out = []
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB"), ("TIFF", "CMYK")):
        buf = io.BytesIO()
        Image.new(mode, (9, 7)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def image_bytes(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(image_bytes(), min_size=1, max_size=4))
def test_any_bytes_give_every_image_an_answer(tmp_path_factory, blobs):
    folder = tmp_path_factory.mktemp("fuzz")
    for i, blob in enumerate(blobs):
        (folder / f"img{i}.png").write_bytes(blob)
    files = list_images(folder)
    dataset = ImageDataset(files, _size_tensor, _ones)
    for index in range(len(files)):
        item = dataset[index]
        position, size, ones, error = item.index, item.caption_pixels, item.clip_pixels, item.error
        assert position == index
        assert item.digest == file_digest(files[index].path)
        if error:  # undecodable: blank pixels and a reason; the pipeline gives it the fallback prompt
            assert error.startswith(("cannot decode", "refused by the decompression-bomb limit"))
            assert size.sum() == 0 and ones.sum() == 0
        else:
            assert size.min() >= 1 and ones.sum() == 3


def _size_tensor(image):
    import torch
    assert image.mode == "RGB" and max(image.size) <= 2048
    return torch.tensor(image.size, dtype=torch.float32)


def _ones(image):
    import torch
    return torch.ones(3)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
                           max_leaves=6)
config_keys = st.sampled_from(["batch_size", "dtype", "device", "max_flavors", "clip_model", "load_in_8bit",
                               "data_path", "chunk_size", "label_cache", "nonsense", "num_beams", "low_memory"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.dictionaries(config_keys, json_values, max_size=5), json_values, st.text(max_size=40)))
def test_any_config_json_is_accepted_or_named(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(config.batch_size, int) and config.batch_size >= 1
    assert config.dtype in ("auto", "fp16", "bf16", "fp32")
