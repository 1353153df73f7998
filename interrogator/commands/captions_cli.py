"""The training-set commands (``captions-*``): the workspace's operations on a captioned folder, as the app's
Dataset tab makes them (interrogator/workspace). Each reads the folder with the run's rules: ``--config`` and the
flags ``--txt-extension``, ``--txt-dir``, ``--recursive`` and ``--tag-separator`` say where the caption files are."""
from __future__ import annotations

from ..core.config import load_config
from .arguments import add_common, int_at_least, output_file
from .flags import add_config_flags, flag_overrides

LAYOUT_KEYS = ("txt_extension", "txt_dir", "recursive", "tag_separator", "tagger_path")
TITLE = "Training sets: review, fix and export caption files"
EXAMPLES = {  # each command's example, under its help (cli.Commands)
    "captions-stats": "captions-stats data/set --top 20",
    "captions-edit": "captions-edit data/set --remove-tag solo --tag solo --dry-run",
    "captions-undo": "captions-undo data/set",
    "captions-redo": "captions-redo data/set",
    "captions-export": "captions-export data/set --format hf",
}


def workspace(args):
    from ..workspace.workspace import Workspace  # lazy, as every import of a command's work: --help needs none
    config = load_config(args.config, **{**flag_overrides(args), "data_path": args.folder})
    return Workspace(config, args.work)


def query(args):
    from ..workspace.view import Query
    return Query(contains=args.contains or "", excludes=args.excludes or "", tag=args.tag or "",
                 without_tag=args.without_tag or "", state=args.state, rating=args.rating or "").check()


def cmd_stats(args) -> int:
    space = workspace(args)
    stats = space.stats(query(args))
    print("\n".join(stats.lines()))
    width = max([len(t.tag) for t in stats.tags[:args.top]] + [3])
    for t in stats.tags[:args.top]:
        print(f"{t.tag:<{width}}  {t.count:>7}  {t.share:7.1%}")
    return 0


def chosen_edit(args):
    from ..workspace.edits import Edit
    pairs = [("add", args.add and Edit("add", args.add, at=args.at)),
             ("remove-tag", args.remove_tag and Edit("remove-tag", args.remove_tag)),
             ("replace-tag", args.replace_tag and Edit("replace-tag", *args.replace_tag)),
             ("replace-text", args.replace_text and Edit("replace-text", *args.replace_text)),
             ("sort-tags", args.sort_tags and Edit("sort-tags")), ("dedupe-tags", args.dedupe_tags and Edit("dedupe-tags")),
             ("move-to-front", args.move_to_front and Edit("move-to-front", args.move_to_front))]
    return next(edit for _, edit in pairs if edit).check()


def cmd_edit(args) -> int:
    edit, chosen = chosen_edit(args), query(args)  # checked before the folder is read
    space = workspace(args)
    plan = space.preview(edit, query=chosen)
    print(plan.summary())
    for name, before, after in plan.sample(args.sample):
        print(f"  {name}\n    before: {before}\n    after:  {after}")
    if args.dry_run:
        print("dry run: nothing was written")
        return 0
    written = space.apply(plan)
    print(f"wrote {written} caption files; undo with: python -m interrogator captions-undo {args.folder}")
    return 0


def cmd_step(args) -> int:
    space = workspace(args)
    done = space.undo() if args.command == "captions-undo" else space.redo()
    word = "undid" if args.command == "captions-undo" else "redid"
    print(f"{word}: {done}" if done else f"nothing to {'undo' if word == 'undid' else 'redo'}")
    return 0


def cmd_export(args) -> int:
    space = workspace(args)
    path = space.export(args.format, args.output, args.kohya_field, args.replace_outputs)
    print(f"{args.format}: {path} ({len(space.entries)} images)")
    return 0


def add_folder(p) -> None:
    p.add_argument("folder", help="the image folder")
    p.add_argument("--config", help="JSON config (its txt_extension, txt_dir, recursive, tag_separator)")
    p.add_argument("--work", help="the workspace's folder: the undo journal and thumbnails "
                                  "(default: $INTERROGATOR_WORKSPACE, else $XDG_CACHE_HOME/interrogator/workspace)")
    add_config_flags(p, skip=("data_path",), only=LAYOUT_KEYS)


def add_filters(p) -> None:
    from ..workspace.view import STATES  # a light module: no model
    group = p.add_argument_group("which images (all unless told)")
    group.add_argument("--contains", help="captions holding this text (any case)")
    group.add_argument("--excludes", help="captions without this text (any case)")
    group.add_argument("--tag", help="captions holding this tag")
    group.add_argument("--without-tag", help="captions without this tag")
    group.add_argument("--state", choices=STATES, default="all", help="all, captioned, missing (no caption file), "
                       "empty, changed (by hand since a run wrote it)")
    group.add_argument("--rating", help="captions with this rating tag (general, sensitive, questionable, explicit)")


def add_edit(p) -> None:
    group = p.add_argument_group("the edit (one)").add_mutually_exclusive_group(required=True)
    group.add_argument("--add", metavar="TEXT", help="add a trigger or any text (at --at)")
    group.add_argument("--remove-tag", metavar="TAG", help="remove a tag")
    group.add_argument("--replace-tag", nargs=2, metavar=("TAG", "NEW"), help="replace a tag ('' removes it)")
    group.add_argument("--replace-text", nargs=2, metavar=("TEXT", "NEW"), help="replace a text")
    group.add_argument("--sort-tags", action="store_true", help="sort the tags")
    group.add_argument("--dedupe-tags", action="store_true", help="remove duplicate tags")
    group.add_argument("--move-to-front", metavar="TAGS", help="these tags first (separated as captions are)")
    p.add_argument("--at", choices=("start", "end"), default="start", help="where --add puts the text")
    p.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    p.add_argument("--sample", type=int_at_least(0), default=3, help="changes shown before and after (default 3)")


def add_commands(sub) -> None:
    p = sub.add_parser("captions-stats", help="a captioned folder's counts, token lengths and tag frequencies")
    add_folder(p)
    add_filters(p)
    p.add_argument("--top", type=int_at_least(0), default=30, help="tags listed (default 30)")
    add_common(p, device="")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("captions-edit", help="one edit over many caption files, with a preview; undone by captions-undo")
    add_folder(p)
    add_filters(p)
    add_edit(p)
    add_common(p, device="")
    p.set_defaults(func=cmd_edit)

    for name, word in (("captions-undo", "undo"), ("captions-redo", "redo")):
        what = "the last caption write" if word == "undo" else "the last undone caption write"
        p = sub.add_parser(name, help=f"{word} {what} of the workspace (app or command line)")
        add_folder(p)
        add_common(p, device="")
        p.set_defaults(func=cmd_step)

    p = sub.add_parser("captions-export", help="a captioned folder as a trainer's metadata: hf, kohya or csv")
    add_folder(p)
    p.add_argument("--format", required=True, choices=("hf", "kohya", "csv"),
                   help="hf: metadata.jsonl (datasets' imagefolder, diffusers); kohya: fine-tuning JSON; csv")
    p.add_argument("--output", type=output_file, help="where (hf: default <folder>/metadata.jsonl)")
    p.add_argument("--kohya-field", choices=("caption", "tags"), default="caption",
                   help="the kohya JSON's key for the text (default caption)")
    add_common(p, device="")
    p.set_defaults(func=cmd_export)



