import open_clip
import pytest

from interrogator.clip import token_lengths
from interrogator.prompt import build_prompt, clean_caption

tokenizer = open_clip.get_tokenizer("ViT-L-14")


def count(texts):
    return token_lengths(tokenizer(texts, context_length=1024)).tolist()


def raw_count(text):
    """Tokens with start and end, without the 77 cap."""
    return len(tokenizer.encode(text)) + 2


def test_prompt_shape():
    prompt = build_prompt("a cat sitting on a mat.  ", "oil painting", "impressionism",
                          ["highly detailed", "trending on artstation", "8k"], count)
    assert prompt == "a cat sitting on a mat, oil painting, impressionism, highly detailed, trending on artstation, 8k"


@pytest.mark.parametrize("raw, clean", [("a dog!!", "a dog"), ("a dog ,;: ", "a dog"), (" a  big\ndog ", "a big dog"),
                                        ("...", ""), ("v2.0 release", "v2.0 release")])
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


def test_trailing_flavors_are_dropped_to_fit_77_tokens():
    caption = "a photograph of " + " ".join(["castle"] * 50)
    flavors = [f"flavor number {i}" for i in range(10)]
    prompt = build_prompt(caption, "photo", "realism", flavors, count)
    assert raw_count(prompt) <= 77
    kept = prompt.split(", ")
    assert kept[:3] == [caption, "photo", "realism"]
    assert kept[3:] == flavors[:len(kept) - 3]
    assert raw_count(prompt + ", " + flavors[len(kept) - 3]) > 77


def test_caption_longer_than_context_is_kept_whole():
    caption = " ".join(["word"] * 100)
    assert build_prompt(caption, "photo", "realism", ["x"], count) == caption


def test_empty_caption_leaves_no_leading_comma():
    assert build_prompt("", "photo", "realism", ["sharp"], count) == "photo, realism, sharp"
