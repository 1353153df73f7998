import pytest
import torch

from interrogator.core.rank import topk_chunked


def brute_force(features, labels, k):
    """Every score sorted, best first, equal scores by label index."""
    scores, index = torch.sort(features @ labels.T, dim=1, descending=True, stable=True)
    return scores[:, :k], index[:, :k]


@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
@pytest.mark.parametrize("chunk_size", [1, 3, 64, 1000, 5000])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_chunked_topk_equals_brute_force(n, chunk_size, k):
    gen = torch.Generator().manual_seed(n * 31 + chunk_size * 7 + k)
    features = torch.nn.functional.normalize(torch.randn(5, 16, generator=gen), dim=-1)
    labels = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
    scores, index = topk_chunked(features, labels, k, chunk_size)
    brute_scores, brute_index = brute_force(features, labels, k)
    assert torch.equal(index, brute_index)
    assert torch.allclose(scores, brute_scores, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 7, 100])
def test_ties_go_to_the_lower_index_for_any_chunk_size(chunk_size):
    labels = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    _, index = topk_chunked(features, labels, 4, chunk_size)
    assert index.tolist() == [[1, 3, 5, 2], [2, 4, 0, 6]]


def test_chunked_topk_shape_when_k_exceeds_labels():
    scores, index = topk_chunked(torch.ones(2, 4), torch.eye(4)[:3], k=10, chunk_size=2)
    assert index.shape == (2, 3) and index[0].tolist() == [0, 1, 2]
