"""The CLIP toolkit's subcommands: index (features), search, classify, similarity, rerank, finetune-clip."""
from __future__ import annotations

from pathlib import Path

from .arguments import (add_common, add_config, output_file, output_folder, picture_file, positive_float, positive_int, probability,
                        template)
from ..core.config import load_config
from ..core.errors import InterrogatorError

# Each command imports what runs it (torch, pandas, the toolkit) when it runs: --help imports none of it.


CLIP_CONFIG = "JSON config (its clip_model and clip_path)"


def _config(args):
    return load_config(args.config, device=getattr(args, "device", None))


def _write_csv(frame, path: str) -> Path:
    from ..runner.submission import write_csv_atomic
    return write_csv_atomic(frame, path, workers=1)


def _warn_failed(failed) -> None:
    for image_id, why in sorted(failed.items()):
        print(f"undecodable: {image_id}: {why}")


def cmd_index(args) -> int:
    from ..tools.features import build_index
    report = build_index(_config(args), args.images, args.out, progress=not args.no_progress)
    print(report.summary())
    return 0


def cmd_search(args) -> int:
    import pandas as pd
    import torch
    from ..tools.features import FeatureStore
    from ..tools.pictures import contact_sheet, save_png
    from ..tools.toolkit import (check_store_clip, files_of, image_features, load_toolkit_clip, read_lines, search,
                                 text_features)
    store = FeatureStore.load(args.index)
    texts = list(args.text or []) + (read_lines(args.queries, "--queries") if args.queries else [])
    if not texts and not args.image:
        raise InterrogatorError("give --text, --queries or --image")
    if args.config:
        config = _config(args)
    else:  # the CLIP that built the index, from where it was
        config = load_config(None, clip_model=store.clip.model, clip_path=store.clip.path, device=args.device)
    clip = load_toolkit_clip(config)
    check_store_clip(store, clip, f"--index {args.index}")
    queries, titles = [], []
    if texts:
        queries.append(text_features(clip, texts))
        titles += texts
    if args.image:
        done, feats, failed = image_features(clip, files_of(args.image), config)
        if failed:
            raise InterrogatorError(f"--image {next(iter(failed))}: {next(iter(failed.values()))}")
        queries.append(feats)
        titles += [f"image {f.image_id}" for f in done]
    hits = search(store, torch.cat(queries), args.k, args.backend)
    root = args.root or store.root
    rows = []
    for title, found in zip(titles, hits):
        print(f"query: {title}")
        for rank, hit in enumerate(found, 1):
            print(f"{rank}\t{hit.score:.4f}\t{hit.image_id}")
            rows.append({"query": title, "rank": rank, "path": hit.image_id, "score": hit.score})
    if args.output:
        print(f"hits: {_write_csv(pd.DataFrame(rows), args.output)}")
    if args.sheet:
        sheet = contact_sheet([(t, [(store.path(h.image_id, root), h.score) for h in found])
                               for t, found in zip(titles, hits)])
        print(f"sheet: {save_png(sheet, args.sheet)}")
    return 0


def cmd_classify(args) -> int:
    import pandas as pd
    from ..core.atomic import write_bytes
    from ..tools.toolkit import classify, folder_files, load_toolkit_clip, read_lines
    config = _config(args)
    labels = read_lines(args.labels, "--labels")
    files = folder_files(args.images)
    result = classify(load_toolkit_clip(config), files, labels, config, args.template or ["a photo of a {}"])
    top = result.top(args.top)
    frame = pd.DataFrame({"path": result.ids, "label": [t[0][0] for t in top],
                          "probability": [t[0][1] for t in top],
                          "top": ["; ".join(f"{label}={p:.6f}" for label, p in t) for t in top]})
    print(f"classes: {_write_csv(frame, args.output)} ({len(frame)} images, {len(result.labels)} labels)")
    _warn_failed(result.failed)
    if args.threshold is not None:
        kept = result.kept(args.threshold, args.reject or ())
        target = args.kept or str(Path(args.output).with_suffix(".kept.txt"))
        write_bytes(target, "".join(f"{k}\n" for k in kept).encode("utf-8"))
        print(f"kept: {target} ({len(kept)} of {len(result.ids)} images)")
    return 0


def cmd_similarity(args) -> int:
    import pandas as pd
    from ..tools.pictures import similarity_heatmap
    from ..tools.toolkit import files_of, load_toolkit_clip, read_lines, similarity
    config = _config(args)
    texts = list(args.texts)
    if args.texts_file:
        texts += read_lines(args.texts_file, "--texts-file")
    result = similarity(load_toolkit_clip(config), files_of(args.images), texts, config)
    frame = pd.DataFrame(result.matrix, columns=result.texts)
    frame.insert(0, "image", result.ids)
    if args.output:
        print(f"matrix: {_write_csv(frame, args.output)}")
    else:
        print(frame.to_csv(index=False), end="")
    _warn_failed(result.failed)
    if args.plot:
        print(f"plot: {similarity_heatmap(result.matrix, result.paths, result.texts, args.plot, args.title or '')}")
    return 0


def cmd_rerank(args) -> int:
    import pandas as pd
    from ..tools.toolkit import copy_best, folder_files, load_toolkit_clip, rerank
    if args.best and not args.copy_to:
        raise InterrogatorError("--best needs --copy-to DIR")
    if args.copy_to and not args.best:
        raise InterrogatorError("--copy-to needs --best N")
    config = _config(args)
    ranked, failed = rerank(load_toolkit_clip(config), folder_files(args.images), args.prompt, config)
    frame = pd.DataFrame({"rank": range(1, len(ranked) + 1), "path": [h.image_id for h in ranked],
                          "score": [h.score for h in ranked]})
    print(f"ranking: {_write_csv(frame, args.output)} ({len(ranked)} images)")
    _warn_failed(failed)
    if args.best:
        done = copy_best(ranked, args.images, args.copy_to, args.best, args.link)
        print(f"best {len(done)}: {args.copy_to}")
    return 0


def cmd_finetune_clip(args) -> int:
    from ..learn.finetune import finetune_clip
    config = _config(args)
    result = finetune_clip(config, args.pairs, args.out, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, images=args.images)
    print(result.summary())
    return 0


EXAMPLES = {  # each command's example, under its help (cli.Commands)
    'index': 'index --config configs/demo_config.json --images samples --out index.safetensors',
    'features': 'features --config configs/demo_config.json --images samples --out features.safetensors',
    'search': 'search --index index.safetensors --text "a watercolor of a harbor" -k 5 --sheet hits.png',
    'classify': 'classify --config configs/demo_config.json --images samples --labels labels.txt --template "a photo of a {}"',
    'similarity': 'similarity --config configs/demo_config.json --images samples --texts "a cat" "a dog" --output sim.csv',
    'rerank': 'rerank --config configs/demo_config.json --images samples --prompt "a red fox in snow" --best 2 --copy-to best',
    'finetune-clip': 'finetune-clip --config configs/demo_config.json --pairs samples/prompts.csv --images samples --out ft --epochs 1',
}
TITLE = "Search and sort images with CLIP"  # its heading in the top-level help


def add_commands(sub) -> None:
    """Register the toolkit's subcommands on the main parser's subparsers."""
    add_index(sub)
    add_search(sub)
    add_classify(sub)
    add_similarity(sub)
    add_rerank(sub)
    add_finetune(sub)


def clip_command(sub, name: str, helptext: str, images: str = "image folder, searched recursively"):
    """A subcommand on the config's CLIP over a folder of images: --config and --images."""
    p = sub.add_parser(name, help=helptext)
    add_config(p, what=CLIP_CONFIG)
    p.add_argument("--images", required=True, help=images)
    return p


def add_index(sub) -> None:
    for name, helptext in (("index", "CLIP image features of a folder -> feature store (incremental, resumable)"),
                           ("features", "the same as index: the feature store the learned head and bank use")):
        p = clip_command(sub, name, helptext)
        p.add_argument("--out", required=True, type=output_file, help="feature store file (.safetensors)")
        add_common(p, progress=True)
        p.set_defaults(func=cmd_index)


def add_search(sub) -> None:
    p = sub.add_parser("search", help="images of an index nearest a text or an image")
    p.add_argument("--index", required=True, help="feature store made by index")
    p.add_argument("--text", action="append", help="a text query (repeatable)")
    p.add_argument("--queries", help="a file of text queries, one a line")
    p.add_argument("--image", action="append", help="an image query (repeatable)")
    p.add_argument("-k", type=positive_int, default=20, help="hits per query (default 20)")
    add_config(p, required=False, what="JSON config of the CLIP (default: the one that built the index)")
    p.add_argument("--output", type=output_file, help="write the hits as CSV (query, rank, path, score)")
    p.add_argument("--sheet", type=picture_file, help="write a contact sheet PNG of the hits")
    p.add_argument("--root", help="the indexed folder, if it moved since")
    p.add_argument("--backend", choices=("torch", "faiss"), default="torch", help="exact search backend")
    add_common(p, device="cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_search)


def add_classify(sub) -> None:
    p = clip_command(sub, "classify", "zero-shot classification of a folder over a label list")
    p.add_argument("--labels", required=True, help="label file, one label a line")
    p.add_argument("--template", action="append", type=template, help="prompt template with {} (repeatable; averaged); "
                                                       "default 'a photo of a {}'")
    p.add_argument("--output", default="classes.csv", type=output_file, help="CSV of path, label, probability, top")
    p.add_argument("--top", type=positive_int, default=5, help="labels listed per image in the top column")
    p.add_argument("--threshold", type=probability, help="filter mode: keep images whose top label has at least this "
                                                   "probability (with --reject: whose rejected labels are below it)")
    p.add_argument("--reject", action="append", help="with --threshold: a label that drops an image (repeatable)")
    p.add_argument("--kept", type=output_file, help="with --threshold: file of the kept paths (default beside --output)")
    add_common(p)
    p.set_defaults(func=cmd_classify)


def add_similarity(sub) -> None:
    p = sub.add_parser("similarity", help="cosine matrix of images against texts, and a heatmap")
    add_config(p, what=CLIP_CONFIG)
    p.add_argument("--images", nargs="+", required=True, help="image files")
    p.add_argument("--texts", nargs="*", default=[], help="texts")
    p.add_argument("--texts-file", help="a file of texts, one a line")
    p.add_argument("--output", type=output_file, help="CSV of the matrix (default: print it)")
    p.add_argument("--plot", type=picture_file, help="heatmap PNG with thumbnails (needs matplotlib)")
    p.add_argument("--title", help="title of the plot")
    add_common(p)
    p.set_defaults(func=cmd_similarity)


def add_rerank(sub) -> None:
    p = clip_command(sub, "rerank", "order candidate images by their match to a prompt",
                     images="folder of candidates, searched recursively")
    p.add_argument("--prompt", required=True, help="the prompt")
    p.add_argument("--output", default="ranking.csv", type=output_file, help="CSV of rank, path, score")
    p.add_argument("--best", type=positive_int, help="copy the best N into --copy-to")
    p.add_argument("--copy-to", type=output_folder, help="folder for the best N (never overwrites)")
    p.add_argument("--link", action="store_true", help="symlink instead of copying")
    add_common(p)
    p.set_defaults(func=cmd_rerank)


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune-clip", help="contrastive fine-tuning on image-text pairs (open_clip_train)")
    add_config(p, what="JSON config (its clip_model and clip_path: the start)")
    p.add_argument("--pairs", required=True, help="CSV with columns image (or imgId), prompt")
    p.add_argument("--images", help="the folder of the pairs' images (default: the CSV's folder; needed for imgId)")
    p.add_argument("--out", required=True, type=output_folder,
                   help="output folder (clip.safetensors and open_clip_train's logs)")
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="pairs per step (default 32)")
    p.add_argument("--lr", type=positive_float, default=1e-5, help="peak learning rate (default 1e-5)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_common(p)
    p.set_defaults(func=cmd_finetune_clip)
