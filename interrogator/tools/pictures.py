"""Pictures of results: a contact sheet of search hits (PIL) and a similarity heatmap (matplotlib, optional)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..core.atomic import atomic_write
from ..core.errors import InterrogatorError
from ..core.images import load_image

TILE = 160     # thumbnail square, px
LABEL = 18     # score line under each tile, px
TITLE = 22     # query line above each row, px


def thumbnail(path: Path, size: int = TILE) -> Image.Image:
    """The image fitted into a size x size square, centred on grey; an undecodable file is a grey square."""
    tile = Image.new("RGB", (size, size), (128, 128, 128))
    try:
        image = load_image(Path(path))
    except ValueError:
        return tile
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def sheet_size(rows: int, columns: int) -> Tuple[int, int]:
    return columns * TILE, rows * (TITLE + TILE + LABEL)


def tile_box(row: int, column: int) -> Tuple[int, int, int, int]:
    """Where the thumbnail of hit ``column`` of query ``row`` lies on the sheet."""
    top = row * (TITLE + TILE + LABEL) + TITLE
    return column * TILE, top, (column + 1) * TILE, top + TILE


def contact_sheet(rows: Sequence[Tuple[str, Sequence[Tuple[Path, float]]]]) -> Image.Image:
    """One row per query: its text, then each hit's thumbnail with its score under it."""
    columns = max((len(hits) for _, hits in rows), default=0)
    sheet = Image.new("RGB", sheet_size(len(rows), max(columns, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (title, hits) in enumerate(rows):
        top = r * (TITLE + TILE + LABEL)
        draw.text((4, top + 4), title[:120], fill=(0, 0, 0))
        for c, (path, score) in enumerate(hits):
            box = tile_box(r, c)
            sheet.paste(thumbnail(path), box[:2])
            draw.text((box[0] + 4, box[3] + 3), f"{score:.3f}  {Path(path).name}"[:26], fill=(0, 0, 0))
    return sheet


def save_png(image: Image.Image, path: str) -> Path:
    return atomic_write(path, lambda f: image.save(f, format="PNG"))


def similarity_heatmap(matrix: np.ndarray, images: Sequence[Path], texts: Sequence[str], path: str,
                       title: str = "") -> Path:
    """Texts down the side, images across with their thumbnails under the columns, cosine in each cell."""
    try:
        import matplotlib  # lazy: the [plot] extra
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: the [plot] extra
    except ImportError as exc:
        raise InterrogatorError("--plot needs matplotlib: pip install -e '.[plot]'") from exc
    sim = np.asarray(matrix, dtype=np.float64).T  # (texts, images)
    n_text, n_img = sim.shape
    fig, ax = plt.subplots(figsize=(2 + 1.6 * n_img, 1.6 + 0.9 * n_text + 1.6))
    ax.imshow(sim, vmin=min(0.0, sim.min()), vmax=max(sim.max(), 1e-6), cmap="viridis",
              extent=(-0.5, n_img - 0.5, n_text - 0.5, -0.5))
    ax.set_yticks(range(n_text), labels=[t if len(t) <= 48 else t[:45] + "..." for t in texts], fontsize=8)
    ax.set_xticks([])
    for (y, x), value in np.ndenumerate(sim):
        ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white")
    for x, image in enumerate(images):
        ax.imshow(np.asarray(thumbnail(image, 96)), extent=(x - 0.45, x + 0.45, n_text + 0.45, n_text - 0.45))
    ax.set_xlim(-0.5, n_img - 0.5)
    ax.set_ylim(n_text + 0.5, -0.5)
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return out
