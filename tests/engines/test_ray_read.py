"""The Ray engine's reader of shard inputs (engines/ray_read.py): whatever rows Ray Data's readers hand a call,
the calls together make each batch still to do exactly once, from the shard's bytes (Ray's own readers end to end:
tests/runner/test_stored_inputs.py)."""
import io
import itertools
import tarfile

import numpy as np
import pytest

from conftest import SAMPLES
from interrogator.core.config import load_config
from interrogator.engines.ray_read import Columns, GivenFile, owned_batches, shard_batches
from interrogator.runner.planner import make_plan

IMAGES = sorted(SAMPLES.glob("*.png"))


def tar_shards(folder, sizes):
    """Tar shards of ``sizes`` samples (``key.jpg`` + ``key.txt``); the last sample of the last has no image."""
    folder.mkdir()
    n = 0
    for s, size in enumerate(sizes):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for k in range(size):
                last = s == len(sizes) - 1 and k == size - 1
                for name, data in ([] if last else [(f"{n:07d}.jpg", IMAGES[n % len(IMAGES)].read_bytes())]) + \
                        [(f"{n:07d}.txt", b"alt")]:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    return "::".join(f"{folder}/{s:05d}.tar" for s in range(len(sizes)))  # no brace pattern: the floor has no braceexpand


def reader_rows(plan):
    """The rows read_webdataset gives for the plan's shards: url, key, and the ``jpg`` column (None where the
    sample has no image member)."""
    rows = {"__url__": [], "__key__": [], "jpg": []}
    for file in plan.files:
        rows["__url__"].append(str(file.path))
        rows["__key__"].append(file.image_id)
        try:
            rows["jpg"].append(file.read()[0])
        except ValueError:
            rows["jpg"].append(None)
    return rows


def chunk(rows, lo, hi):
    return {name: np.array(values[lo:hi], dtype=object) for name, values in rows.items()}


def test_each_batch_still_to_do_is_made_once_wherever_the_rows_are_cut(write_config, tmp_path):
    data_path = tar_shards(tmp_path / "shards", [5, 3])
    plan = make_plan(load_config(write_config(batch_size=2, data_path=data_path)), write=False)
    assert [list(b) for b in plan.batches] == [[0, 1], [2, 3], [4], [5, 6], [7]]
    todo = [0, 2, 3, 4]  # batch 1 is done: its rows are left out
    work = dict(shard_batches(plan, todo))
    rows = reader_rows(plan)
    n = len(plan.files)
    for a, b in itertools.combinations(range(1, n), 2):  # every cut of the rows into three calls
        made = {}
        for lo, hi in ((0, a), (a, b), (b, n)):
            for number, files, relative, read, reread in owned_batches(chunk(rows, lo, hi), Columns.of(plan.config),
                                                                      work.__getitem__):
                assert number not in made, (a, b, number)
                members = plan.batches[number]
                assert list(files) == [plan.files[i] for i in members]
                assert list(relative) == [plan.relative[i] for i in members]
                assert lo <= members[0] < hi  # the call that holds its first sample makes it
                outside = [i for i in members if not lo <= i < hi]
                assert reread == len(outside)
                for i, file in zip(members, read):  # the reader's bytes, else the plan's file (read by offset)
                    given = isinstance(file, GivenFile)
                    assert given == (lo <= i < hi and rows["jpg"][i] is not None), (a, b, i)
                    if given:
                        assert file.read() == plan.files[i].read()
                made[number] = reread
        assert sorted(made) == todo, (a, b)
    no_image = plan.files[-1]
    with pytest.raises(ValueError, match="the sample has no image member"):
        no_image.read()


def test_read_tasks_get_their_cpus_as_the_installed_ray_takes_them():
    from interrogator.engines.ray_read import read_cpus

    def named(paths, *, num_cpus=None, ray_remote_args=None):  # Ray 2.60's readers
        pass

    def remote_args(paths, *, ray_remote_args=None):  # read_parquet before num_cpus
        pass

    def neither(paths, *, override_num_blocks=None):  # an older read_webdataset
        pass
    assert read_cpus(named, 0.5) == {"num_cpus": 0.5}
    assert read_cpus(remote_args, 0.5) == {"ray_remote_args": {"num_cpus": 0.5}}
    assert read_cpus(neither, 0.5) == {}
