"""Subcommands past the interrogator: train-head, build-bank, tune-blend."""
from __future__ import annotations

import json
from pathlib import Path

from .arguments import (add_common, add_config, grid_step, non_negative_int, output_file, output_folder, positive_float,
                        positive_int, probability)
from ..core.config import load_config, replace
from ..core.errors import ConfigError

# Each command imports what runs it (torch, the learners, the pipeline) when it runs: --help imports none of it.


def _features_path(args) -> str:
    return args.features or str(Path(args.out) / "features.safetensors")


def cmd_train_head(args) -> int:
    from ..core.console import bar
    from ..learn.head import save_head, train_head
    from ..learn.learned import labelled
    config = load_config(args.config, device=args.device)
    data = labelled(config, args.pairs, args.images, _features_path(args), progress=not args.no_progress,
                    shared=args.features is not None)
    shown = bar(args.epochs, "train-head", "epoch", not args.no_progress)
    trained = train_head(data.features.numpy(), data.targets, data.clip.model, data.clip.weights,
                         hidden=args.hidden, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
                         device=config.resolved_device(), progress=shown)
    shown.close()
    for e in trained.history:
        print(f"epoch {e.epoch}: train loss {e.train_loss:.4f}, validation score {e.val_score:.4f}")
    save_head(trained, args.out)
    print(f"head: {args.out} ({len(data.ids)} pairs, {data.skipped} undecodable left out; best epoch "
          f"{trained.best_epoch}, validation score {trained.val_score:.4f})")
    return 0


def cmd_build_bank(args) -> int:
    import torch
    from ..learn.bank import Bank
    from ..learn.learned import labelled
    config = load_config(args.config, device=args.device)
    data = labelled(config, args.pairs, args.images, _features_path(args), progress=not args.no_progress,
                    shared=args.features is not None)
    bank = Bank(data.ids, data.features.contiguous(), torch.from_numpy(data.targets).contiguous(),
                data.clip.model, data.clip.weights)
    bank.save(args.out)
    print(f"bank: {args.out} ({len(data.ids)} pairs, {data.skipped} undecodable left out)")
    return 0


def cmd_tune_blend(args) -> int:
    import torch
    from ..core.atomic import write_bytes
    from ..core.score import matched_prompts
    from ..learn.blend import COMPONENTS, tune_blend
    from ..models.embed import embed_prompts, load_sentence
    from ..runner.pipeline import run
    config = load_config(args.config, device=args.device, data_path=args.data_path)
    if config.head_path is None and config.bank_path is None:
        raise ConfigError("tune-blend: set head_path and/or bank_path in the config: there is nothing to blend")
    every = [1.0, 1.0 if config.head_path else 0.0, 1.0 if config.bank_path else 0.0]
    # the prompts' embeddings are what is blended, whatever the config writes (write=False: nothing is written)
    result = run(replace(config, blend=every, formats=["kaggle"]), progress=not args.no_progress, write=False)
    truth = matched_prompts(args.prompts, result.kaggle_ids, config.data_path, "tune-blend")
    sentence = load_sentence(config.embedding, config.resolved_device(), config.torch_dtype() == torch.float16)
    vectors = embed_prompts(sentence, truth.prompt.tolist(), config.stage_batch_size("embed"))
    rows = tune_blend(result.kaggle_ids, result.prompt_embeddings, result.head, result.bank, truth.imgId.tolist(),
                      vectors, args.step)
    print(f"{len(truth)} labelled images; blends scored by the competition metric, best first")
    print("| rank | " + " | ".join(COMPONENTS) + " | score | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rank, row in enumerate(rows, 1):
        if rank <= args.show or row.label != "blend":
            print(f"| {rank} | " + " | ".join(f"{w:g}" for w in row.weights) + f" | {row.score:.6f} | {row.label} |")
    best = rows[0]
    fragment = {"blend": [round(w, 6) for w in best.weights]}
    if args.output:
        write_bytes(args.output, (json.dumps(fragment) + "\n").encode())
        print(f"best settings: {args.output}")
    print(f"best: {json.dumps(fragment)} score {best.score:.6f}")
    return 0


EXAMPLES = {  # each command"s example, under its help (cli.Commands)
    "train-head": "train-head --config configs/demo_config.json --pairs samples/prompts.csv --images samples --out head",
    "build-bank": "build-bank --config configs/demo_config.json --pairs samples/prompts.csv --images samples --out bank",
    "tune-blend": "tune-blend --config with-head.json --prompts samples/prompts.csv --output blend.json",
}
TITLE = "Learn from labelled images"  # its heading in the top-level help


def add_commands(sub) -> None:
    for name, func, helptext in (("train-head", cmd_train_head, "train a CLIP-features -> prompt-embedding head"),
                                 ("build-bank", cmd_build_bank, "a retrieval bank of labelled images' features and "
                                                                "prompt embeddings")):
        p = sub.add_parser(name, help=helptext)
        add_config(p, what="JSON config (its CLIP and sentence model)")
        p.add_argument("--pairs", required=True, help="CSV with columns image (or imgId) and prompt")
        p.add_argument("--images", help="folder the pairs' images are in (needed for imgId; default: the "
                                        "folder that holds them all)")
        p.add_argument("--out", required=True, type=output_folder, help="output folder")
        p.add_argument("--features", type=output_file, help="feature store to use and update (default: features.safetensors "
                                          "in --out)")
        if name == "train-head":
            p.add_argument("--hidden", type=non_negative_int, default=0,
                           help="MLP hidden width; 0 (default) is a linear map")
            p.add_argument("--epochs", type=positive_int, default=50, help="most epochs (default 50)")
            p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
            p.add_argument("--batch-size", type=positive_int, default=256, help="pairs per step (default 256)")
            p.add_argument("--val-fraction", type=probability, default=0.1, help="held-out share (default 0.1)")
            p.add_argument("--patience", type=positive_int, default=5,
                           help="epochs without a better score before stopping")
            p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
        add_common(p, progress=True)
        p.set_defaults(func=func)

    p = sub.add_parser("tune-blend", help="pick the blend of prompt, head and bank on labelled images")
    add_config(p, what="JSON config with head_path and/or bank_path")
    p.add_argument("--prompts", required=True, help="CSV imgId,prompt of the true prompts")
    p.add_argument("--data-path", help="the labelled images (overrides the config's data_path)")
    p.add_argument("--step", type=grid_step, default=0.1, help="grid step of the weights, in (0, 1] (default 0.1)")
    p.add_argument("--show", type=positive_int, default=10, help="blends shown (each component alone is always shown)")
    p.add_argument("--output", type=output_file, help="write the best settings as a config fragment (JSON)")
    add_common(p, progress=True)
    p.set_defaults(func=cmd_tune_blend)
