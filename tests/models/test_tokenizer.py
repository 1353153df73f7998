"""FastClipTokenizer gives exactly open_clip's SimpleTokenizer tokens."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from interrogator.models.clip import token_lengths
from interrogator.models.tokenizer import FastClipTokenizer, fast_tokenizer

from conftest import REPO, SAMPLE, needs_shared


@pytest.fixture(scope="module")
def simple():
    import open_clip
    return open_clip.get_tokenizer("ViT-L-14")


@pytest.fixture(scope="module")
def fast(simple):
    return fast_tokenizer(simple)


@pytest.mark.parametrize("name", ["flavors", "mediums", "movements", "artists", "negative"])
def test_every_label_list_tokenizes_identically(simple, fast, name):
    labels = (REPO / "dicts" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert torch.equal(fast(labels), simple(labels))


@needs_shared
def test_true_kaggle_prompts_tokenize_identically(simple, fast):
    import pandas as pd
    prompts = pd.read_csv(SAMPLE / "prompts.csv")["prompt"].tolist()
    assert torch.equal(fast(prompts), simple(prompts))
    assert fast.count(prompts) == token_lengths(simple(prompts, context_length=1024)).tolist()


def test_long_text_is_cut_and_ended_like_open_clip(simple, fast):
    flavors = (REPO / "dicts" / "flavors.txt").read_text(encoding="utf-8").splitlines()
    long = [", ".join(flavors[i:i + 40]) for i in range(0, 2000, 40)] + ["", "a"]
    for context in (77, 5, 2):
        assert torch.equal(fast(long, context_length=context), simple(long, context_length=context))
    counts = fast.count(long)
    assert counts[-2:] == [2, 3] and min(counts[:-2]) > 77
    assert counts == token_lengths(simple(long, context_length=1024)).tolist()


def test_text_that_ftfy_or_html_would_change(simple, fast):
    texts = ["Tom &amp; Jerry", "A&amp;amp;B", "cafÃ©", "ﬁne ligature", "Ｆｕｌｌｗｉｄｔｈ", "“curly”",
             "line\r\nbreak", "bell\x07char", "<start_of_text> twice <end_of_text>", "IT'S O'NEIL'S",
             "tab\there", "  padded  ", "\x1b[31mred"]
    assert torch.equal(fast(texts), simple(texts))
    assert fast("a single string").shape == (1, 77)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
                | st.lists(st.sampled_from(["&amp;", "&", "'s", "<end_of_text>", " ", "\n", "cat", "ß",
                                            "İ", "é", "e\u0301", "1/2", "..."]), max_size=12).map("".join),
                min_size=1, max_size=6))
def test_generated_text_tokenizes_identically(simple, fast, texts):
    assert torch.equal(fast(texts, context_length=20), simple(texts, context_length=20))


def test_other_tokenizers_are_left_as_they_are():
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer
    reduced = SimpleTokenizer(reduction_mask="simple")
    assert fast_tokenizer(reduced) is reduced
    assert isinstance(fast_tokenizer(open_clip.get_tokenizer("ViT-H-14")), FastClipTokenizer)
    plain = object()
    assert fast_tokenizer(plain) is plain
