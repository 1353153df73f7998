"""Each bad input gets a one-line error naming the key, the path and what was expected."""
import shutil

import pytest

from interrogator.commands.cli import main


def submit(capsys, config, *extra):
    code = main(["submit", "--config", str(config), "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_missing_file(capsys, write_config, tmp_path):
    config = write_config(clip_path="weights/missing.safetensors")
    code, err = submit(capsys, config)
    assert code == 2
    assert err[-1] == (f"error: config key 'clip_path': path does not exist: {tmp_path / 'weights' / 'missing.safetensors'}"
                       f" (in {config})")


def test_clip_checkpoint_for_another_architecture(capsys, write_config, demo_models):
    code, err = submit(capsys, write_config(clip_model="ViT-B-32"))
    assert code == 2
    assert err[-1].startswith(f"error: config key 'clip_path': checkpoint {demo_models.clip_path} "
                              f"does not match clip_model 'ViT-B-32': ")


def test_captioner_folder_without_processor(capsys, write_config, demo_models, tmp_path):
    folder = tmp_path / "blip-no-processor"
    shutil.copytree(demo_models.blip_path, folder)
    for name in ("processor_config.json", "preprocessor_config.json"):  # older transformers write both
        (folder / name).unlink(missing_ok=True)
    code, err = submit(capsys, write_config(blip_path=str(folder)))
    assert code == 2
    assert err[-1] == (f"error: config key 'blip_path': captioner folder {folder} has no processor "
                       f"(expected preprocessor_config.json or processor_config.json and tokenizer files)")


def test_folder_that_is_not_a_captioner(capsys, write_config, minilm_path):
    code, err = submit(capsys, write_config(blip_path=str(minilm_path)))
    assert err[-1] == (f"error: config key 'blip_path': model_type 'bert' in {minilm_path / 'config.json'} is not "
                       f"an image-text-to-text model (a captioner takes an image and writes text)")


@pytest.fixture(scope="module")
def sentence_model_128d(tmp_path_factory, minilm_path):
    from sentence_transformers import SentenceTransformer, models
    folder = tmp_path_factory.mktemp("st128")
    base = SentenceTransformer(str(minilm_path), device="cpu")
    dense = models.Dense(in_features=384, out_features=128)
    SentenceTransformer(modules=[*base, dense], device="cpu").save(str(folder))
    return folder


def test_sentence_model_that_is_not_384d(capsys, write_config, sentence_model_128d):
    code, err = submit(capsys, write_config(embedding_path=str(sentence_model_128d)))
    assert code == 2
    assert err[-1] == (f"error: config key 'embedding_path': the sentence model in {sentence_model_128d} gives "
                       f"128-d vectors; a Kaggle submission needs 384-d (all-MiniLM-L6-v2)")


def test_empty_image_folder(capsys, write_config, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = submit(capsys, write_config(data_path=str(tmp_path / "empty")))
    assert err[-1] == (f"error: config key 'data_path': no images (.png, .jpg, .jpeg, .jfif, .webp, .bmp, .gif, .tif, .tiff) "
                       f"in {tmp_path / 'empty'}")


def test_unwritable_output_folder(capsys, write_config, tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    code, err = submit(capsys, write_config(output=str(tmp_path / "afile" / "sub.csv")))
    assert code == 2
    assert err[-1].startswith(f"error: config key 'output': cannot write in folder {tmp_path / 'afile'}: ")


def test_debug_shows_the_traceback(capsys, write_config, tmp_path):
    (tmp_path / "empty").mkdir()
    code = main(["--debug", "submit", "--config", str(write_config(data_path=str(tmp_path / "empty")))])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback (most recent call last)" in err and err.strip().endswith(str(tmp_path / "empty"))
