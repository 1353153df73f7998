"""What a plan holds per listed entry (README, "Datasets in shards"; docs/benchmarks.md): a few bytes, and for a
shard input no record of where each sample lies."""
import tarfile
import tracemalloc

from interrogator.core.config import load_config
from interrogator.core.listing import ShardListing, shard_members
from interrogator.runner.planner import make_plan


def held_per_entry(config, entries: int) -> float:
    tracemalloc.start()
    try:
        plan = make_plan(config, models_given=True, key=False)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(plan.files) == entries
    return held / entries, plan


def test_a_plan_of_a_file_list_holds_under_80_bytes_a_path(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("".join(f"d{i // 1000:04d}/{i:09d}.jpg\n" for i in range(30000)))
    per_entry, plan = held_per_entry(load_config(data_path=str(listed), output=str(tmp_path / "o" / "out.csv"),
                                                 formats=["csv"]), 30000)
    assert per_entry < 80, per_entry  # a 19-byte path and its 9-byte stem: 44 bytes; a tuple of str was ~600
    assert plan.files[12345].path == tmp_path / "d0012" / "000012345.jpg" and plan.kaggle[12345] == "000012345"


def test_a_plan_of_shards_lists_shards_and_keys_not_members(tmp_path):
    for n in range(40):
        with tarfile.open(tmp_path / f"{n:05d}.tar", "w") as tar:
            for i in range(25):
                tar.addfile(tarfile.TarInfo(f"{n * 25 + i:07d}.jpg"))
    shard_members.cache_clear()
    shards = "::".join(str(tmp_path / f"{n:05d}.tar") for n in range(40))  # the floor venv has no braceexpand
    config = load_config(data_path=shards, output=str(tmp_path / "o" / "out.csv"),
                         formats=["csv"])
    per_entry, plan = held_per_entry(config, 1000)
    assert isinstance(plan.files, ShardListing) and shard_members.cache_info().currsize == 0
    assert per_entry < 80, per_entry  # a 7-byte key (15) and its stem (15), and 40 shards' paths and counts
    assert plan.files[997].image_id == "0000997" and plan.files[997].member.name == "0000997.jpg"
    assert shard_members.cache_info().currsize == 1  # the member was read from that one shard's headers
