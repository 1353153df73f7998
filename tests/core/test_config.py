import json


import pytest

from conftest import REPO

from interrogator.core.config import Config, load_config
from interrogator.core.errors import ConfigError



def write(tmp_path, values, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, {"batch_sise": 8})
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise' \(in .*config.json\); did you mean 'batch_size'\?"):
        load_config(path)


def test_missing_path_names_key_and_path(tmp_path):
    config = load_config(write(tmp_path, {"clip_path": "weights/nope.pt"}))
    missing = str(tmp_path / "weights" / "nope.pt")
    with pytest.raises(ConfigError) as err:
        config.require_paths("clip_path")
    assert str(err.value) == f"config key 'clip_path': path does not exist: {missing} (in {tmp_path / 'config.json'})"


def test_unset_required_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config key 'blip_path' is required but not set"):
        load_config(write(tmp_path, {})).require_paths("blip_path")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    sub = tmp_path / "configs"
    sub.mkdir()
    config = load_config(write(sub, {"data_path": "../images", "output": "out.csv", "dicts": "/abs/dicts"}))
    assert config.data_path == str(tmp_path / "images")
    assert config.output == str(sub / "out.csv")
    assert config.dicts == "/abs/dicts"


def test_overrides_resolve_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path / "", {"output": "a.csv"}), output="b.csv", batch_size=None)
    assert config.output == str(tmp_path / "b.csv")
    assert config.batch_size == 16  # None means "not given"


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", 0, 'expected a whole number >= 1 or "auto", got 0'),
    ("batch_size", "8", "expected a whole number >= 1 or \"auto\", got '8'"),
    ("clip_batch_size", "auto", "expected a whole number >= 1, got 'auto'"),
    ("num_workers", -1, 'expected a whole number >= 0 or "auto", got -1'),
    ("num_workers", "all", "expected a whole number >= 0 or \"auto\", got 'all'"),
    ("load_in_8bit", "yes", "expected true or false, got 'yes'"),
    ("dtype", "fp8", "expected one of auto, fp16, bf16, fp32, got 'fp8'"),
    ("device", "tpu", "expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("clip_model", "", "expected a non-empty string, got ''"),
])
def test_bad_values_name_key_and_expectation(tmp_path, key, value, expected):
    with pytest.raises(ConfigError, match=f"config key '{key}': " + expected.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, {key: value}))


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file does not exist: .*nope.json"):
        load_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="must hold a JSON object, got list"):
        load_config(write(tmp_path, [1, 2]))


def test_defaults_and_stage_batch_sizes(tmp_path):
    config = load_config(write(tmp_path, {"batch_size": 8, "clip_batch_size": 32}))
    assert (config.stage_batch_size("caption"), config.stage_batch_size("clip"), config.stage_batch_size("embed")) == (8, 32, 8)
    assert (config.max_flavors, config.num_beams, config.chunk_size, config.load_in_8bit) == (3, 1, 2048, False)
    import torch
    assert Config(device="cpu").torch_dtype() == torch.float32
    assert Config(device="cuda").torch_dtype() == torch.float16


@pytest.mark.parametrize("name", ["kaggle_config.json", "demo_config.json"])
def test_shipped_configs_load(name):
    import open_clip
    from interrogator.models.clip_checkpoint import register_model_configs
    register_model_configs()
    config = load_config(REPO / "configs" / name)
    arch, _, tag = config.clip_model.partition("/")  # ARCH or ARCH/TAG, both known to open_clip
    assert arch in open_clip.list_models() and (not tag or open_clip.get_pretrained_cfg(arch, tag))
    assert config.clip_model in ("ViT-L-14/openai", "demo-tiny-clip")


def test_auto_batch_size_is_16_on_cpu(tmp_path):
    config = load_config(write(tmp_path, {"batch_size": "auto", "device": "cpu"}))
    assert config.stage_batch_size("caption") == 16 and config.stage_batch_size("embed") == 16


def test_loader_workers_auto_leaves_one_core_and_caps_at_16(tmp_path, monkeypatch):
    import interrogator.core.workers as workers
    config = load_config(write(tmp_path, {}))
    assert config.num_workers == "auto"
    for cores, expected in ((1, 0), (2, 1), (4, 3), (16, 15), (64, 16)):
        monkeypatch.setattr(workers, "usable_cores", lambda: cores)
        assert config.loader_workers() == expected
    assert load_config(write(tmp_path, {"num_workers": 5})).loader_workers() == 5


def test_every_key_is_in_exactly_one_section_and_a_section_holds_its_values(tmp_path):
    from dataclasses import fields
    from interrogator.core.config import SECTIONS
    keys = [f.name for cls in SECTIONS.values() for f in fields(cls)]
    user = [f.name for f in fields(Config) if not f.metadata.get("internal")]
    assert sorted(keys) == sorted(user)
    config = load_config(write(tmp_path, {"max_flavors": 7, "formats": ["txt", "csv"], "overwrite": True}))
    assert config.ranking.max_flavors == 7 and config.writing.formats == ("txt", "csv")
    assert config.writing.txt_policy() == config.txt_policy() == "overwrite"
    for name, cls in SECTIONS.items():
        section = getattr(config, name)
        assert isinstance(section, cls) and all(
            getattr(section, f.name) == (tuple(v) if isinstance(v := getattr(config, f.name), list) else v)
            for f in fields(cls)), name


# clip-interrogator 0.6.0's signatures: interrogate_classic(max_flavors=3), interrogate_fast(max_flavors=32),
# interrogate(min_flavors=8, max_flavors=32) (best), interrogate_negative(max_flavors=32) with chain's
# min_count=8, and Config.flavor_intermediate_count=2048
CLIP_INTERROGATOR_060 = {"classic": (3, 8, 2048), "fast": (32, 8, 2048), "best": (32, 8, 2048),
                         "negative": (32, 8, 2048)}


def test_each_mode_has_clip_interrogators_defaults_where_the_config_is_silent():
    from interrogator.core.config import replace
    for mode, expected in CLIP_INTERROGATOR_060.items():
        config = load_config(None, mode=mode)
        assert (config.max_flavors, config.min_flavors, config.intermediate_count) == expected, mode
        assert replace(load_config(None), mode=mode).max_flavors == expected[0], mode  # the app's per-request mode
    assert load_config(None).max_flavors == 3  # seed: this tool's own
    assert load_config(None, mode="fast", max_flavors=5).max_flavors == 5  # a value given is kept
    assert replace(load_config(None, max_flavors=9), mode="best").max_flavors == 9


def test_min_flavors_above_max_flavors_is_one_line_in_the_chain_modes(tmp_path):
    from interrogator.core.config import replace
    path = tmp_path / "c.json"
    path.write_text('{"mode": "best", "max_flavors": 3}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"config keys 'min_flavors' (8) and 'max_flavors' (3): the best mode chains at least "
                               f"min_flavors flavors and at most max_flavors; make min_flavors <= max_flavors "
                               f"(in {path})")
    with pytest.raises(ConfigError, match=r"^config keys 'min_flavors' \(8\) and 'max_flavors' \(4\): the negative"):
        replace(load_config(None, max_flavors=4), mode="negative")
    assert load_config(None, mode="classic", max_flavors=3).min_flavors == 8  # classic does not chain: fine
