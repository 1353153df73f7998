"""Sharded runs merge into exactly the single run's submission."""
from conftest import run_cli
from interrogator.images import list_images
from interrogator.pipeline import shard_files
from conftest import SAMPLES


def test_shards_are_contiguous_whole_batches():
    files = list_images(SAMPLES)
    parts = [shard_files(files, (i, 3), 2) for i in range(3)]
    assert [len(p) for p in parts] == [2, 2, 3]
    assert [f for p in parts for f in p] == files


def test_two_shards_merged_equal_a_single_run(write_config, tmp_path):
    config = str(write_config(batch_size=2))
    run_cli("submit", "--config", config, "--output", str(tmp_path / "single.csv"), "--no-progress")
    for i in range(2):
        run_cli("submit", "--config", config, "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.csv"),
                "--no-progress")
    run_cli("merge", str(tmp_path / "s1.csv"), str(tmp_path / "s0.csv"), "--output", str(tmp_path / "merged.csv"))
    single = (tmp_path / "single.csv").read_bytes()
    assert (tmp_path / "merged.csv").read_bytes() == single
    assert len((tmp_path / "s0.csv").read_text().splitlines()) == 1 + 4 * 384

    proc = run_cli("submit", "--config", config, "--devices", "cpu,cpu", "--output", str(tmp_path / "dev.csv"))
    assert (tmp_path / "dev.csv").read_bytes() == single
    assert sorted(p.name for p in tmp_path.glob("dev*")) == ["dev.csv"]
    assert f"submission: {tmp_path / 'dev.csv'}" in proc.stdout


def test_device_processes_get_disjoint_core_shares():
    import subprocess
    import sys
    from interrogator.parallel import _pin_to, split_cores
    assert split_cores([0, 1, 2, 3, 4, 5, 6], 2) == [{0, 1, 2}, {3, 4, 5, 6}]
    assert split_cores([3, 1], 2) == [{1}, {3}]
    assert split_cores([0], 2) is None and _pin_to(None) is None
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, preexec_fn=_pin_to({0}), check=True).stdout
    assert out.strip() == "[0]"
