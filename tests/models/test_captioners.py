"""The captioners of every image-text-to-text family (miniature random models of the real classes, saved and
loaded through the path real weights take): batched greedy answers equal one-image-at-a-time answers; models
that would need remote code are refused in one line; answers are cleaned."""
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import captioning
from PIL import Image

from conftest import SAMPLES, needs_new_transformers
from interrogator.commands.cli import main
from interrogator.models.caption import VlmCaptioner, clean_answer, load_captioner

KINDS = ("git", "florence2", "qwen2_vl", "idefics3", "llava")
CLASSES = {"git": "GitForCausalLM", "florence2": "Florence2ForConditionalGeneration",
           "qwen2_vl": "Qwen2VLForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration",
           "llava": "LlavaForConditionalGeneration"}


def images():
    """The 7 samples and 3 random images of other sizes and aspect ratios (the processors pad or tile them)."""
    out = [np.asarray(Image.open(p).convert("RGB").resize((96, 96))) for p in sorted(SAMPLES.glob("*.png"))]
    rng = np.random.RandomState(0)
    return out + [rng.randint(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 90), (120, 50), (64, 64))]


@needs_new_transformers
@pytest.mark.parametrize("kind", KINDS)
def test_batched_greedy_answers_equal_one_image_at_a_time(vlm_folders, kind):
    captioner = load_captioner(captioning(str(vlm_folders[kind]), max_new_tokens=6, min_new_tokens=4), "cpu", torch.float32)
    assert isinstance(captioner, VlmCaptioner) and type(captioner.model).__name__ == CLASSES[kind]
    batch = images()
    together = captioner.caption(batch)
    alone = [captioner.caption([image])[0] for image in batch]
    assert together == alone
    assert all(together) and len(set(together)) > 1  # words, and not one answer for every image
    assert captioner.caption([]) == []


@needs_new_transformers
def test_the_instruction_is_the_task_token_or_one_chat_turn(vlm_folders):
    florence = load_captioner(captioning(str(vlm_folders["florence2"])), "cpu", torch.float32)
    assert florence.prompt() == "<CAPTION>"
    detailed = load_captioner(captioning(str(vlm_folders["florence2"]), caption_prompt="<DETAILED_CAPTION>"), "cpu", torch.float32)
    assert detailed.prompt() == "<DETAILED_CAPTION>"
    qwen = load_captioner(captioning(str(vlm_folders["qwen2_vl"]), caption_prompt="Tag this picture."), "cpu", torch.float32)
    assert qwen.prompt() == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Tag this picture."
                             "<|im_end|>\n<|im_start|>assistant\n")
    assert qwen.processor.tokenizer.padding_side == "left"
    assert load_captioner(captioning(str(vlm_folders["git"])), "cpu", torch.float32).prompt() is None


@needs_new_transformers
def test_the_answer_holds_only_new_tokens(vlm_folders):
    """A decoder-only model's output starts with the prompt: it is cut off, not decoded into the caption."""
    captioner = load_captioner(captioning(str(vlm_folders["llava"]), max_new_tokens=5, min_new_tokens=5), "cpu", torch.float32)
    batch = images()[:2]
    inputs = captioner.inputs(batch)
    out = captioner.generate(**inputs)
    new = captioner.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert captioner.caption(batch) == [clean_answer(t) for t in new]
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


@needs_new_transformers
def test_repetition_penalty_reaches_generate(vlm_folders):
    plain = load_captioner(captioning(str(vlm_folders["qwen2_vl"]), max_new_tokens=8, min_new_tokens=8), "cpu", torch.float32)
    penalised = load_captioner(captioning(str(vlm_folders["qwen2_vl"]), max_new_tokens=8,
                               min_new_tokens=8, repetition_penalty=5.0), "cpu", torch.float32)
    assert penalised.generate_options == {"repetition_penalty": 5.0}
    batch = images()
    assert plain.caption(batch) != penalised.caption(batch)


@pytest.mark.parametrize("raw, cut, want", [
    ("  A cat\n on a   mat. ", False, "A cat on a mat."),
    ("Assistant: A cat on a mat.", False, "A cat on a mat."),
    ("assistant\nA dog.", False, "A dog."),
    ("A cat on a mat. It sits on the", True, "A cat on a mat."),
    ("A cat on a mat. It sits on the", False, "A cat on a mat. It sits on the"),
    ("no sentence end at all", True, "no sentence end at all"),
    ("Two. Sentences!", True, "Two. Sentences!"),
    ("", True, ""),
])
def test_clean_answer(raw, cut, want):
    assert clean_answer(raw, cut) == want


def submit_error(capsys, config):
    code = main(["submit", "--config", str(config), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_model_that_needs_remote_code_is_refused_in_one_line(capsys, write_config, tmp_path, demo_models):
    folder = tmp_path / "custom"
    shutil.copytree(demo_models.blip_path, folder)
    spec = json.loads((folder / "config.json").read_text())
    spec.update(model_type="florence2_remote", auto_map={"AutoModelForCausalLM": "modeling_florence2.Florence2"})
    (folder / "config.json").write_text(json.dumps(spec))
    import transformers
    code, err = submit_error(capsys, write_config(blip_path=str(folder)))
    assert code == 2 and len(err) == 1
    assert err[0] == (f"error: config key 'blip_path': model_type 'florence2_remote' in {folder / 'config.json'} is "
                      f"not implemented by transformers {transformers.__version__} (it names custom code in "
                      f"auto_map); it would need trust_remote_code, which this tool never uses: convert it to a "
                      f"transformers-native checkpoint or upgrade transformers")


def test_a_processor_that_needs_remote_code_is_refused_in_one_line(capsys, write_config, tmp_path, demo_models):
    folder = tmp_path / "custom"
    shutil.copytree(demo_models.blip_path, folder)
    name = next(n for n in ("processor_config.json", "preprocessor_config.json") if (folder / n).is_file())
    spec = json.loads((folder / name).read_text())
    spec["auto_map"] = {"AutoProcessor": "processing_custom.CustomProcessor"}
    (folder / name).write_text(json.dumps(spec))
    code, err = submit_error(capsys, write_config(blip_path=str(folder)))
    assert code == 2 and err == [f"error: config key 'blip_path': the processor in {folder / name} names custom "
                                 f"code (auto_map); it would need trust_remote_code, which this tool never uses"]


def test_an_instruction_for_a_captioner_that_takes_none_is_refused(capsys, write_config):
    code, err = submit_error(capsys, write_config(caption_prompt="Describe it."))
    assert code == 2 and err[-1].startswith("error: config key 'caption_prompt': the blip-2 captioner takes no "
                                            "instruction; leave it out")


def test_four_bit_is_nf4_in_the_compute_dtype_and_one_of_two():
    pytest.importorskip("bitsandbytes", reason="the quant extra is not installed (the floor-versions venv)")
    from interrogator.models.caption import quantization
    config = quantization(False, True, torch.bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization(True, False, torch.float16).load_in_8bit and quantization(False, False, torch.float32) is None


def test_eight_and_four_bit_together_are_one_line(capsys, write_config):
    code, err = submit_error(capsys, write_config(load_in_8bit=True, load_in_4bit=True))
    assert code == 2 and err[-1].startswith("error: config keys 'load_in_8bit' and 'load_in_4bit' are both true; "
                                            "choose one")
