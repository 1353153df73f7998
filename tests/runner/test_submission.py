import numpy as np
import pandas as pd
import pytest

from interrogator.core.errors import SubmissionError
from interrogator.runner.submission import merge_submissions, read_submission, to_frame, write_csv_atomic, write_submission


def unit(n, d=384, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_csv_format(tmp_path):
    vectors = unit(3)
    path = write_submission(["b2", "a1", "c3"], vectors, tmp_path / "sub.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "imgId_eId,val"
    assert len(lines) == 1 + 3 * 384
    assert [l.split(",")[0] for l in lines[1:4]] == ["a1_0", "a1_1", "a1_2"]
    assert lines[384].startswith("a1_383,") and lines[385].startswith("b2_0,")
    frame = pd.read_csv(path)
    np.testing.assert_array_equal(frame.val.to_numpy(np.float32)[:384], vectors[1])
    ids, back = read_submission(path)
    assert ids == ["a1", "b2", "c3"]
    np.testing.assert_array_equal(back, vectors[[1, 0, 2]])
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


@pytest.mark.parametrize("change, message", [
    (lambda v: v * 2, "vectors are not unit-norm"),
    (lambda v: np.where(np.arange(v.size).reshape(v.shape) == 5, np.nan, v), "non-finite"),
])
def test_invalid_vectors_write_nothing(tmp_path, change, message):
    out = tmp_path / "sub.csv"
    with pytest.raises(SubmissionError, match=message):
        write_submission(["a", "b"], change(unit(2)), out)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_write(tmp_path):
    out = tmp_path / "sub.csv"
    write_submission(["a"], unit(1), out)
    before = out.read_bytes()
    with pytest.raises(SubmissionError):
        write_submission(["a"], unit(1) * 3, out)
    assert out.read_bytes() == before


@pytest.mark.parametrize("workers", [0, 2])
def test_chunked_write_is_byte_identical_to_one_to_csv(tmp_path, workers):
    ids = [f"img{i:03d}" for i in range(50)]
    frame = to_frame(ids, unit(50, seed=3))
    path = write_csv_atomic(frame, tmp_path / "sub.csv", workers=workers, chunk_rows=384 * 7 + 5)  # 8 chunks
    assert path.read_bytes() == frame.to_csv(index=False).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


@pytest.mark.parametrize("workers, error", [(0, OSError("disk full")), (2, OSError("disk full")),
                                            (0, KeyboardInterrupt())])
def test_write_interrupted_in_a_later_chunk_leaves_nothing(tmp_path, monkeypatch, workers, error):
    import interrogator.runner.submission as submission
    original, written = submission._csv_chunk, []

    def fail_on_third(frame, rows, i):
        if i == 2:
            raise error
        written.append(i)
        return original(frame, rows, i)
    monkeypatch.setattr(submission, "_csv_chunk", fail_on_third)
    frame = to_frame([f"img{i}" for i in range(6)], unit(6))
    with pytest.raises(type(error)):
        write_csv_atomic(frame, tmp_path / "sub.csv", workers=workers, chunk_rows=384)
    assert list(tmp_path.iterdir()) == []
    if workers == 0:
        assert written == [0, 1]  # two chunks had reached the temp file


def test_mismatched_count_is_rejected(tmp_path):
    with pytest.raises(SubmissionError, match="expected one vector per image: 3 images"):
        write_submission(["a", "b", "c"], unit(2), tmp_path / "x.csv")


def test_read_rejects_incomplete_file(tmp_path):
    path = write_submission(["a", "b"], unit(2), tmp_path / "s.csv")
    lines = path.read_text().splitlines()
    (tmp_path / "cut.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SubmissionError, match="rows do not split evenly|not unique, complete"):
        read_submission(tmp_path / "cut.csv")


def test_merge_joins_shards_in_id_order(tmp_path):
    v = unit(4)
    write_submission(["c", "d"], v[2:], tmp_path / "s1.csv")
    write_submission(["a", "b"], v[:2], tmp_path / "s0.csv")
    single = write_submission(["a", "b", "c", "d"], v, tmp_path / "single.csv")
    merged = merge_submissions([tmp_path / "s1.csv", tmp_path / "s0.csv"], tmp_path / "merged.csv")
    assert merged.read_bytes() == single.read_bytes()
    with pytest.raises(SubmissionError, match=r"shards overlap: 2 ids \('a', 'b'\) in both"):
        merge_submissions([tmp_path / "s0.csv", tmp_path / "s0.csv"], tmp_path / "m2.csv")
