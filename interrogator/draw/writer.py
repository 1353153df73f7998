"""What ``draw`` writes, each file atomically: ``<out>/<name>.png`` (settings in its PNG text), with
``--save-every`` ``<out>/<name>/step-NNNNN.png`` at each saved step, with ``--video`` ``<out>/<name>.mp4`` (through
imageio-ffmpeg) or ``.gif``: the saved latents decoded with ``between`` blended frames from each to the next.
"""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..core.atomic import write_bytes
from ..core.errors import InterrogatorError
from .prompts import Job, Settings
import numpy as np

VIDEO_FORMATS = ("mp4", "gif")


def final_path(out: Path, job: Job) -> Path:
    return out / f"{job.name}.png"


def step_path(out: Path, job: Job, step: int) -> Path:
    return out / job.name / f"step-{step:05d}.png"


def video_path(out: Path, job: Job, video: str) -> Path:
    return out / f"{job.name}.{video}"


def targets(out: Path, job: Job, settings: Settings, video: Optional[str]) -> List[Path]:
    """Every file drawing ``job`` writes."""
    paths = [final_path(out, job)]
    if settings.save_every:
        paths += [step_path(out, job, step) for step in sorted({0, *settings.saved_steps()})]
    if video:
        paths.append(video_path(out, job, video))
    return paths


def check_targets(out: Path, jobs: Sequence[Job], settings: Settings, video: Optional[str], overwrite: bool) -> None:
    """Refuse, before any model loads, to replace a file unless ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise InterrogatorError(f"--out {out}: not a folder")
    if overwrite:
        return
    for job in jobs:
        for path in targets(out, job, settings, video):
            if path.exists():
                raise InterrogatorError(f"--out {out}: {path.relative_to(out)} exists (--overwrite replaces it)")


def png_bytes(image: Image.Image, metadata: dict) -> bytes:
    """A PNG with the drawing's prompt and settings as text chunks (no time stamp: same input, same bytes)."""
    info = PngInfo()
    info.add_text("prompt", metadata["prompt"])
    info.add_text("parameters", json.dumps(metadata, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def blend(saved: Sequence, between: int) -> torch.Tensor:
    """The saved latents with ``between`` linear blends from each to the next: ((between + 1) * (S - 1) + 1, ...)."""
    latents = [z for _, z in saved]
    frames = []
    for a, b in zip(latents, latents[1:]):
        frames += [torch.lerp(a, b, t / (between + 1)) for t in range(between + 1)]
    return torch.cat(frames + [latents[-1]])


def video_bytes(frames: Sequence[Image.Image], video: str, fps: int) -> bytes:
    """The frames as an mp4 (H.264 through imageio-ffmpeg) or an animated GIF."""
    if video == "gif":
        buffer = io.BytesIO()
        frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]),
                       duration=round(1000 / fps), loop=0, optimize=False, disposal=1)
        return buffer.getvalue()
    import imageio.v2 as imageio  # lazy: the [draw] extra
    with tempfile.TemporaryDirectory() as folder:
        temp = Path(folder) / "video.mp4"
        with imageio.get_writer(str(temp), fps=fps, codec="libx264", quality=8, macro_block_size=16,
                                ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame))
        return temp.read_bytes()


def write_drawn(out: Path, drawn, settings: Settings, drawer, video: Optional[str], between: int, fps: int) -> List[Path]:
    """Write one drawn job's files; returns their paths."""
    job = drawn.job
    written = [write_bytes(final_path(out, job), png_bytes(drawn.image, settings.metadata(job, settings.steps)))]
    if settings.save_every:
        images = drawer.render(torch.cat([z for _, z in drawn.saved]))
        for (step, _), image in zip(drawn.saved, images):
            written.append(write_bytes(step_path(out, job, step), png_bytes(image, settings.metadata(job, step))))
    if video:
        frames = drawer.render(blend(drawn.saved, between))
        written.append(write_bytes(video_path(out, job, video), video_bytes(frames, video, fps)))
    return written


def require_video(video: Optional[str]) -> None:
    """The mp4 writer's packages, checked before any model loads."""
    if video == "mp4":
        try:
            import imageio  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise InterrogatorError("--video mp4 needs imageio and imageio-ffmpeg: pip install 'interrogator[draw]' "
                                    "(or --video gif)") from None
