"""The web app's subcommand (the [app] extra)."""
from __future__ import annotations

import socket
from pathlib import Path

from ..core.config import load_config
from ..core.errors import InterrogatorError
from .arguments import add_common, add_config, port_number, positive_int
from .flags import add_config_flags, flag_overrides, print_config


def cmd_app(args) -> int:
    config = load_config(args.config, **{**flag_overrides(args), "device": args.device})
    if args.print_config:
        print_config(config)
        return 0
    try:
        import gradio  # noqa: F401  (lazy: the [app] extra)
    except ImportError:
        raise InterrogatorError("the app needs gradio: pip install 'interrogator[app]'") from None
    from ..app.paths import Roots  # lazy: the app imports gradio
    from ..app.service import Service  # lazy: with the app below
    from ..app.ui import launch  # lazy: Gradio
    check_port(args.host, args.port)
    for folder in args.allow:
        if not Path(folder).is_dir():
            raise InterrogatorError(f"--allow {folder}: not a folder")
    service = Service(config, Roots.of(*args.allow), args.index, args.max_upload_mb * 1024 * 1024, args.work)
    if service.store is not None:
        service.roots = Roots.of(*args.allow, service.store.root)
    service.start()
    print(f"interrogator app on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    launch(service, args.host, args.port, args.share)
    return 0


def check_port(host: str, port: int) -> None:
    """The address can be listened on, before any model loads (a port in use is one line, not a late error)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise InterrogatorError(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}") from None


EXAMPLES = {  # each command"s example, under its help (cli.Commands)
    "app": "app --config configs/demo_config.json --allow ~/datasets   # then open http://127.0.0.1:7860",
}
TITLE = "The web app"  # its heading in the top-level help


def add_commands(sub) -> None:
    p = sub.add_parser("app", help="the local web app: prompt, analyze, caption a folder, review and fix a training "
                                   "set, search (the [app] extra)")
    add_config(p, what="JSON config (its models)")
    p.add_argument("--index", help="a feature store made by `index`, for the Search tab")
    p.add_argument("--allow", action="append", default=[], help="a server folder the Folder and Dataset tabs may read and write "
                                                                "(repeatable); nothing else is served")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="the port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--work", help="the Dataset tab's folder for its undo journal and thumbnails "
                                  "(default: $INTERROGATOR_WORKSPACE, else $XDG_CACHE_HOME/interrogator/workspace)")
    p.add_argument("--max-upload-mb", type=positive_int, default=20, help="the largest upload, in MiB (default 20)")
    add_common(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_app)
