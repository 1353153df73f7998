import open_clip
import pytest
from hypothesis import given, settings, strategies as st

from conftest import REPO
from interrogator.models.clip import token_lengths
from interrogator.models.tokenizer import fast_tokenizer
from interrogator.runner.prompt import build_prompt, clean_caption

tokenizer = open_clip.get_tokenizer("ViT-L-14")
fast = fast_tokenizer(open_clip.get_tokenizer("ViT-L-14"))


def fast_count(texts):
    return fast.count(list(texts))


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


def scan_down(caption, medium, movement, flavors, count_tokens, context_length=77):
    """The one-part-at-a-time reference: the longest prefix of the parts that fits."""
    parts = [p for p in [clean_caption(caption), medium, movement, *flavors] if p]
    for n in range(len(parts), 0, -1):
        text = ", ".join(parts[:n])
        if n == 1 or count_tokens([text])[0] <= context_length:
            return text
    return ""


REAL_FLAVORS = (REPO / "dicts" / "flavors.txt").read_text(encoding="utf-8").splitlines()
PUNCTUATED = [f for f in REAL_FLAVORS if not f[-1].isalnum()]  # 'symmetry!!', 'loish |', '8k”', ...


@settings(max_examples=300, deadline=None)
@given(caption=st.text(min_size=0, max_size=60),
       picks=st.lists(st.integers(0, 10 ** 9), min_size=2, max_size=80),
       punctuated=st.booleans(), odd=st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_search_equals_the_one_at_a_time_scan(caption, picks, punctuated, odd):
    pool = PUNCTUATED if punctuated else REAL_FLAVORS
    labels = [pool[i % len(pool)] for i in picks] + odd
    medium, movement, flavors = labels[0], labels[1], labels[2:]
    assert build_prompt(caption, medium, movement, flavors, fast_count) == scan_down(
        caption, medium, movement, flavors, fast_count)


def test_search_counts_a_few_texts_not_one_per_part():
    texts = []
    flavors = [f"flavor {i}" for i in range(1000)]
    prompt = build_prompt("a cat", "photo", "realism", flavors, lambda t: texts.extend(t) or fast_count(t))
    assert len(texts) <= 1 + 10  # the full prompt, then a binary search over 1,003 parts
    assert prompt == scan_down("a cat", "photo", "realism", flavors, fast_count)
