"""Sharded runs merge into exactly the single run's submission, and a merge checks coverage."""
import pytest

from conftest import SAMPLES
from interrogator.core.errors import ConfigError, SubmissionError
from helpers import list_images, select
from interrogator.engines.parallel import child_environment
from interrogator.core.shards import Layout, shard_ranges
from interrogator.runner.submission import merge_submissions


def test_shards_are_contiguous_whole_batches():
    files = list_images(SAMPLES)
    parts = [select(files, 2, shard=(i, 3)) for i in range(3)]
    assert [len(p) for p in parts] == [2, 2, 3]
    assert [f for p in parts for f in p] == files
    assert shard_ranges(7, 3, 2) == [(0, 2), (2, 4), (4, 7)]
    assert shard_ranges(3, 4, 2) == [(0, 0), (0, 2), (2, 2), (2, 3)]  # more shards than batches: some empty
    assert select(files, 2, images=(2, 5, 7)) == files[2:5]


def test_input_shards_are_batched_on_their_own_and_split_where_one_begins():
    """Samples of input shards of 5, 3 and 6 in batches of 2: no batch crosses a shard, and a range (--shard,
    --devices) begins only where an input shard does."""
    layout = Layout.of(14, 2, [5, 3, 6])
    assert layout.starts == (0, 2, 4, 5, 7, 8, 10, 12) and layout.cuts == (0, 3, 5)
    assert [list(b) for b in layout.batches(0, 14)] == [[0, 1], [2, 3], [4], [5, 6], [7], [8, 9], [10, 11], [12, 13]]
    assert [list(b) for b in layout.batches(5, 8)] == [[0, 1], [2]] and layout.first_batch(5) == 3
    assert layout.ranges(2) == [(0, 8), (8, 14)]  # batch 4 of 8 lies in the second shard: the next cut
    assert layout.ranges(3) == [(0, 5), (5, 8), (8, 14)]
    assert layout.ranges(5) == [(0, 5), (5, 5), (5, 8), (8, 14), (14, 14)]  # more ranges than shards: some empty
    assert layout.select(images=(5, 8, 14)) == (5, 8)
    with pytest.raises(ConfigError, match="^--images 6:8:14: 6:8 is not a range of whole batches$"):
        layout.select(images=(6, 8, 14))
    assert Layout.of(7, 2, [7]).batches(0, 7) == Layout.of(7, 2).batches(0, 7)


def test_an_image_range_from_another_listing_is_refused():
    with pytest.raises(ConfigError, match="--images 0:4:8: the image folder now holds 7 images, not 8"):
        select(list_images(SAMPLES), 2, images=(0, 4, 8))


def test_each_gpu_process_sees_only_its_own_gpu():
    assert child_environment("cuda:1", {})[0]["CUDA_VISIBLE_DEVICES"] == "1"
    env, device = child_environment("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,6"})
    assert (env["CUDA_VISIBLE_DEVICES"], device) == ("6", "cuda")
    import torch
    assert child_environment("cpu", {"CUDA_VISIBLE_DEVICES": "4"}) == (
        {"CUDA_VISIBLE_DEVICES": "4", "OMP_NUM_THREADS": str(torch.get_num_threads())}, "cpu")


def test_two_shards_merged_equal_a_single_run(write_config, tmp_path, capsys):
    """In-process (the --devices children are processes of their own)."""
    from interrogator.commands.cli import main
    config = str(write_config(batch_size=2))
    assert main(["submit", "--config", config, "--output", str(tmp_path / "single.csv"), "--no-progress"]) == 0
    for i in range(2):
        assert main(["submit", "--config", config, "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.csv"),
                     "--no-progress"]) == 0
    assert main(["merge", str(tmp_path / "s1.csv"), str(tmp_path / "s0.csv"), "--output", str(tmp_path / "merged.csv"),
                 "--config", config]) == 0
    single = (tmp_path / "single.csv").read_bytes()
    assert (tmp_path / "merged.csv").read_bytes() == single
    assert len((tmp_path / "s0.csv").read_text().splitlines()) == 1 + 4 * 384
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s0.csv"), "--output", str(tmp_path / "gap.csv"), "--config", config]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: the shards leave a gap: 3 ids ('c98f79f71', 'd8edf2e40', 'f27825b2c') in no shard")
    assert not (tmp_path / "gap.csv").exists()

    assert main(["submit", "--config", config, "--devices", "cpu,cpu", "--output", str(tmp_path / "dev.csv")]) == 0
    assert (tmp_path / "dev.csv").read_bytes() == single
    assert sorted(p.name for p in tmp_path.glob("dev*")) == ["dev.csv"]
    assert f"submission: {tmp_path / 'dev.csv'}" in capsys.readouterr().out


def test_merge_names_an_overlap(tmp_path):
    import numpy as np
    from interrogator.runner.submission import write_submission
    v = np.eye(3, 384, dtype=np.float32)
    write_submission(["a", "b"], v[:2], tmp_path / "s0.csv")
    write_submission(["b", "c"], v[1:], tmp_path / "s1.csv")
    with pytest.raises(SubmissionError) as info:
        merge_submissions([tmp_path / "s0.csv", tmp_path / "s1.csv"], tmp_path / "m.csv", ["a", "b", "c"])
    assert str(info.value) == f"shards overlap: 1 id ('b') in both {tmp_path / 's0.csv'} and {tmp_path / 's1.csv'}"
    with pytest.raises(SubmissionError, match=r"the shards leave a gap: 1 id \('d'\) in no shard"):
        merge_submissions([tmp_path / "s0.csv"], tmp_path / "m.csv", ["a", "b", "d"])
    assert not (tmp_path / "m.csv").exists()


def test_device_processes_get_disjoint_core_shares():
    import subprocess
    import sys
    from interrogator.engines.parallel import _pin_to, split_cores
    assert split_cores([0, 1, 2, 3, 4, 5, 6], 2) == [{0, 1, 2}, {3, 4, 5, 6}]
    assert split_cores([3, 1], 2) == [{1}, {3}]
    assert split_cores([0], 2) is None and _pin_to(None) is None
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, preexec_fn=_pin_to({0}), check=True).stdout
    assert out.strip() == "[0]"
