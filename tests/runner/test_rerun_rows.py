"""A rerun never loses a row: with existing_txt skip, every table output holds every image of the folder, the
skipped ones from the earlier run's outputs; adding images adds rows and changes nothing else."""
import shutil

import pytest

from conftest import SAMPLES
from interrogator.commands.cli import main
from interrogator.core.config import load_config, replace
from interrogator.runner.pipeline import run

TABLES = ["kaggle", "csv", "jsonl", "parquet"]


def tables(output):
    import pyarrow.parquet as pq
    out = output.parent
    return {"kaggle": output.read_bytes(), "csv": (out / "s.prompts.csv").read_bytes(),
            "jsonl": (out / "s.jsonl").read_bytes(), "parquet": pq.read_table(out / "s.parquet").to_pylist()}


def test_a_rerun_with_skip_keeps_every_row_and_adds_the_new_images(write_config, tmp_path):
    pytest.importorskip("pyarrow")
    images = sorted(SAMPLES.glob("*.png"))
    data = tmp_path / "data"
    data.mkdir()
    for path in images[:5]:
        shutil.copy(path, data)
    config = load_config(write_config(data_path=str(data), formats=["txt", *TABLES], existing_txt="skip",
                                      batch_size=1, output=str(tmp_path / "run" / "s.csv")))
    first = run(config, progress=False)
    assert len(first.image_ids) == 5
    for path in images[5:]:
        shutil.copy(path, data)
    second = run(config, progress=False)
    assert len(second.image_ids) == 2 and second.captioned == 5
    full = run(replace(config, existing_txt="overwrite", output=str(tmp_path / "full" / "s.csv"),
                       txt_dir=str(tmp_path / "full-txt")), progress=False)
    assert len(full.image_ids) == 7
    assert tables(tmp_path / "run" / "s.csv") == tables(tmp_path / "full" / "s.csv")
    third = run(config, progress=False)  # nothing new: every output stays as it is
    assert len(third.image_ids) == 0 and tables(tmp_path / "run" / "s.csv") == tables(tmp_path / "full" / "s.csv")


def test_skip_without_earlier_rows_says_which_images_and_what_to_do(write_config, tmp_path, capsys, caplog):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data)
    (data / "20057f34d.txt").write_text("my own caption\n", encoding="utf-8")
    path = write_config(data_path=str(data), formats=["txt", "kaggle"], existing_txt="skip")
    assert main(["submit", "--config", str(path), "--no-progress"]) == 2  # a submission must hold every image
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: existing_txt skip with the kaggle format: 1 images whose caption files exist have no vector in the "
        "earlier outputs (first: 20057f34d.png); run once with existing_txt keep to write every row, or leave "
        "kaggle out of formats"]
    assert not (tmp_path / "out").exists()
    path = write_config(data_path=str(data), formats=["txt", "jsonl"], existing_txt="skip",
                        output=str(tmp_path / "rows" / "s.csv"))
    assert main(["submit", "--config", str(path), "--no-progress"]) == 0  # the rows it has, and one warning
    assert ("existing_txt skip: 1 images whose caption files exist are in no earlier output (first: "
            "20057f34d.png), so the table outputs leave them out; run once with existing_txt keep to include them"
            ) in caplog.text
    assert len((tmp_path / "rows" / "s.jsonl").read_text(encoding="utf-8").splitlines()) == 6
    assert (data / "20057f34d.txt").read_text(encoding="utf-8") == "my own caption\n"
