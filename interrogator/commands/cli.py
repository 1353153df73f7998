"""``python -m interrogator <subcommand>``: submit, precompute-labels, embed, score, merge, make-demo-models,
the CLIP toolkit (toolkit_cli.py) and the learned head, bank and blend (learned_cli.py)."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from ..core.offline import enforce_offline

enforce_offline()

from .. import __version__  # noqa: E402
from ..core.config import load_config  # noqa: E402
from ..core.console import quiet_libraries  # noqa: E402
from ..core.errors import InterrogatorError  # noqa: E402
from .arguments import (ArgParser, add_common, device_name, choice_list, holdout_share, int_list, non_negative_int, output_file,  # noqa: E402
                        output_folder, positive_int)


def _shard(text: str):
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"expected i/N with 0 <= i < N, got {text!r}")
    return index, count


def _image_range(text: str):
    try:
        lo, hi, total = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lo:hi:total, got {text!r}") from None
    if not 0 <= lo <= hi <= total:
        raise argparse.ArgumentTypeError(f"expected 0 <= lo <= hi <= total, got {text!r}")
    return lo, hi, total


def cmd_submit(args) -> int:
    from ..runner.pipeline import run
    config = load_config(args.config, output=args.output, batch_size=args.batch_size, device=args.device,
                         data_path=args.data_path, formats=args.format, overwrite=args.overwrite or None)
    if args.engine == "ray":
        from ..engines.ray_engine import default_parquet_dir, run_ray
        if args.devices or args.shard or args.images:
            raise InterrogatorError("--engine ray schedules the devices itself: leave out --devices, --shard and --images")
        result = run_ray(config, args.parquet_dir or default_parquet_dir(config), csv=args.output,
                         address=args.ray_address, actors=args.actors, progress=not args.no_progress)
        print(result.summary())
        return 0
    if args.parquet_dir or args.ray_address or args.actors:
        raise InterrogatorError("--parquet-dir, --ray-address and --actors need --engine ray")
    if args.devices:
        from ..engines.parallel import submit_on_devices, visible_devices
        if args.shard or args.images or args.records_only:
            raise InterrogatorError("give --devices or --shard, not both")
        extra = ["--strict"] if args.strict else []
        if args.data_path:
            extra += ["--data-path", config.data_path]
        if args.batch_size:
            extra += ["--batch-size", str(args.batch_size)]
        for name in args.format or []:
            extra += ["--format", name]
        if args.overwrite:
            extra += ["--overwrite"]
        result = submit_on_devices(config, args.config, visible_devices(args.devices), extra,
                                   progress=not args.no_progress)
        print(result.summary())
        return 0
    if args.records_only and not args.images:
        raise InterrogatorError("--records-only goes with --images (it is what --devices gives each process)")
    result = run(config, shard=args.shard, images=args.images, progress=not args.no_progress, strict=args.strict,
                 records_only=args.records_only, keep_work=args.shard is not None)  # merge --config reads them
    if not args.records_only:
        print(result.summary())
    return 0


def cmd_precompute_labels(args) -> int:
    from ..models.clip import load_config_clip
    from ..runner.labels import LabelCache, load_tables
    from ..runner.stages import label_progress
    config = load_config(args.config, label_cache=args.label_cache, device=args.device)
    if config.label_cache is None:
        raise InterrogatorError("config key 'label_cache' is not set: name the folder to fill "
                                "(in the config or with --label-cache)")
    if config.demo:
        from ..models.demo import ensure_demo_models
        ensure_demo_models(config)
    config.require_paths("clip_path", "dicts")
    config.check_device()
    config.check_dtype()
    from ..runner.labels import read_labels
    from ..core.plan import mode_label_files
    from ..runner.stages import table_names
    for path in mode_label_files(config):  # every table a run of this config reads, the negative chain's too
        read_labels(path)
    clip = load_config_clip(config)
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache), names=table_names(config),
                         progress_factory=label_progress(True))
    for name, table in tables.items():
        merged = f" ({table.merged} merged)" if table.merged else ""
        print(f"{name}: {len(table.labels)} labels{merged}, {'cache hit' if table.from_cache else 'encoded'}")
    print(f"label cache: {config.label_cache}")
    return 0


def _sentence_model(args):
    from ..models.embed import load_sentence_model
    if args.embedding_path:
        return load_sentence_model(str(Path(args.embedding_path).resolve()), args.device or "cpu")
    if not args.config:
        raise InterrogatorError("give --config or --embedding-path to name the sentence model")
    config = load_config(args.config, device=args.device)
    config.require_paths("embedding_path")
    return load_sentence_model(config.embedding_path, config.resolved_device(), config.embedding_dir)


def cmd_embed(args) -> int:
    from ..models.embed import embed_prompts
    from ..runner.score import read_prompts
    from ..runner.submission import write_submission
    prompts = read_prompts(args.prompts)
    model = _sentence_model(args)
    vectors = embed_prompts(model, prompts.prompt.tolist(), args.batch_size)
    path = write_submission(prompts.imgId.tolist(), vectors, args.output)
    print(f"submission: {path} ({len(prompts)} images x {vectors.shape[1]})")
    return 0


def cmd_score(args) -> int:
    from ..models.embed import embed_prompts
    from ..runner.score import cosine_per_image, mean_cosine, read_prompts
    from ..runner.submission import read_submission
    ids, vectors = read_submission(args.submission)
    prompts = read_prompts(args.prompts)
    truth = embed_prompts(_sentence_model(args), prompts.prompt.tolist(), args.batch_size)
    scores = cosine_per_image(ids, vectors, prompts.imgId.tolist(), truth)
    for image_id, value in scores.items():
        print(f"{image_id} {value:.6f}")
    print(f"score {mean_cosine(ids, vectors, prompts.imgId.tolist(), truth):.6f}")
    return 0


def cmd_merge(args) -> int:
    from ..core.plan import kaggle_ids, relative_path, scan_images
    from ..runner.submission import merge_submissions
    expected = None
    if args.config:
        config = load_config(args.config)
        config.require_paths("data_path")
        from ..engines.parallel import merge_shards
        result = merge_shards(config, args.shards, args.output)
        if result is not None:  # every format, from the shards' batch records
            print(result.summary())
            return 0
        files = scan_images(config).files
        expected = kaggle_ids([relative_path(config, f) for f in files], config.recursive)
    path = merge_submissions(args.shards, args.output, expected_ids=expected)
    print(f"submission: {path}")
    return 0


def cmd_tune(args) -> int:
    from ..runner.tune import tune, write_fragment
    config = load_config(args.config, device=args.device, data_path=args.data_path)
    work = args.work or str(Path(config.output).parent / ".tune")
    rows = tune(config, args.prompts, work, holdout=args.holdout, seed=args.seed,
                modes=tuple(args.modes), counts=tuple(args.flavor_counts), progress=not args.no_progress)
    held = rows[0].holdout is not None
    print(f"{len(rows)} assemblies scored by the competition metric, best first"
          + (f" (ranked on {1 - args.holdout:.0%} of the images; holdout: the rest)" if held else ""))
    print("| rank | assembly | score |" + (" holdout |" if held else ""))
    print("| --- | --- | --- |" + (" --- |" if held else ""))
    for rank, row in enumerate(rows[:args.show], 1):
        print(f"| {rank} | {row.assembly.label()} | {row.score:.6f} |" + (f" {row.holdout:.6f} |" if held else ""))
    if args.output:
        print(f"best settings: {write_fragment(rows[0], args.output)}")
    import json
    print(f"best: {json.dumps(rows[0].assembly.fragment())} score {rows[0].score:.6f}")
    return 0


def cmd_make_demo_models(args) -> int:
    from ..models.demo import make_demo_models
    paths = make_demo_models(args.folder, force=args.force)
    print(f"captioner: {paths.blip_path}\nclip: {paths.clip_path}\nsentence model: {paths.embedding_path}")
    return 0





def cmd_app(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InterrogatorError("the app needs gradio: pip install 'interrogator[app]'") from None
    from ..app.paths import Roots
    from ..app.service import Service
    from ..app.ui import launch
    config = load_config(args.config, device=args.device)
    for folder in args.allow:
        if not Path(folder).is_dir():
            raise InterrogatorError(f"--allow {folder}: not a folder")
    service = Service(config, Roots.of(*args.allow), args.index, args.max_upload_mb * 1024 * 1024)
    if service.store is not None:
        service.roots = Roots.of(*args.allow, service.store.root)
    service.start()
    print(f"interrogator app on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    launch(service, args.host, args.port, args.share)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgParser(prog="python -m interrogator", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and the libraries' log lines")
    parser.add_argument("--version", action="version", version=f"interrogator {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")

    p = sub.add_parser("submit", help="images -> submission CSV (same as submit.py)")
    p.add_argument("--config", required=True, help="JSON config")
    p.add_argument("--output", type=output_file, help="submission path (overrides the config's output)")
    p.add_argument("--data-path", help="image folder (overrides the config's data_path)")
    p.add_argument("--batch-size", type=positive_int, help="override batch_size")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (overrides the config)")
    p.add_argument("--shard", type=_shard, help="process shard i of N (i/N), for `merge` later")
    p.add_argument("--images", type=_image_range,
                   help="process images lo..hi-1 of a folder of total images (what --devices gives each process)")
    p.add_argument("--devices", help="one process per device, merged: 'auto' (all GPUs) or a list like cuda:0,cuda:1")
    p.add_argument("--records-only", action="store_true",
                   help="with --images: save the batch records in the output's work folder and write nothing else "
                        "(what --devices gives each process)")
    p.add_argument("--format", action="append", choices=("kaggle", "txt", "csv", "jsonl", "parquet"),
                   help="what to write (repeatable; overrides the config's formats): kaggle (the submission CSV), "
                        "txt (a .txt beside each image), csv, jsonl, parquet")
    p.add_argument("--overwrite", action="store_true", help="replace existing .txt files")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this machine) or ray (Ray Data: a local cluster, or the one at --ray-address)")
    p.add_argument("--ray-address", help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)")
    p.add_argument("--parquet-dir", type=output_folder, help="with --engine ray: the Parquet output folder (default: beside the output, "
                                         "<output stem>.parquet); the CSV is written only with --output")
    p.add_argument("--actors", type=positive_int, help="with --engine ray: model actors (default: one per GPU, else 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--strict", action="store_true", help="exit with an error if any image cannot be decoded")
    add_common(p, device="")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("precompute-labels", help="fill the label-embedding cache ahead of time")
    p.add_argument("--config", required=True, help="JSON config (its clip_model, clip_path and dicts)")
    p.add_argument("--label-cache", help="cache folder (overrides the config's label_cache)")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (overrides the config)")
    add_common(p, device="")
    p.set_defaults(func=cmd_precompute_labels)

    for name, func, helptext in (("embed", cmd_embed, "prompts CSV (imgId,prompt) -> submission CSV"),
                                 ("score", cmd_score, "per-image cosine of a submission against true prompts")):
        p = sub.add_parser(name, help=helptext)
        if name == "embed":
            p.add_argument("--prompts", required=True, help="CSV with columns imgId,prompt")
            p.add_argument("--output", required=True, type=output_file, help="submission path")
        else:
            p.add_argument("--submission", required=True, help="submission CSV")
            p.add_argument("--prompts", required=True, help="CSV with the true prompts (imgId,prompt)")
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--config", help="JSON config (its embedding_path)")
        group.add_argument("--embedding-path", help="sentence-transformers model folder")
        p.add_argument("--batch-size", type=positive_int, default=64, help="prompts embedded at once (default 64)")
        p.add_argument("--device", type=device_name, help="cpu or cuda (default: the config's, else cpu)")
        add_common(p, device="")
        p.set_defaults(func=func)

    p = sub.add_parser("merge", help="join shard submissions into one validated submission")
    p.add_argument("shards", nargs="+", help="shard CSVs")
    p.add_argument("--output", required=True, type=output_file, help="merged submission path")
    p.add_argument("--config", help="check that the shards cover exactly the images of this config's data_path")
    add_common(p, device="")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("tune", help="score prompt assemblies (modes, max_flavors, parts and their order) on "
                                    "labelled images")
    p.add_argument("--config", required=True, help="JSON config")
    p.add_argument("--prompts", required=True, help="CSV imgId,prompt of the true prompts")
    p.add_argument("--data-path", help="the labelled images (overrides the config's data_path)")
    p.add_argument("--holdout", type=holdout_share, default=0.0, help="share of the images kept out of the ranking")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the holdout split")
    p.add_argument("--modes", type=choice_list(("seed", "classic", "fast", "best", "negative", "caption")),
                   default="seed,classic,fast,caption", help="modes in the grid (best is slow)")
    p.add_argument("--flavor-counts", type=int_list, default="1,2,3,5,8,16,32", help="max_flavors values in the grid")
    p.add_argument("--show", type=positive_int, default=20, help="rows shown")
    p.add_argument("--output", type=output_file, help="write the best settings as a config fragment (JSON)")
    p.add_argument("--work", type=output_folder,
                   help="where captions and features are kept (default: .tune beside the output)")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common(p, device="")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("app", help="the local web app: prompt, analyze, caption a folder, search (the [app] extra)")
    p.add_argument("--config", required=True, help="JSON config (its models)")
    p.add_argument("--index", help="a feature store made by `index`, for the Search tab")
    p.add_argument("--allow", action="append", default=[], help="a server folder the Folder tab may read and write "
                                                                "(repeatable); nothing else is served")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=7860, help="the port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--max-upload-mb", type=positive_int, default=20, help="the largest upload, in MiB (default 20)")
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (overrides the config)")
    add_common(p, device="")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("make-demo-models", help="build the miniature random demo models")
    p.add_argument("--folder", type=output_folder, default="demo_models",
                   help="where to build them (default: demo_models in the current folder)")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    add_common(p, device="")
    p.set_defaults(func=cmd_make_demo_models)

    from . import draw_cli, learned_cli, toolkit_cli
    toolkit_cli.add_commands(sub)
    learned_cli.add_commands(sub)
    draw_cli.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers", "sentence_transformers", "faiss",
                  "faiss.loader", "matplotlib", "bitsandbytes", "diffusers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.debug:
        logging.getLogger("interrogator").setLevel(logging.DEBUG)
    quiet_libraries(debug=args.debug)
    try:
        return args.func(args)
    except InterrogatorError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file this command reads or writes: a full or read-only disk, a vanished file
        if args.debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; no submission was written at the output path", file=sys.stderr)
        return 130
