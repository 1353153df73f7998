"""The page: Prompt, Analyze, Folder, Dataset and Search tabs over a service.Service, each also an API endpoint
(``gradio_client``: ``/prompt``, ``/analyze``, ``/folder``, ``/search``, the Dataset tab's ``/dataset_*``). Every
error is one line in the page (gr.Error), never a traceback."""
from __future__ import annotations

import atexit
import functools
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import List, Optional

from ..core.errors import InterrogatorError
from ..runner.modes import MODES
from ..runner.outputs import FORMATS, format_paths
from .paths import Roots
from .service import ANALYZE_TABLES, Service
from ..tools.pictures import contact_sheet, save_png
from .dataset_tab import build_tab
import os
import time
import pandas as pd


def debugging() -> bool:
    """--debug: the interrogator logger at DEBUG (commands/cli.py)."""
    return logging.getLogger("interrogator").isEnabledFor(logging.DEBUG)


def refusal(line: str):
    """The gr.Error that carries one line to the page; Gradio prints its traceback on the server's console only
    with --debug (a refused request is the user's input, not the server's fault)."""
    import gradio as gr  # lazy: the [app] extra
    return gr.Error(line, print_exception=debugging())


def one_line(fn):
    """A handler whose every failure is one line in the page: the tool's own message, or the exception's."""
    @functools.wraps(fn)
    def handler(*args, **kwargs):
        import gradio as gr  # lazy: the [app] extra
        try:
            return fn(*args, **kwargs)
        except InterrogatorError as exc:
            raise refusal(first_line(exc)) from None
        except OSError as exc:
            raise refusal(f"cannot use {exc.filename or ''}: {exc.strerror or exc}") from None
        except gr.Error:
            raise
        except Exception as exc:
            raise refusal(f"unexpected {type(exc).__name__}: {first_line(exc) if str(exc) else ''}") from None
    return handler


class Handlers:
    """The tabs' functions (Gradio calls them in its worker threads; the service queues the device)."""

    def __init__(self, service: Service):
        self.service = service
        self.stop = threading.Event()
        self.downloads = Path(tempfile.mkdtemp(prefix="interrogator-app-"))  # search results the browser fetches
        atexit.register(shutil.rmtree, self.downloads, True)  # gone with the app, never left in the temp folder

    def prompt(self, image: Optional[str], mode: str, negative: bool):
        result = self.service.interrogate(image, mode, negative)
        config = self.service.config
        return ((result.prompt, result.caption, result.negative)
                + ((result.tags,) if config.tagger_path else ()) + ((result.text,) if config.caption_template else ()))

    def preview(self, image: Optional[str]) -> Optional[str]:
        """The uploaded image, shown as the image it is (checked as ``prompt`` checks it); nothing without one."""
        return str(self.service.check_upload(image)) if image else None

    def analyze(self, image: Optional[str], k: int):
        tables = self.service.analyze(image, int(k))
        return [{label: score for label, score in tables[name]} for name in ANALYZE_TABLES]

    def folder(self, folder: str, output: str, formats: List[str], progress=None):
        self.stop.clear()
        first = []  # (time, images done) at the first report: the rate counts from there, resumed images aside

        def on_batch(done: int, of: int) -> bool:
            now = time.monotonic()
            first[:] = first or [(now, done)]
            if progress is not None:
                since, base = first[0]
                rate = f", {(done - base) / (now - since):.1f} images/s" if now > since and done > base else ""
                progress(done / max(of, 1), desc=f"{done} of {of} images{rate}")
            return self.stop.is_set()
        result = self.service.run_folder(folder, output, formats, on_batch)
        paths = format_paths(str(result.output or output))
        written = [str(paths[f]) for f in ("kaggle", "csv", "jsonl", "parquet") if f in formats and paths[f].exists()]
        return result.summary(), written

    def request_stop(self):
        self.stop.set()
        return "stopping after the current batch; run again to resume"

    def search(self, text: str, image: Optional[str], k: int):
        hits = self.service.search(text, image, int(k))
        title = text.strip() if (text or "").strip() else "image query"
        gallery = [(str(h.path), f"{h.score:.4f} {h.path.name}") for h in hits]
        folder = Path(tempfile.mkdtemp(dir=self.downloads))
        csv = folder / "hits.csv"
        pd.DataFrame([{"query": title, "rank": r, "path": str(h.path), "score": h.score}
                      for r, h in enumerate(hits, 1)]).to_csv(csv, index=False)
        sheet = save_png(contact_sheet([(title, [(h.path, h.score) for h in hits])]), str(folder / "sheet.png"))
        return gallery, [str(csv), str(sheet)]


def upload_box(elem_id: str, label: str = "image (drop or click to upload)"):
    """An upload that reaches the handler as the file's own bytes: the app decodes it as ``submit`` does and
    says in one line why it cannot (gr.Image would decode and re-encode it first, with its own errors)."""
    import gradio as gr  # lazy: the [app] extra
    return gr.File(label=label, type="filepath", elem_id=elem_id)


def first_line(exc: Exception) -> str:
    """One line for a refusal: the first line of the message (Gradio's and pydantic's run to several)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError: "1 validation error for X", then the error itself
        try:
            return f"{getattr(exc, 'title', type(exc).__name__)}: {errors()[0]['msg']}".splitlines()[0]
        except (TypeError, LookupError, ValueError):
            pass
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def page_class():
    """Gradio Blocks whose every refused call carries one line to the client: Gradio's own refusals (a path
    that was not uploaded, a value outside a dropdown's choices, too few inputs) are raised before a handler
    runs, and Gradio sends their text only as a ``gr.Error``; the rest of a traceback stays in the server."""
    import gradio as gr  # lazy: the [app] extra

    class Page(gr.Blocks):
        async def process_api(self, *args, **kwargs):
            try:
                return await super().process_api(*args, **kwargs)
            except gr.Error as exc:  # Gradio's own (a value outside a dropdown's choices): its traceback too
                exc.print_exception = debugging()
                raise
            except Exception as exc:
                raise refusal(first_line(exc)) from None
    return Page


def prompt_tab(gr, h: Handlers, config) -> None:
    """The Prompt tab's components and events (inside its ``gr.Tab``): the upload shown as the image."""
    with gr.Row():
        with gr.Column():
            image = upload_box("prompt-image")
            shown_image = gr.Image(label="the image", type="filepath", interactive=False, height=300,
                                   elem_id="prompt-preview")
        with gr.Column():
            mode = gr.Dropdown(list(MODES), value=config.mode, label="mode", elem_id="prompt-mode")
            negative = gr.Checkbox(label="negative prompt too", value=False, elem_id="prompt-negative")
            run = gr.Button("Interrogate", variant="primary", elem_id="prompt-run")
    prompt = gr.Textbox(label="prompt", buttons=["copy"], elem_id="prompt-out", interactive=False)
    caption = gr.Textbox(label="caption", elem_id="prompt-caption", interactive=False)
    negative_out = gr.Textbox(label="negative prompt", elem_id="prompt-negative-out", interactive=False)
    shown = [prompt, caption, negative_out]
    if config.tagger_path:  # the config's tagger and caption template, where it has them
        shown.append(gr.Textbox(label="tags", buttons=["copy"], elem_id="prompt-tags", interactive=False))
    if config.caption_template:
        shown.append(gr.Textbox(label=f"text ({config.caption_template})", buttons=["copy"],
                                elem_id="prompt-text", interactive=False))
    run.click(one_line(h.prompt), [image, mode, negative], shown, api_name="prompt")
    image.change(one_line(h.preview), image, shown_image, api_name=False)


def build(service: Service):
    """The Gradio Blocks of the app."""
    import gradio as gr  # lazy: the [app] extra
    h = Handlers(service)
    config = service.config
    with page_class()(title="interrogator") as page:
        gr.Markdown("# interrogator\nImage to prompt, label analysis, folders and search, on local models.")
        with gr.Tab("Prompt", id="prompt"):
            prompt_tab(gr, h, config)
        with gr.Tab("Analyze", id="analyze"):
            with gr.Row():
                a_image = upload_box("analyze-image")
                with gr.Column():
                    k = gr.Slider(1, 20, value=5, step=1, label="top k", elem_id="analyze-k")
                    a_run = gr.Button("Analyze", variant="primary", elem_id="analyze-run")
            with gr.Row():
                labels = [gr.Label(label=f"{name}: cosine similarity to the image", num_top_classes=20,
                                   elem_id=f"analyze-{name}") for name in ANALYZE_TABLES]
            a_run.click(one_line(h.analyze), [a_image, k], labels, api_name="analyze")
        with gr.Tab("Folder", id="folder"):
            folder = gr.Textbox(label="image folder on this server (inside the allowed folders)", elem_id="folder-path")
            output = gr.Textbox(label="output file (the submission; other formats beside it)", elem_id="folder-output")
            formats = gr.CheckboxGroup(list(FORMATS), value=["kaggle"], label="outputs", elem_id="folder-formats")
            with gr.Row():
                f_run = gr.Button("Run", variant="primary", elem_id="folder-run")
                f_stop = gr.Button("Stop", elem_id="folder-stop")
            summary = gr.Textbox(label="summary", lines=6, elem_id="folder-summary", interactive=False)
            files = gr.File(label="outputs", file_count="multiple", elem_id="folder-files")

            def folder_run(folder_path, output_path, chosen, progress=gr.Progress()):
                return one_line(h.folder)(folder_path, output_path, chosen, progress)
            f_run.click(folder_run, [folder, output, formats], [summary, files], api_name="folder")
            f_stop.click(h.request_stop, None, summary, api_name="stop", queue=False)
        with gr.Tab("Dataset", id="dataset"):
            h.dataset = build_tab(gr, service, one_line)
        with gr.Tab("Search", id="search", visible=service.store is not None):
            with gr.Row():
                query = gr.Textbox(label="text", elem_id="search-text")
                s_image = upload_box("search-image", "or an image")
                with gr.Column():
                    s_k = gr.Slider(1, 50, value=8, step=1, label="top k", elem_id="search-k")
                    s_run = gr.Button("Search", variant="primary", elem_id="search-run")
            gallery = gr.Gallery(label="hits", columns=4, elem_id="search-gallery")
            downloads = gr.File(label="hits CSV and contact sheet", file_count="multiple", elem_id="search-files")
            s_run.click(one_line(h.search), [query, s_image, s_k], [gallery, downloads], api_name="search")
    return page, h


def launch(service: Service, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Serve the app: on 127.0.0.1 unless told otherwise, no share link unless asked, files served only from
    the allowed folders and the index's, uploads at most the service's limit."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    import gradio.utils  # lazy: the [app] extra
    page, handlers = build(service)
    allowed = [str(r) for r in service.roots.folders] + [str(handlers.downloads), str(service.work / "thumbs")]
    service.uploads = Roots.of(gradio.utils.get_upload_folder(), *service.roots.folders)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, share=share, allowed_paths=allowed,
                max_file_size=service.max_upload_bytes, prevent_thread_lock=not block, quiet=True, show_error=False)
    return page
