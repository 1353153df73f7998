"""What the app does, without Gradio: the core's functions on uploads, server folders and an index, with the
models loaded once and shared by every request, and one lock for the device (requests queue; two models never
run on it at once).

- ``interrogate``: one image through the one batch function (stages.run_stages), as ``submit`` runs a batch
  of one: the same decode, the same models, the same prompt assembly.
- ``analyze``: the top k of each label table with its cosine similarity.
- ``run_folder``: a plan (plan.make_plan) over a server folder inside the allowed roots, run with the shared
  models and the work folder (stopped runs resume), writing the chosen formats.
- ``search``: text or image queries against a feature store made by ``index``.
- ``workspace``: a captioned folder inside the allowed roots to review, edit and export (interrogator/workspace),
  one per folder for the process; ``caption_missing`` runs the core on its images without a caption file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from dataclasses import replace as replace_needs
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..core.config import Config, replace
from ..core.errors import InterrogatorError
from ..core.images import ImageFile, load_image
from ..core.oom import StageBatcher
from ..core.timer import StageTimer
from ..runner.loading import Models, label_tables, load_models
from ..runner.needs import Needs, check, needs_of, table_names
from ..runner.pipeline import run_plan
from ..runner.planner import make_plan
from ..runner.stages import interrogate_files
from ..tools.features import FeatureStore
from ..tools.toolkit import check_store_clip, image_features, search, text_features
from ..workspace.edits import Change
from ..workspace.folder import read_data
from ..workspace.view import Query
from ..workspace.workspace import Workspace, default_work
from .paths import Roots

ANALYZE_TABLES = ("mediums", "movements", "flavors", "artists", "trendings")  # clip-interrogator's Analyze tab
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class InputRefused(InterrogatorError):
    """An upload or a request the app does not take (its message is shown in the page)."""


@dataclass
class PromptResult:
    prompt: str
    caption: str
    negative: str  # '' unless asked for
    text: str      # the caption template's text (the prompt without a template)
    tags: str      # the tagger's tags, joined (with a tagger)


@dataclass
class FoundImage:
    path: Path
    score: float


class Service:
    """The app's models and functions (module docstring). ``loads`` counts model loads (once per process)."""

    def __init__(self, config: Config, roots: Roots, index: Optional[str] = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, work: Optional[str] = None):
        self.config, self.roots, self.max_upload_bytes = config, roots, max_upload_bytes
        self.work = Path(work) if work else default_work()  # the workspace's journal and thumbnails
        self.spaces: Dict[str, Workspace] = {}
        self.lock = threading.Lock()
        self.loads = 0
        self._base = None
        self._tables: Dict[str, object] = {}
        self.uploads: Optional[Roots] = None  # where uploads may be read (ui.launch: Gradio's upload folder)
        self.store = None
        if index is not None:
            self.store = FeatureStore.load(index)

    def needs(self) -> Needs:
        """What the app loads: the captioner, tagger and sentence model, and the CLIP where the config has one
        (or its mode needs one: then a missing clip_path is the error); no image folder."""
        return needs_of(self.config, data=False, sentence=True,  # the Folder tab may write any format
                        clip=self.config.needs_clip() or self.config.clip_path is not None)

    def check(self) -> None:
        """The config's models, before the page starts: one line for a missing or wrong one."""
        check(self.config, self.needs())

    def start(self) -> None:
        """Check, then load every model now (once for the process), so the first request does not wait."""
        self.check()
        with self.lock:
            self.models(self.config)

    # ---- models -------------------------------------------------------------------------------
    def models(self, config: Config):
        """The shared models, with the label tables ``config``'s mode ranks (loaded on first use); call under
        the lock."""
        if self._base is None:
            self._base = load_models(self.config, replace_needs(self.needs(), tables=()))
            self.loads += 1
        names = table_names(config.ranking) if config.needs_clip() else []
        base = self._base
        return Models(base.captioner, base.tagger, base.clip, self.tables(names), base.sentence, base.head, base.bank)

    def tables(self, names: Sequence[str]) -> Dict[str, object]:
        missing = [n for n in names if n not in self._tables]
        if missing:
            if self._base.clip is None:
                raise InputRefused("this needs CLIP: start the app with a config that has clip_path")
            self._tables.update(label_tables(self.config, self._base.clip, missing))
        return {n: self._tables[n] for n in names}

    # ---- one image ----------------------------------------------------------------------------
    def check_upload(self, path: Optional[str]) -> Path:
        """An uploaded image that exists, is not too large and decodes; InputRefused with the reason otherwise.
        Where ``uploads`` is set, its real path must lie in one of those folders (PathRefused otherwise)."""
        if not path:
            raise InputRefused("give an image")
        upload = Path(path) if self.uploads is None else self.uploads.check(path, "upload")
        size = upload.stat().st_size
        if size > self.max_upload_bytes:
            raise InputRefused(f"the upload is {size / 2 ** 20:.1f} MiB; the limit is {self.max_upload_bytes / 2 ** 20:g} MiB")
        try:
            load_image(upload)
        except ValueError as exc:
            raise InputRefused(f"the upload is not an image this tool decodes: {exc}") from None
        return upload

    def interrogate(self, path: Optional[str], mode: Optional[str] = None, negative: bool = False) -> PromptResult:
        """One image's prompt, caption and negative prompt, as ``submit`` makes them."""
        upload = self.check_upload(path)
        config = replace(self.config, mode=mode or self.config.mode, negative_prompt=bool(negative))
        with self.lock:
            record = interrogate_files(self.models(config), config, [ImageFile("upload", upload)],
                                       self.batcher(config), StageTimer(config.resolved_device()))
        tagged = record.tagged[0] if record.tagged else None
        return PromptResult(record.prompts[0], record.captions[0], record.negatives[0] if record.negatives else "",
                            record.final[0], config.tag_separator.join(tagged.names()) if tagged else "")

    def analyze(self, path: Optional[str], k: int = 5) -> Dict[str, List[Tuple[str, float]]]:
        """The top k of each label table (ANALYZE_TABLES) for one image, with cosine similarities."""
        upload = self.check_upload(path)
        with self.lock:
            self.models(self.config)
            tables = self.tables(ANALYZE_TABLES)
            features = self.image_features(upload)
            return {name: table.scored(features, k, self.config.chunk_size)[0] for name, table in tables.items()}

    def image_features(self, upload: Path) -> torch.Tensor:
        """One image's CLIP features through the toolkit's path (call under the lock)."""
        _, features, _ = image_features(self._base.clip, [ImageFile("upload", upload)], self.config)
        return features

    def batcher(self, config: Config) -> StageBatcher:
        return StageBatcher.of(config)

    # ---- a folder -----------------------------------------------------------------------------
    def run_folder(self, folder: str, output: str, formats: Sequence[str],
                   on_batch: Optional[Callable[[int, int], bool]] = None):
        """The batch engine over a server folder inside the allowed roots; the pipeline.RunResult.
        ``on_batch(images done, of)`` after each batch: True stops the run there (it resumes)."""
        if not formats:
            raise InputRefused("choose at least one output format")
        images = self.roots.check(folder, "folder")
        target = self.roots.check(output, "output")
        config = replace(self.config, data_path=str(images), output=str(target), formats=list(formats))
        plan = make_plan(config)
        for file in plan.files:  # a link inside the folder may point outside the allowed ones: never read it
            self.roots.check(str(file.path), "folder image")
        with self.lock:
            return run_plan(plan, progress=False, models=self.models(config), on_batch=on_batch)

    # ---- the index ----------------------------------------------------------------------------
    def search(self, text: str = "", image: Optional[str] = None, k: int = 8) -> List[FoundImage]:
        """The k images of the index most like the text or the image."""
        if self.store is None:
            raise InputRefused("no index: start the app with --index")
        if not (text or "").strip() and not image:
            raise InputRefused("give a text or an image")
        with self.lock:
            self.models(self.config)
            clip = self._base.clip
            check_store_clip(self.store, clip, "--index")
            if image:
                query = self.image_features(self.check_upload(image))
            else:
                query = text_features(clip, [text.strip()])
            found = search(self.store, query.float(), min(k, len(self.store)))[0]
        root = self.store.root
        return [FoundImage(self.roots.check(str(self.store.path(h.image_id, root)), "index image"), h.score) for h in found]


    # ---- the training-set workspace -----------------------------------------------------------
    def workspace(self, folder: str, reload: bool = False) -> Workspace:
        """The workspace of a folder inside the allowed roots (opened once; ``reload`` reads it again). Its
        caption files must lie inside the roots too (a txt_dir or a link outside them is refused)."""
        real = str(self.roots.check(folder, "folder"))
        space = self.spaces.get(real)
        if space is not None and not reload:
            return space
        if space is None:
            space = Workspace(replace(self.config, data_path=real), self.work)
        else:
            space.reload()
        # a link inside the folder, or a txt_dir, may lead outside the allowed folders: never read or write there
        self.roots.check_all([e.image for e in space.entries], "folder image")
        self.roots.check_all([e.caption_file for e in space.entries], "caption file")
        self.spaces[real] = space
        return space

    def caption_missing(self, folder: str, on_batch: Optional[Callable[[int, int], bool]] = None) -> str:
        """Caption the folder's images that have no caption file (``existing_txt: skip``, the txt format), with
        the shared models; the new files go in the workspace's journal (undo removes them). One line of what
        was done. A stopped run keeps its finished batches' files, and resumes."""
        space = self.workspace(folder, reload=True)
        missing = space.select(Query(state="missing"))
        if not missing:
            return "every image has a caption file"
        config = replace(self.config, data_path=str(space.layout.folder), formats=["txt"], existing_txt="skip",
                         output=str(space.journal.folder.parent / "caption-missing.csv"))
        plan = make_plan(config)
        try:
            with self.lock:
                run_plan(plan, progress=False, models=self.models(config), on_batch=on_batch)
        finally:
            made = [Change(e.name, e.caption_file, None, read_data(e.caption_file)) for e in missing]
            made = [c for c in made if c.new is not None]
            if made:
                space.journal.record(f"caption {len(made)} images without a caption file", made)
            space.refresh([c.name for c in made])
        return f"captioned {len(made)} of {len(missing)} images without a caption file"
