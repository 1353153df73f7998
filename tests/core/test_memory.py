import json

from interrogator.core.memory import MAX_AUTO_BATCH, auto_batch_size, caption_bytes_per_image, captioner_weight_bytes

OPT_2_7B = {"model_type": "blip-2", "text_config": {"num_hidden_layers": 32, "hidden_size": 2560},
            "num_query_tokens": 32}
QWEN2_VL_2B = {"model_type": "qwen2_vl", "text_config": {"num_hidden_layers": 28, "hidden_size": 1536}}


def test_kv_cache_estimate_for_blip2_opt_2_7b():
    # 2 (k, v) x 32 layers x 2560 x (32 query + 1 + 20 new) tokens x 2 bytes, plus 30% overhead
    assert caption_bytes_per_image(OPT_2_7B, 20, 1, 2) == 2 * 32 * 2560 * 53 * 2 * 1.3
    assert caption_bytes_per_image(OPT_2_7B, 20, 3, 2) == 3 * caption_bytes_per_image(OPT_2_7B, 20, 1, 2)


def test_kv_cache_estimate_for_a_vlm_plans_for_many_image_tokens():
    # 2 x 28 layers x 1536 x (1280 image and prompt + 20 new) tokens x 2 bytes, plus 30% overhead
    assert caption_bytes_per_image(QWEN2_VL_2B, 20, 1, 2) == 2 * 28 * 1536 * 1300 * 2 * 1.3


def test_auto_batch_size_on_16_and_80_gb_cards():
    per_image = caption_bytes_per_image(OPT_2_7B, 20, 1, 2)  # about 22.6 MB
    weights = 3.87e9 * 2
    assert auto_batch_size(16e9, weights, per_image) == 128     # (13.6 - 7.74 - 2.5) GB / 22.6 MB = 148
    assert auto_batch_size(80e9, weights, per_image) == MAX_AUTO_BATCH
    assert auto_batch_size(8e9, weights, per_image) == 1       # nothing fits: still runs, at 1


def test_weight_bytes_rescale_from_stored_dtype(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4000)
    (tmp_path / "notes.txt").write_bytes(b"\0" * 999)
    assert captioner_weight_bytes(str(tmp_path), 2) == 2000
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float16"}))
    assert captioner_weight_bytes(str(tmp_path), 2) == 4000
