import os
from functools import partial

from interrogator.core.workers import MAX_WORKERS, default_workers, map_chunks


def _square_with_pid(offset, i):
    return i * i + offset, os.getpid()


def test_results_come_back_in_order_from_worker_processes():
    results = list(map_chunks(partial(_square_with_pid, 1), 9, workers=2))
    assert [value for value, _ in results] == [i * i + 1 for i in range(9)]
    assert os.getpid() not in {pid for _, pid in results}


def test_one_worker_or_one_chunk_runs_in_this_process():
    for workers, count in ((0, 4), (1, 4), (4, 1)):
        results = list(map_chunks(partial(_square_with_pid, 0), count, workers=workers))
        assert results == [(i * i, os.getpid()) for i in range(count)]


def test_default_workers_is_the_usable_cores_capped():
    assert default_workers() == min(len(os.sched_getaffinity(0)), MAX_WORKERS)
