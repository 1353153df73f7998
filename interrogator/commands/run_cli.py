"""The run's subcommands: submit, merge, precompute-labels, tune, make-demo-models."""
from __future__ import annotations

import json
from pathlib import Path

from ..core.config import FORMATS, load_config
from ..core.errors import InterrogatorError
from .demos import FAMILIES, families_of, make_demos
from .flags import add_config_flags, flag_overrides, print_config
from .arguments import (add_common, add_config, choice_list, holdout_share, image_range, int_list, non_negative_int,
                        output_file, output_folder, positive_int, shard_spec)

# Each command imports what runs it (torch, the models, the engines) when it runs: ``--help`` and a parse error
# import none of it (tests/commands/test_cli.py).
MODES_IN_GRID = ("seed", "classic", "fast", "best", "negative", "caption")


def cmd_submit(args) -> int:
    from ..engines.submit import Distribution, submit
    config = load_config(args.config, **{**flag_overrides(args), **dict(
        output=args.output, batch_size=args.batch_size, device=args.device, data_path=args.data_path,
        formats=args.format, overwrite=args.overwrite or None, replace_outputs=args.replace_outputs or None)})
    if args.print_config:
        print_config(config)
        return 0
    spread = Distribution(args.devices, args.shard, args.images, args.records_only, args.parquet_dir,
                          args.ray_address, args.actors)
    write = args.output is not None if args.engine == "ray" else True  # Ray writes the CSV only with --output
    result = submit(config, args.engine, spread, write=write, strict=args.strict, progress=not args.no_progress)
    if not args.records_only:
        print(result.summary())
        if config.demo:
            print(demo_lines(result))
    return 0


DEMO_SHOWN = 3  # prompts a demo run prints


def demo_lines(result) -> str:
    """What a demo run shows after its summary: that the weights are random, and its first prompts."""
    shown = [f"  {i}: {p}" for i, p in list(zip(result.image_ids, result.prompts))[:DEMO_SHOWN]]
    return "\n".join(["the demo models have random weights: their prompts show what the tool does, not what the "
                       "images show; the first prompts it wrote:", *shown])


def cmd_precompute_labels(args) -> int:
    from ..models.clip import load_config_clip
    from ..runner.loading import label_tables
    from ..runner.needs import check, clip_only
    config = load_config(args.config, label_cache=args.label_cache, device=args.device)
    if config.label_cache is None:
        raise InterrogatorError("config key 'label_cache' is not set: name the folder to fill "
                                "(in the config or with --label-cache)")
    needs = clip_only(config)  # every table a run of this config reads, the negative chain's too
    check(config, needs)
    tables = label_tables(config, load_config_clip(config), needs.tables, progress=True)
    for name, table in tables.items():
        merged = f" ({table.merged} merged)" if table.merged else ""
        print(f"{name}: {len(table.labels)} labels{merged}, {'cache hit' if table.from_cache else 'encoded'}")
    print(f"label cache: {config.label_cache}")
    return 0


def cmd_merge(args) -> int:
    from ..core.plan import kaggle_ids, relative_path, scan_images
    from ..engines.parallel import merge_shards
    from ..runner.submission import merge_submissions
    expected = None
    if args.config:
        config = load_config(args.config)
        config.require_paths("data_path")
        result = merge_shards(config, args.shards, args.output)
        if result is not None:  # every format, from the shards' batch records
            print(result.summary())
            return 0
        files = scan_images(config.running).files
        expected = kaggle_ids([relative_path(config.running, f) for f in files], config.recursive)
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
    print(f"best: {json.dumps(rows[0].assembly.fragment())} score {rows[0].score:.6f}")
    return 0


def cmd_make_demo_models(args) -> int:
    demos = make_demos(args.folder, families_of(args.family or ["blip2"]), force=args.force)
    print(f"demo models in {args.folder}, with random weights: what they write shows what the tool does, not "
          f"what it says")
    print(f"clip: {demos.clip}\nsentence model: {demos.sentence}")
    for demo in demos.families:
        print(f"{demo.family}: {demo.model}\n  config: {demo.config}\n  try it: {demo.command}")
    return 0


def add_submit(sub) -> None:
    p = sub.add_parser("submit", help="images -> submission CSV (same as submit.py)")
    add_config(p)
    p.add_argument("--output", type=output_file, help="submission path (overrides the config's output)")
    p.add_argument("--data-path", help="image folder (overrides the config's data_path)")
    p.add_argument("--batch-size", type=positive_int, help="override batch_size")
    p.add_argument("--shard", type=shard_spec, help="process shard i of N (i/N), for `merge` later")
    p.add_argument("--images", type=image_range,
                   help="process images lo..hi-1 of a folder of total images (what --devices gives each process)")
    p.add_argument("--devices", help="one process per device, merged: 'auto' (all GPUs) or a list like cuda:0,cuda:1")
    p.add_argument("--records-only", action="store_true",
                   help="with --images: save the batch records in the output's work folder and write nothing else "
                        "(what --devices gives each process)")
    p.add_argument("--format", action="append", choices=FORMATS,
                   help="what to write (repeatable; overrides the config's formats): kaggle (the submission CSV), "
                        "txt (a .txt beside each image), csv, jsonl, parquet")
    p.add_argument("--overwrite", action="store_true", help="replace existing .txt files")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this machine) or ray (Ray Data: a local cluster, or the one at --ray-address)")
    p.add_argument("--ray-address", help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)")
    p.add_argument("--parquet-dir", type=output_folder,
                   help="with --engine ray: the Parquet output folder (default: beside the output, "
                        "<output stem>.parquet); the CSV is written only with --output")
    p.add_argument("--actors", type=positive_int, help="with --engine ray: model actors (default: one per GPU, else 1)")
    p.add_argument("--strict", action="store_true", help="exit with an error if any image cannot be decoded")
    add_common(p, progress=True)
    add_config_flags(p, skip=("formats",))
    p.set_defaults(func=cmd_submit)


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="score prompt assemblies (modes, max_flavors, parts and their order) on "
                                    "labelled images")
    add_config(p)
    p.add_argument("--prompts", required=True, help="CSV imgId,prompt of the true prompts")
    p.add_argument("--data-path", help="the labelled images (overrides the config's data_path)")
    p.add_argument("--holdout", type=holdout_share, default=0.0, help="share of the images kept out of the ranking")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the holdout split")
    p.add_argument("--modes", type=choice_list(MODES_IN_GRID), default="seed,classic,fast,caption",
                   help="modes in the grid (best is slow)")
    p.add_argument("--flavor-counts", type=int_list, default="1,2,3,5,8,16,32", help="max_flavors values in the grid")
    p.add_argument("--show", type=positive_int, default=20, help="rows shown")
    p.add_argument("--output", type=output_file, help="write the best settings as a config fragment (JSON)")
    p.add_argument("--work", type=output_folder,
                   help="where captions and features are kept (default: .tune beside the output)")
    add_common(p, progress=True)
    p.set_defaults(func=cmd_tune)


EXAMPLES = {  # each command"s example, under its help (cli.Commands)
    "submit": "submit --config configs/demo_config.json --mode fast --format kaggle --format jsonl",
    "precompute-labels": "precompute-labels --config configs/demo_config.json --label-cache label_cache",
    "merge": "merge s0.csv s1.csv --output submission.csv --config configs/demo_config.json",
    "tune": "tune --config configs/demo_config.json --prompts samples/prompts.csv --holdout 0.3 --output best.json",
    "make-demo-models": "make-demo-models --family all --folder demo_models",
}
TITLE = "Runs and submissions"  # its heading in the top-level help


def add_commands(sub) -> None:
    add_submit(sub)
    p = sub.add_parser("precompute-labels", help="fill the label-embedding cache ahead of time")
    add_config(p, what="JSON config (its clip_model, clip_path and dicts)")
    p.add_argument("--label-cache", help="cache folder (overrides the config's label_cache)")
    add_common(p)
    p.set_defaults(func=cmd_precompute_labels)

    p = sub.add_parser("merge", help="join shard submissions into one validated submission")
    p.add_argument("shards", nargs="+", help="shard CSVs")
    p.add_argument("--output", required=True, type=output_file, help="merged submission path")
    add_config(p, required=False, what="check that the shards cover exactly the images of this config's data_path")
    add_common(p, device="")
    p.set_defaults(func=cmd_merge)

    add_tune(sub)
    p = sub.add_parser("make-demo-models", help="build miniature random models of each family, with ready configs")
    p.add_argument("--folder", type=output_folder, default="demo_models",
                   help="where to build them (default: demo_models in the current folder)")
    p.add_argument("--family", action="append", choices=(*FAMILIES, "all"),
                   help="which miniature to build, with a ready config (repeatable; default blip2): "
                        + ", ".join(FAMILIES) + ", or all")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    add_common(p, device="")
    p.set_defaults(func=cmd_make_demo_models)
