"""Every command the README shows in a bash block is one the command line takes as written: its subcommand,
its flags and their values (paths aside: they name the reader's files)."""
import contextlib
import io
import re
import shlex
import shutil

from conftest import REPO, needs_new_transformers
from helpers import make_folder
from interrogator.commands.cli import build_parser, main


def readme_commands():
    """Each ``python -m interrogator ...`` line of the README's bash blocks (continuations joined, comments cut)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m interrogator "):
                found.append(line)
    return found


def test_every_readme_command_parses_as_written():
    parser = build_parser()
    commands = readme_commands()
    assert len(commands) >= 25
    seen = set()
    for line in commands:
        argv = shlex.split(line)[3:]
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"{line}: {errors.getvalue().strip()}") from None
        seen.add(args.command)
    assert {"prompt", "submit", "make-demo-models", "draw", "app", "search"} <= seen


# what the README's commands name that stands for the reader's own things, and what it stands for here
STAND_INS = {"C": "configs/demo_config.json", "photos/": "samples", "train/": "samples", "renders/": "samples",
             "/shared/out/parquet": "out/parquet",  # a cluster's shared folder: the local run's (it resumes its batches)
             "/shared/out/captioned.csv": "shared/out/captioned.csv",
             "my-set/": "my-set",  # a captioned training set: a small one made here
             "shards/{00000..00003}.tar": str(REPO / "tests" / "data" / "img2dataset" / "raw" / "{00000..00001}.tar")}
# the commands that cannot run here, by a word they hold, and why
NOT_HERE = {"caption.json": "a config of real weights (Florence-2-large, a WD EVA02 tagger) and two GPUs",
            "app": "a server that runs until stopped (tests/app runs it)",
            "vqgan_imagenet_f16_16384": "taming's real VQGAN checkpoint", "vqgan-f16-16384": "taming's real VQGAN",
            "tune.json": "a config the reader writes from their head and bank", "final.json": "likewise"}


@needs_new_transformers
def test_every_readme_command_runs_on_the_demo_models(tmp_path, monkeypatch, demo_models, ray_cluster, capsys):
    """Each bash-block command as written, in README order, in a copy of the repository's layout, with the demo
    config for ``C``, the samples for the reader's folders, and small files for the rest (``NOT_HERE``: those
    that need real weights, GPUs or a running server)."""
    for name in ("samples", "dicts"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "demo_config.json", tmp_path / "configs")
    images = sorted((REPO / "samples").glob("*.png"))
    for name, image in zip(("query.png", "a.png", "b.png"), images):
        shutil.copy(image, tmp_path / name)
    (tmp_path / "labels.txt").write_text("a cat\na dog\ntext screenshot\n")
    prompts = (REPO / "samples" / "prompts.csv").read_text().splitlines()[1:]
    (tmp_path / "pairs.csv").write_text("image,prompt\n" + "".join(
        f"{REPO / 'samples' / (line.split(',')[0] + '.png')},\"{line.split(',', 1)[1].strip(chr(34))}\"\n"
        for line in prompts))
    make_folder(tmp_path / "my-set", sources=images)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTERROGATOR_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("INTERROGATOR_DEMO_DIR", str(demo_models.blip_path.parent))  # the prompt's demo, built
    monkeypatch.delenv("INTERROGATOR_CONFIG", raising=False)
    ran = []
    for line in readme_commands():
        argv = [ray_cluster if w == "HEAD:6379" else STAND_INS.get(w, w) for w in shlex.split(line)[3:]]
        if any(w in NOT_HERE for w in argv):
            continue
        assert main(argv) == 0, (line, capsys.readouterr().err)
        ran.append(argv[0])
        out = capsys.readouterr().out
        if argv[0] == "prompt":
            assert out.strip() and "\n" not in out.strip()
    assert ran == ["prompt", "make-demo-models", "submit", "index", "captions-stats", "captions-edit", "captions-edit",
                   "captions-undo", "captions-export", "captions-export", "submit", "make-demo-models", "draw", "index",
                   "search",
                   "search", "classify", "similarity", "rerank", "finetune-clip", "features", "train-head", "build-bank",
                   "submit", "submit", "submit", "submit", "submit", "submit"]
    assert len(list((tmp_path / "demo_models" / "runs" / "tagger" / "txt").glob("*.txt"))) == 7
    assert len(list((tmp_path / "out" / "parquet").glob("*/batch-*.parquet"))) >= 1
    assert sorted(p.name for p in (tmp_path / "shared" / "out" / "captioned.shards").glob("*.tar")) == [
        "00000.tar", "00001.tar"]  # the shards captioned on Ray
    for made in ("index.safetensors", "drawings/000-a-lighthouse-at-dusk.png", "hits.png", "hits.csv", "classes.csv",
                 "keep.txt", "sim.csv", "sim.png", "ft/clip.safetensors", "head/head.json", "bank/bank.safetensors",
                 "submission.csv", "my-set/metadata.jsonl", "meta_cap.json", "my-set/f.txt"):
        assert (tmp_path / made).is_file(), made
