"""The README's draw figure: three prompts drawn with the demo models and a random miniature VQGAN (random
weights), each row from the start to the last step, with the demo CLIP's similarity of each image to its prompt.

    python bench/draw_figure.py --out draw-demo.png       # about 3 minutes on 2 CPU cores
    python bench/draw_figure.py --out docs/draw-demo.png  # the README's copy, when you mean to replace it

It writes only where --out says (no default: the README's figure is a tracked file).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw  # noqa: E402

from interrogator.commands.cli import main  # noqa: E402
from interrogator.core.config import load_config  # noqa: E402
from interrogator.draw.miniature import make_demo_vqgan  # noqa: E402
from interrogator.draw.optimize import include_similarity  # noqa: E402
from interrogator.draw.prompts import Settings, make_jobs  # noqa: E402
from interrogator.models.clip import load_config_clip  # noqa: E402

PROMPTS = ["a lighthouse on a cliff at sunset|oil painting:0.5", "a red fox in the snow", "a city street in the rain"]
STEPS, EVERY, SIZE = 60, 20, 128
LABEL = 18


def main_figure(out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="draw-figure-"))
    vqgan = make_demo_vqgan(work / "vqgan")
    config = REPO / "configs" / "demo_config.json"
    code = main(["draw", "--config", str(config), "--vqgan", str(vqgan), *sum((["--prompt", p] for p in PROMPTS), []),
                 "--exclude", "watermark, blurry, cropped", "--extras", "watercolor paper", "--size", str(SIZE),
                 str(SIZE), "--steps", str(STEPS), "--save-every", str(EVERY), "--out", str(work / "out"),
                 "--no-progress"])
    if code:
        raise SystemExit(code)
    clip = load_config_clip(load_config(config))
    steps = list(range(0, STEPS + 1, EVERY))
    sheet = Image.new("RGB", (len(steps) * SIZE, len(PROMPTS) * (SIZE + 2 * LABEL)), "white")
    pen = ImageDraw.Draw(sheet)
    for row, job in enumerate(make_jobs(PROMPTS, Settings())):
        images = [Image.open(work / "out" / job.name / f"step-{s:05d}.png").convert("RGB") for s in steps]
        scores = include_similarity(clip, images, job)
        top = row * (SIZE + 2 * LABEL)
        pen.text((4, top + 2), job.prompt.replace("|", "  |  ") + "   (random weights)", fill="black")
        for col, (step, image, score) in enumerate(zip(steps, images, scores)):
            sheet.paste(image, (col * SIZE, top + LABEL))
            pen.text((col * SIZE + 4, top + LABEL + SIZE + 2), f"step {step}: {score:+.3f}", fill="black")
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    main_figure(parser.parse_args().out)
