"""The Dataset tab: a captioned folder's gallery with filters, one caption's editor (token count, tag completion),
batch edits with a preview, undo and redo, "caption missing", the tag table and chart, and exports. Every handler
only calls the service's workspace (interrogator/workspace) and returns what the page shows; each is also an API
endpoint (``/dataset_open``, ``/dataset_save``, ...)."""

import threading
from typing import List, Optional

import pandas as pd

from ..workspace.edits import EDITS, Edit, EditPlan
from ..workspace.stats import CONTEXT
from ..workspace.view import SORTS, STATES, Query
from ..workspace.folder import RATINGS
from .service import InputRefused, Service

PAGE = 100
COMPLETIONS = 5000  # tags offered for completion at most: the folder's most frequent, then the tagger's


class DatasetHandlers:
    """The Dataset tab's functions over one service."""

    def __init__(self, service: Service):
        self.service = service
        self.stop = threading.Event()

    def query(self, contains, excludes, tag, without_tag, state, rating, sort, descending) -> Query:
        return Query(contains or "", excludes or "", tag or "", without_tag or "", state or "all", rating or "",
                     sort or "name", bool(descending)).check()

    def show(self, folder: str, number, *filters):
        """The page's thumbnails with their captions, where it is, and the names shown (in order)."""
        page = self.service.workspace(folder).page(self.query(*filters), int(number or 1), PAGE)
        gallery = [(str(c.thumb), c.name + ": " + (c.text if c.text is not None else "(no caption file)"))
                   for c in page.cards]
        where = f"page {page.number} of {page.pages}: {page.total} images"
        return gallery, page.number, where, [c.name for c in page.cards]

    def stats(self, folder: str, *filters):
        """The counts line, the tag table (tag, count, share) and the chart's 30 most frequent tags."""
        stats = self.service.workspace(folder).stats(self.query(*filters))
        table = pd.DataFrame([(t.tag, t.count, round(t.share, 4)) for t in stats.tags],
                             columns=["tag", "count", "share"])
        return "\n\n".join(stats.lines()), table, table.head(30)

    def open(self, folder: str, *filters):
        self.service.workspace(folder, reload=True)
        return self.show(folder, 1, *filters) + self.stats(folder, *filters)

    def pick(self, folder: str, names: List[str], index: int):
        """The chosen image large, its name, caption, version and token count."""
        if not names or index is None or not 0 <= index < len(names):
            raise InputRefused("choose an image in the gallery")
        entry = self.service.workspace(folder).entry(names[index])
        text = entry.text or ""
        return str(entry.image), entry.name, text, entry.version, self.tokens(folder, text)

    def tokens(self, folder: str, text: str) -> str:
        n = self.service.workspace(folder).tokens(text or "")
        return f"{n} / {CONTEXT} CLIP tokens" + (f" ({n - CONTEXT} past the end are not read)" if n > CONTEXT else "")

    def vocabulary(self, folder: str) -> List[str]:
        names = ()
        if self.service.config.tagger_path:
            from ..models.tagger import check_tagger_folder
            names = check_tagger_folder(self.service.config.tagger_path).names
        return self.service.workspace(folder).vocabulary(names)[:COMPLETIONS]

    def complete(self, folder: str, text: str, tag: Optional[str]) -> str:
        """The caption with the chosen tag added at its end (joined with the folder's separator)."""
        if not tag:
            return text
        separator = self.service.workspace(folder).separator
        return f"{text.rstrip()}{separator}{tag}" if (text or "").strip() else tag

    def add_to_selection(self, name: str, selection: str) -> str:
        if not name:
            raise InputRefused("choose an image in the gallery first")
        names = selected(selection)
        return "\n".join(names if name in names else names + [name])

    def save(self, folder: str, name: str, text: str, version: str):
        if not name:
            raise InputRefused("choose an image in the gallery first")
        entry = self.service.workspace(folder).save(name, text, version)
        return f"saved {name}", entry.version

    def preview(self, folder: str, kind: str, text: str, new: str, at: str, scope: str, name: str, selection: str,
                *filters):
        """The edit's preview (how many files change, and a sample before and after) and the plan to apply, over
        the current filter, the selection (its names, one a line) or the chosen image."""
        space = self.service.workspace(folder)
        edit = Edit(kind, text or "", new or "", at or "start").check()
        if scope == "the chosen image":
            if not name:
                raise InputRefused("choose an image in the gallery first")
            plan = space.preview(edit, names=[name])
        elif scope == "the selection":
            names = selected(selection)
            if not names:
                raise InputRefused("the selection is empty: choose images and press Add to selection")
            plan = space.preview(edit, names=names)
        else:
            plan = space.preview(edit, query=self.query(*filters))
        sample = pd.DataFrame(plan.sample(10), columns=["image", "before", "after"])
        return plan.summary(), sample, plan

    def apply(self, folder: str, plan: Optional[EditPlan]) -> str:
        if plan is None:
            raise InputRefused("preview the edit first")
        written = self.service.workspace(folder).apply(plan)
        return f"wrote {written} caption files ({plan.edit.describe()}); Undo puts them back"

    def undo(self, folder: str) -> str:
        done = self.service.workspace(folder).undo()
        return f"undid: {done}" if done else "nothing to undo"

    def redo(self, folder: str) -> str:
        done = self.service.workspace(folder).redo()
        return f"redid: {done}" if done else "nothing to redo"

    def caption_missing(self, folder: str, progress=None) -> str:
        self.stop.clear()

        def on_batch(done: int, of: int) -> bool:
            if progress is not None:
                progress(done / max(of, 1), desc=f"{done} of {of} images")
            return self.stop.is_set()
        return self.service.caption_missing(folder, on_batch)

    def request_stop(self) -> str:
        self.stop.set()
        return "stopping after the current batch; the captions written so far stay"

    def export(self, folder: str, kind: str, path: str, field: str) -> str:
        space = self.service.workspace(folder)
        target = str(self.service.roots.check(path, "export")) if (path or "").strip() else None
        written = space.export(kind, target, field or "caption")  # hf's default: in the folder, inside the roots
        return f"{kind}: wrote {written} ({len(space.entries)} images)"


def selected(selection: Optional[str]) -> List[str]:
    """The names of a selection box: one a line, blank lines left out."""
    return [line.strip() for line in (selection or "").splitlines() if line.strip()]


def filter_row(gr):
    """The filter and order inputs, in DatasetHandlers.query's order."""
    with gr.Row():
        contains = gr.Textbox(label="text contained", elem_id="dataset-contains")
        excludes = gr.Textbox(label="text not contained", elem_id="dataset-excludes")
        tag = gr.Textbox(label="tag contained", elem_id="dataset-tag")
        without = gr.Textbox(label="tag not contained", elem_id="dataset-without-tag")
    with gr.Row():
        state = gr.Dropdown(list(STATES), value="all", label="caption files", elem_id="dataset-state")
        rating = gr.Dropdown([""] + list(RATINGS), value="", label="rating", elem_id="dataset-rating")
        sort = gr.Dropdown(list(SORTS), value="name", label="sort by", elem_id="dataset-sort")
        descending = gr.Checkbox(label="descending", value=False, elem_id="dataset-descending")
    return [contains, excludes, tag, without, state, rating, sort, descending]


def editor_column(gr):
    """The chosen image large, with its caption's editor."""
    with gr.Column(scale=2):
        image = gr.Image(label="image", type="filepath", interactive=False, elem_id="dataset-image", height=360)
        name = gr.Textbox(label="image", interactive=False, elem_id="dataset-name")
        caption = gr.Textbox(label="caption", lines=4, elem_id="dataset-caption")
        tokens = gr.Markdown(elem_id="dataset-tokens")
        complete = gr.Dropdown([], label="add a tag (the folder's most frequent first, then the tagger's)",
                               allow_custom_value=True, filterable=True, elem_id="dataset-complete")
        with gr.Row():
            save = gr.Button("Save caption", variant="primary", elem_id="dataset-save")
            add = gr.Button("Add to selection", elem_id="dataset-select")
    return image, name, caption, tokens, complete, save, add


def edit_panel(gr):
    """A batch edit's inputs, its preview and its buttons."""
    with gr.Accordion("Edit many captions", open=True):
        with gr.Row():
            kind = gr.Dropdown(list(EDITS), value="remove-tag", label="edit", elem_id="dataset-edit-kind")
            text = gr.Textbox(label="tag or text", elem_id="dataset-edit-text")
            new = gr.Textbox(label="new tag or text (replace)", elem_id="dataset-edit-new")
            at = gr.Radio(["start", "end"], value="start", label="add at", elem_id="dataset-edit-at")
            scope = gr.Radio(["the current filter", "the selection", "the chosen image"], value="the current filter",
                             label="over", elem_id="dataset-edit-scope")
        selection = gr.Textbox(label="the selection (one image a line; Add to selection puts the chosen one here)",
                               lines=2, elem_id="dataset-selection")
        with gr.Row():
            preview = gr.Button("Preview", elem_id="dataset-preview")
            apply = gr.Button("Apply", variant="primary", elem_id="dataset-apply")
            undo = gr.Button("Undo", elem_id="dataset-undo")
            redo = gr.Button("Redo", elem_id="dataset-redo")
        summary = gr.Textbox(label="preview", interactive=False, elem_id="dataset-preview-summary")
        sample = gr.Dataframe(headers=["image", "before", "after"], interactive=False, elem_id="dataset-preview-sample")
    return [kind, text, new, at, scope], selection, preview, apply, undo, redo, summary, sample


def stats_panel(gr):
    with gr.Accordion("The set: tags and token lengths", open=True):
        counts = gr.Markdown(elem_id="dataset-counts")
        with gr.Row():
            table = gr.Dataframe(headers=["tag", "count", "share"], interactive=False, max_height=420,
                                 elem_id="dataset-tags")
            chart = gr.BarPlot(x="tag", y="count", sort="-y", y_lim=[0, None], x_label_angle=-45,
                               label="the 30 most frequent tags", elem_id="dataset-chart")
    return counts, table, chart


def tools_panel(gr):
    """Caption missing (with Stop) and the exports."""
    with gr.Accordion("Caption missing, export", open=True):
        with gr.Row():
            missing = gr.Button("Caption missing", elem_id="dataset-caption-missing")
            stop = gr.Button("Stop", elem_id="dataset-stop")
        with gr.Row():
            kind = gr.Radio(["hf", "kohya", "csv"], value="hf", label="export", elem_id="dataset-export-format")
            path = gr.Textbox(label="to (hf: empty for <folder>/metadata.jsonl)", elem_id="dataset-export-path")
            field = gr.Radio(["caption", "tags"], value="caption", label="kohya key", elem_id="dataset-export-field")
            export = gr.Button("Export", elem_id="dataset-export")
    return missing, stop, [kind, path, field], export


def build_tab(gr, service: Service, one_line) -> DatasetHandlers:
    """The Dataset tab's components and events (inside a ``gr.Tab``); ``one_line`` wraps each handler."""
    h = DatasetHandlers(service)
    with gr.Row():
        folder = gr.Textbox(label="image folder with caption files (inside the allowed folders)", scale=4,
                            elem_id="dataset-folder")
        open_button = gr.Button("Open", variant="primary", elem_id="dataset-open")
    filters = filter_row(gr)
    with gr.Row():
        number = gr.Number(value=1, precision=0, label="page", elem_id="dataset-page", minimum=1)
        show = gr.Button("Show", elem_id="dataset-show")
        where = gr.Markdown(elem_id="dataset-where")
    names, version, plan = gr.State([]), gr.State(""), gr.State(None)
    status = gr.Textbox(label="status", interactive=False, elem_id="dataset-status")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="images", columns=5, height=640, allow_preview=False, elem_id="dataset-gallery")
        image, name, caption, tokens, complete, save, add = editor_column(gr)
    edit_inputs, selection, preview, apply, undo, redo, summary, sample = edit_panel(gr)
    counts, table, chart = stats_panel(gr)
    missing, stop, export_inputs, export = tools_panel(gr)

    shown = [gallery, number, where, names]
    stats_out = [counts, table, chart]
    open_button.click(one_line(h.open), [folder] + filters, shown + stats_out, api_name="dataset_open").then(
        lambda f: gr.Dropdown(choices=one_line(h.vocabulary)(f)), folder, complete, api_name=False)
    refresh = dict(fn=one_line(h.show), inputs=[folder, number] + filters, outputs=shown)
    show.click(api_name="dataset_show", **refresh)

    def picked(f, shown_names, evt: gr.SelectData):
        return one_line(h.pick)(f, shown_names, evt.index)
    gallery.select(picked, [folder, names], [image, name, caption, version, tokens], api_name=False)
    caption.change(one_line(h.tokens), [folder, caption], tokens, api_name=False, show_progress="hidden")
    complete.select(one_line(h.complete), [folder, caption, complete], caption, api_name=False)
    save.click(one_line(h.save), [folder, name, caption, version], [status, version], api_name="dataset_save").then(
        **refresh, api_name=False)
    add.click(one_line(h.add_to_selection), [name, selection], selection, api_name=False)
    preview.click(one_line(h.preview), [folder] + edit_inputs + [name, selection] + filters, [summary, sample, plan],
                  api_name="dataset_preview")
    stats_in = dict(fn=one_line(h.stats), inputs=[folder] + filters, outputs=stats_out, api_name=False)
    for button, fn, api in ((apply, one_line(h.apply), "dataset_apply"), (undo, one_line(h.undo), "dataset_undo"),
                            (redo, one_line(h.redo), "dataset_redo")):
        inputs = [folder, plan] if button is apply else [folder]
        button.click(fn, inputs, status, api_name=api).then(**refresh, api_name=False).then(**stats_in)

    def tag_clicked(f, evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else ""
    table.select(tag_clicked, [folder], filters[2], api_name=False).then(
        lambda: 1, None, number, api_name=False).then(**refresh, api_name=False)

    def caption_missing(f, progress=gr.Progress()):
        return one_line(h.caption_missing)(f, progress)
    missing.click(caption_missing, folder, status, api_name="dataset_caption_missing").then(
        **refresh, api_name=False).then(**stats_in)
    stop.click(h.request_stop, None, status, api_name="dataset_stop", queue=False)
    export.click(one_line(h.export), [folder] + export_inputs, status, api_name="dataset_export")
    return h
