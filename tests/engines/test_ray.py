"""The pipeline on Ray Data: the same answer as one machine, actor deaths, a killed driver, undecodable images."""
import os
import shutil
import signal
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, SAMPLES
from interrogator.core.config import load_config
from interrogator.runner.pipeline import run

from interrogator.engines.ray_engine import InterrogateActor, run_ray  # noqa: E402  (sets Ray's environment first)

pytest.importorskip("ray")


@pytest.fixture
def folder(tmp_path):
    """The 7 samples and two undecodable files: 9 images, 5 batches of 2."""
    images = tmp_path / "images"
    shutil.copytree(SAMPLES, images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "text.jpg").write_text("hello")
    return images


@pytest.fixture
def single(write_config, folder, tmp_path):
    """The config (batch 2) and the single-machine CSV's bytes."""
    config = load_config(write_config(batch_size=2, data_path=str(folder)))
    out = tmp_path / "single.csv"
    from interrogator.core.config import replace
    run(replace(config, output=str(out)), progress=False)
    return config, out.read_bytes()


class DiesOnce(InterrogateActor):
    """Exits hard on its first batch while its marker file is absent: Ray must replace it and retry the batch.

    Pickled by value (the workers cannot import this test module), with the marker as a class attribute."""

    marker = ""

    def __call__(self, rows):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(rows)


def test_an_actor_that_dies_on_its_first_batch_is_replaced(ray_cluster, single, tmp_path):
    """Also: Ray's CSV is the single machine's, byte for byte, and its batch files hold every row (two actors:
    tests/runner/test_training_folders.py)."""
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config, reference = single
    DiesOnce.marker = str(tmp_path / "died")
    out = tmp_path / "ray.csv"
    result = run_ray(config, str(tmp_path / "pq"), csv=str(out), actors=1, progress=False, actor_cls=DiesOnce)
    assert os.path.exists(DiesOnce.marker)  # it did die
    assert out.read_bytes() == reference  # the single machine's CSV, byte for byte
    assert result.resumed_batches == 0 and result.ray.startswith("5 batches written by 1 actors, 0 reused")
    assert set(result.failed) == {"broken", "text"}
    rows = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "pq").glob("*/batch-*.parquet"))])
    assert rows.imgId.tolist() == sorted(["broken", "text"] + [p.stem for p in SAMPLES.glob("*.png")])
    assert rows.set_index("imgId").loc["broken", "prompt"] == config.fallback_prompt
    assert rows.set_index("imgId").loc["broken", "failed"].startswith("cannot decode")
    assert all(len(v) == 384 for v in rows.embedding)


KILL_AFTER_TWO = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import ray
from interrogator.core.config import load_config
import time
from interrogator.engines.ray_engine import InterrogateActor, run_ray
ray.init(address={address!r}, logging_level="WARNING")


class SlowAfterTwo(InterrogateActor):  # batches 2.. take long enough for the kill to land while they run
    def run_batch(self, number, files, relative, batch):
        if number >= 2:
            time.sleep(4)
        return super().run_batch(number, files, relative, batch)


seen = []
def on_batch(b):
    seen.append(b)
    if len(seen) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
run_ray(load_config({config!r}), {out!r}, actors=1, progress=False, on_batch=on_batch, actor_cls=SlowAfterTwo)
"""


def test_a_killed_job_reruns_to_identical_output_without_redoing_finished_batches(
        ray_cluster, single, tmp_path, write_config, folder):
    config, reference = single
    config_file = write_config(batch_size=2, data_path=str(folder))
    pq = tmp_path / "pq"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO.format(
        repo=str(REPO), address=ray_cluster, config=str(config_file), out=str(pq))],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = {p.name: p.stat().st_mtime_ns for p in pq.glob("*/batch-*.parquet")}
    assert 2 <= len(before) < 5 and not list(pq.glob("*/.*.interrogator-tmp"))  # the 2 reported, and any that finished after
    out = tmp_path / "ray.csv"
    result = run_ray(config, str(pq), csv=str(out), actors=1, progress=False)
    assert result.resumed_batches == len(before)
    assert result.ray.startswith(f"{5 - len(before)} batches written")
    after = {p.name: p.stat().st_mtime_ns for p in pq.glob("*/batch-*.parquet")}
    assert {k: after[k] for k in before} == before  # the finished batches were not rewritten
    assert out.read_bytes() == reference


def test_cli_engine_ray_writes_parquet_and_csv_only_when_asked(ray_cluster, write_config, tmp_path, capfd):
    """Also: its summary has the driver's seconds per stage and the actors' summed, and no library prints a line
    on the console (Ray's core worker wrote one for the actors' constructor arguments)."""
    from interrogator.commands.cli import main
    config_file = write_config(batch_size=4)
    pq = tmp_path / "pq"
    assert main(["submit", "--config", str(config_file), "--engine", "ray", "--parquet-dir", str(pq),
                 "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert "ray: 2 batches written by 1 actors, 0 reused" in out
    stages = re.search(r"^seconds per stage: plan [\d.]+, labels [\d.]+, ray ([\d.]+), write [\d.]+ "
                       r"\(total ([\d.]+), ([\d.]+) img/s\)$", out, flags=re.M)
    assert stages and 0 < float(stages.group(1)) <= float(stages.group(2)) and float(stages.group(3)) > 0, out
    actors = re.search(r"^actors' seconds per stage, summed over their batches: caption [\d.]+, tags [\d.]+, "
                       r"prompt [\d.]+, embed [\d.]+, save [\d.]+$", out, flags=re.M)
    assert actors, out
    assert err == "", err
    assert not (tmp_path / "out" / "submission.csv").exists()
    assert main(["submit", "--config", str(config_file), "--engine", "ray", "--parquet-dir", str(pq),
                 "--output", str(tmp_path / "sub.csv"), "--no-progress"]) == 0
    assert "0 batches written by 0 actors, 2 reused" in capfd.readouterr().out
    assert (tmp_path / "sub.csv").stat().st_size > 0
