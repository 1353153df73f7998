"""draw and convert-vqgan: the taming conversion against taming's own layout, pickled checkpoints, the
optimisation on the demo CLIP, reproducibility, videos, the round trip and the one-line errors."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from interrogator.commands.cli import main  # noqa: E402
from interrogator.draw.miniature import make_demo_vqgan  # noqa: E402
from interrogator.draw.vqgan import TamingLayout, build_vqgan, find_vqgan  # noqa: E402

from conftest import SAMPLES  # noqa: E402
from taming_layout import TamingVQModel, model_yaml  # noqa: E402

# two levels (a factor of 2), attention at the lower one, 32 codes of 8
SMALL = TamingLayout(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=32, z_channels=8,
                     in_channels=3, out_ch=3, n_embed=32, embed_dim=8)


def taming_checkpoint(folder: Path, layout=SMALL, extra=None, target="taming.models.vqgan.VQModel"):
    """A random taming VQModel saved as taming's downloads lay it out; returns the reference model."""
    torch.manual_seed(1)
    model = TamingVQModel(layout).eval()
    with torch.no_grad():  # GroupNorm's affine parameters away from 1 and 0, so a swapped norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.5, 0.3)
    state = {**model.state_dict(), "loss.discriminator.main.0.weight": torch.ones(2)}
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "configs").mkdir()
    torch.save({"state_dict": state, "epoch": 3, "global_step": 100, **(extra or {})},
               folder / "checkpoints" / "last.ckpt")
    (folder / "configs" / "model.yaml").write_text(model_yaml(layout, target))
    return model


@pytest.fixture(scope="module")
def demo_vqgan(tmp_path_factory):
    return make_demo_vqgan(tmp_path_factory.mktemp("vqgan") / "demo-vqgan")


def test_the_conversion_decodes_as_taming_does(tmp_path, capsys):
    reference = taming_checkpoint(tmp_path / "taming")
    assert main(["convert-vqgan", "--vqgan", str(tmp_path / "taming"), "--out", str(tmp_path / "converted")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'converted'}")
    assert sorted(p.name for p in (tmp_path / "converted").iterdir()) == ["config.json",
                                                                          "diffusion_pytorch_model.safetensors"]
    torch.manual_seed(2)
    quant = torch.randn(2, SMALL.embed_dim, 16, 16)
    with torch.no_grad():
        expected = reference.decode(quant)
        for path in (tmp_path / "converted", tmp_path / "taming" / "checkpoints" / "last.ckpt"):
            model = build_vqgan(find_vqgan(path))
            got = model.decode(quant, force_not_quantize=True).sample
            assert got.shape == expected.shape == (2, 3, 32, 32)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
            assert torch.equal(model.quantize.embedding.weight, reference.quantize.embedding.weight)
    assert find_vqgan(tmp_path / "converted").factor() == find_vqgan(tmp_path / "taming").factor() == 2


def test_a_taming_checkpoint_with_a_missing_tensor_is_one_line(tmp_path, capsys):
    """Left unset, the decoder's tensor would keep diffusers' random initial values (models/weights.py)."""
    taming_checkpoint(tmp_path / "taming")
    ckpt = tmp_path / "taming" / "checkpoints" / "last.ckpt"
    saved = torch.load(str(ckpt), weights_only=True)
    del saved["state_dict"]["decoder.conv_out.bias"]
    torch.save(saved, str(ckpt))
    assert main(["convert-vqgan", "--vqgan", str(tmp_path / "taming"), "--out", str(tmp_path / "converted")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: vqgan_path (with {tmp_path / 'taming' / 'configs' / 'model.yaml'}): the checkpoint in {ckpt} "
        f"leaves 1 weights of the model unset (first: decoder.conv_out.bias); it is not a checkpoint of this model")
    assert not (tmp_path / "converted").exists()


def test_a_checkpoint_with_pickled_objects_is_read_only_when_trusted(tmp_path, capsys):
    fake = types.ModuleType("fake_lightning_callbacks")

    class ModelCheckpoint:  # what old Lightning stored its callbacks' states under
        pass
    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = fake.__name__, "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    sys.modules[fake.__name__] = fake
    try:
        reference = taming_checkpoint(tmp_path / "taming", extra={"callbacks": {ModelCheckpoint: {"best": 1.0}}})
    finally:
        del sys.modules[fake.__name__]  # as on a machine without Lightning
    out = tmp_path / "converted"
    assert main(["convert-vqgan", "--vqgan", str(tmp_path / "taming"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: vqgan_path: {tmp_path / 'taming' / 'checkpoints' / 'last.ckpt'} holds pickled "
                          f"objects besides tensors (") and "pass --trust-checkpoint" in err
    assert "\n" not in err and not out.exists()
    assert main(["convert-vqgan", "--vqgan", str(tmp_path / "taming"), "--out", str(out), "--trust-checkpoint"]) == 0
    model = build_vqgan(find_vqgan(out))
    assert torch.equal(model.post_quant_conv.weight, reference.post_quant_conv.weight)


def draw_args(config, vqgan, out, *extra):
    return ["draw", "--config", str(config), "--vqgan", str(vqgan), "--out", str(out), "--size", "32", "32",
            "--crops", "4", "--no-progress", *extra]


def test_bad_input_is_one_line_before_any_model_loads(tmp_path, capsys, write_config, demo_vqgan):
    config = write_config()
    taming_checkpoint(tmp_path / "other", target="taming.models.cond_transformer.Net2NetTransformer")
    out = tmp_path / "out"
    cases = [
        (["--vqgan", str(tmp_path / "missing.ckpt"), "--prompt", "a"],
         f"error: vqgan_path: no such file or folder: {tmp_path / 'missing.ckpt'}"),
        (["--vqgan", str(tmp_path / "other"), "--prompt", "a"],
         f"error: vqgan_path: {tmp_path / 'other' / 'configs' / 'model.yaml'} describes "
         f"taming.models.cond_transformer.Net2NetTransformer, not a VQGAN (taming.models.vqgan.VQModel)"),
        (["--vqgan", str(demo_vqgan), "--prompt", "a", "--size", "100", "96"],
         "error: --size 100 96: each side must be a multiple of 16 (the VQGAN's downsampling factor)"),
        (["--vqgan", str(demo_vqgan), "--prompt", "a", "--size", "160000", "160000"],
         "error: --size 160000 160000: drawing it needs at least "),
        (["--vqgan", str(demo_vqgan), "--prompt", "a|:2"], "error: --prompt 'a|:2': a part has no text"),
        (["--vqgan", str(demo_vqgan), "--prompt", "a:0"], "error: --prompt 'a:0': the part 'a' has weight 0"),
        (["--vqgan", str(demo_vqgan), "--prompt", "a", "--video", "gif"],
         "error: --video blends the saved latents: give --save-every K too"),
        (["--vqgan", str(demo_vqgan)], "error: give --prompt TEXT or --prompts FILE (none given, or the file has no prompt)"),
        (["--vqgan", str(demo_vqgan), "--prompt", "a", "--init", str(config)],
         f"error: --init {config}: not an image this tool decodes: "),
    ]
    for extra, expected in cases:
        code = main(["draw", "--config", str(config), "--out", str(out), "--no-progress", *extra])
        err = capsys.readouterr().err.strip()
        assert (code, err[:len(expected)]) == (2, expected) and "\n" not in err
    with pytest.raises(SystemExit) as exit_:  # a seed torch cannot take, as parsed (0.3.0: "unexpected" after loading)
        main(["draw", "--config", str(config), "--out", str(out), "--seed", "99999999999999999999", "--prompt", "a"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err == ("error: draw: argument --seed: expected a whole number >= 0 and "
                                             "<= 9223372036853775807, got '99999999999999999999'")
    assert not out.exists()


def test_fifty_steps_raise_the_include_similarity_and_lower_the_exclude(demo_models, demo_vqgan):
    from interrogator.core.config import load_config
    from interrogator.draw.optimize import Drawer, clip_similarity as similarity, include_similarity
    from interrogator.draw.prompts import Settings, make_jobs
    from interrogator.draw.vqgan import load_vqgan
    from interrogator.models.clip import load_config_clip
    clip = load_config_clip(load_config(None, clip_model="demo-tiny-clip", clip_path=str(demo_models.clip_path),
                                        device="cpu"))
    # crops of the whole image and no noise, so the objective is the similarity measured on the image itself
    settings = Settings(width=64, height=64, steps=50, crops=8, crop_scale=(1, 1), noise=(0, 0),
                        exclude="watermark, blurry", exclude_weight=1.0)
    jobs = make_jobs(["a red castle", "blue sea", "a cat"], settings)
    for drawn in Drawer(clip, load_vqgan(demo_vqgan, "cpu"), settings, "cpu", progress=False).draw(jobs):
        include = include_similarity(clip, [drawn.start, drawn.image], drawn.job)
        exclude = similarity(clip, [drawn.start, drawn.image], ["watermark, blurry"])[:, 0].tolist()
        assert include[1] > include[0] and exclude[1] < exclude[0], (drawn.job.prompt, include, exclude)


def test_the_same_seed_gives_the_same_bytes_and_videos_have_their_frames(tmp_path, capsys, write_config, demo_vqgan):
    import imageio.v2 as imageio
    from PIL import Image
    config = write_config()
    common = ["--prompt", "a red castle|stone:0.5", "--prompt", "blue sea", "--exclude", "blurry", "--steps", "4",
              "--save-every", "2", "--video-frames", "3"]
    for name, extra in (("a", ["--video", "mp4"]), ("b", ["--video", "mp4"]), ("c", ["--video", "gif", "--seed", "7"])):
        assert main(draw_args(config, demo_vqgan, tmp_path / name, *common, *extra)) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == 6 and f"wrote {tmp_path / 'a' / '000-a-red-castle.png'} (loss " in out
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == [
        "000-a-red-castle.mp4", "000-a-red-castle.png", "000-a-red-castle/step-00000.png",
        "000-a-red-castle/step-00002.png", "000-a-red-castle/step-00004.png", "001-blue-sea.mp4", "001-blue-sea.png",
        "001-blue-sea/step-00000.png", "001-blue-sea/step-00002.png", "001-blue-sea/step-00004.png"]
    for path in files:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    assert (tmp_path / "a" / "000-a-red-castle.png").read_bytes() != (tmp_path / "c" / "000-a-red-castle.png").read_bytes()
    assert (tmp_path / "a" / "000-a-red-castle.png").read_bytes() == \
        (tmp_path / "a" / "000-a-red-castle" / "step-00004.png").read_bytes()  # the last saved step is the image
    with Image.open(tmp_path / "a" / "001-blue-sea.png") as image:
        meta = json.loads(image.text["parameters"])
        assert (image.size, image.text["prompt"]) == ((32, 32), "blue sea")
    assert (meta["seed"], meta["step"], meta["steps"], meta["parts"]) == (1, 4, 4, [["blue sea", 1.0], ["blurry", -0.5]])
    reader = imageio.get_reader(str(tmp_path / "a" / "000-a-red-castle.mp4"))
    assert reader.count_frames() == (3 + 1) * (3 - 1) + 1  # 3 saved steps, 3 blended frames between each two
    with Image.open(tmp_path / "c" / "001-blue-sea.gif") as gif:
        assert gif.size == (32, 32) and gif.n_frames >= 2
    before = (tmp_path / "a" / "001-blue-sea.png").stat().st_mtime_ns
    assert main(draw_args(config, demo_vqgan, tmp_path / "a", *common)) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: --out {tmp_path / 'a'}: 000-a-red-castle.png exists (--overwrite replaces it)"
    assert (tmp_path / "a" / "001-blue-sea.png").stat().st_mtime_ns == before


def test_interrogate_reports_the_similarity_at_the_start_and_the_end(tmp_path, capsys, write_config, demo_models,
                                                                     demo_vqgan):
    from PIL import Image
    from interrogator.core.config import load_config
    from interrogator.draw.optimize import include_similarity
    from interrogator.draw.prompts import Settings, make_jobs
    from interrogator.models.clip import load_config_clip
    config = write_config(mode="classic")  # small_dicts has no artists: a late failure would show here
    assert main(draw_args(config, demo_vqgan, tmp_path / "early", "--prompt", "a", "--interrogate")) == 2
    assert capsys.readouterr().err.strip() == f"error: config key 'dicts': missing label file " \
                                              f"{Path(json.loads(config.read_text())['dicts']) / 'artists.txt'}"
    assert not (tmp_path / "early").exists()
    config = write_config(mode="seed")
    assert main(draw_args(config, demo_vqgan, tmp_path / "out", "--prompt", "a red castle", "--steps", "3",
                          "--save-every", "3", "--interrogate")) == 0
    lines = capsys.readouterr().out.splitlines()
    match = re.fullmatch(r"000-a-red-castle: CLIP similarity to the prompt (-?\d\.\d{4}) at the start, "
                         r"(-?\d\.\d{4}) at the end; interrogated: (.+)", lines[-1])
    assert match, lines
    clip = load_config_clip(load_config(config))
    job = make_jobs(["a red castle"], Settings())[0]
    images = [Image.open(tmp_path / "out" / "000-a-red-castle" / f"step-0000{s}.png").convert("RGB") for s in (0, 3)]
    assert [float(match[1]), float(match[2])] == [round(v, 4) for v in include_similarity(clip, images, job)]
    assert match[3].count(", ") >= 3  # a caption, a medium, a movement and flavors


def test_an_init_image_is_every_prompts_start(tmp_path, write_config, demo_vqgan):
    sample = sorted(SAMPLES.glob("*.png"))[0]
    config = write_config()
    common = ["--prompt", "a red castle", "--prompt", "blue sea", "--steps", "2", "--save-every", "2"]
    assert main(draw_args(config, demo_vqgan, tmp_path / "init", *common, "--init", str(sample),
                          "--init-weight", "0.5")) == 0
    assert main(draw_args(config, demo_vqgan, tmp_path / "random", *common)) == 0
    from PIL import Image

    def start(out, name):  # the pixels (the PNG text differs: each has its own prompt and seed)
        with Image.open(out / name / "step-00000.png") as image:
            return image.tobytes()
    assert start(tmp_path / "init", "000-a-red-castle") == start(tmp_path / "init", "001-blue-sea")
    assert start(tmp_path / "random", "000-a-red-castle") != start(tmp_path / "random", "001-blue-sea")
    with Image.open(tmp_path / "init" / "001-blue-sea.png") as image:
        meta = json.loads(image.text["parameters"])
    assert (meta["init"], meta["init_weight"]) == (str(sample), 0.5)
