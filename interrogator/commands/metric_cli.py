"""The metric's subcommands: embed (prompts -> submission CSV) and score (a submission against true prompts)."""
from __future__ import annotations

from pathlib import Path

from ..core.config import load_config
from ..core.errors import InterrogatorError
from .arguments import add_common, output_file, positive_int


def sentence_model(args):
    """The sentence model of --embedding-path, else of the config's embedding_path."""
    from ..models.embed import load_sentence_model  # lazy, as every model import here: --help needs none
    if args.embedding_path:
        return load_sentence_model(str(Path(args.embedding_path).resolve()), args.device or "cpu")
    if not args.config:
        raise InterrogatorError("give --config or --embedding-path to name the sentence model")
    config = load_config(args.config, device=args.device)
    config.require_paths("embedding_path")
    return load_sentence_model(config.embedding_path, config.resolved_device(), config.embedding_dir)


def cmd_embed(args) -> int:
    from ..core.score import read_prompts
    from ..models.embed import embed_prompts
    from ..runner.submission import write_submission
    prompts = read_prompts(args.prompts)
    model = sentence_model(args)
    vectors = embed_prompts(model, prompts.prompt.tolist(), args.batch_size)
    path = write_submission(prompts.imgId.tolist(), vectors, args.output)
    print(f"submission: {path} ({len(prompts)} images x {vectors.shape[1]})")
    return 0


def cmd_score(args) -> int:
    from ..core.score import cosine_per_image, mean_cosine, read_prompts
    from ..models.embed import embed_prompts
    from ..runner.submission import read_submission
    ids, vectors = read_submission(args.submission)
    prompts = read_prompts(args.prompts)
    truth = embed_prompts(sentence_model(args), prompts.prompt.tolist(), args.batch_size)
    scores = cosine_per_image(ids, vectors, prompts.imgId.tolist(), truth)
    for image_id, value in scores.items():
        print(f"{image_id} {value:.6f}")
    print(f"score {mean_cosine(ids, vectors, prompts.imgId.tolist(), truth):.6f}")
    return 0


def add_sentence_model(p) -> None:
    """--config or --embedding-path (one of them), the batch size and the device."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="JSON config (its embedding_path)")
    group.add_argument("--embedding-path", help="sentence-transformers model folder")
    p.add_argument("--batch-size", type=positive_int, default=64, help="prompts embedded at once (default 64)")
    add_common(p, device="cpu or cuda (default: the config's, else cpu)")


EXAMPLES = {  # each command"s example, under its help (cli.Commands)
    "embed": "embed --config configs/demo_config.json --prompts samples/prompts.csv --output truth.csv",
    "score": "score --config configs/demo_config.json --prompts samples/prompts.csv --submission output/demo_submission.csv",
}
TITLE = "Embeddings and scores"  # its heading in the top-level help


def add_commands(sub) -> None:
    p = sub.add_parser("embed", help="prompts CSV (imgId,prompt) -> submission CSV")
    p.add_argument("--prompts", required=True, help="CSV with columns imgId,prompt")
    p.add_argument("--output", required=True, type=output_file, help="submission path")
    add_sentence_model(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("score", help="per-image cosine of a submission against true prompts")
    p.add_argument("--submission", required=True, help="submission CSV")
    p.add_argument("--prompts", required=True, help="CSV with the true prompts (imgId,prompt)")
    add_sentence_model(p)
    p.set_defaults(func=cmd_score)
