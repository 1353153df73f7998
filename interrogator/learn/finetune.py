"""Contrastive fine-tuning of the config's CLIP on image-text pairs, with open_clip's own training code.

``finetune_clip`` writes the pairs as the CSV dataset ``open_clip_train`` reads (absolute image paths),
starts from the config's checkpoint (an OpenAI TorchScript archive is first converted to a state dict),
and runs ``open_clip_train.main`` in a child process: it configures the root logger and every library
logger for itself, which must not leak into the caller's process. The child registers this project's
model configs first, so every architecture the pipeline knows can be trained. The last epoch's
checkpoint is then saved as ``<out>/clip.safetensors`` (the model's weights alone), which ``clip_path``
loads with the same ``clip_model``; the losses on the pairs before and after are reported, measured
in evaluation mode with open_clip's ``ClipLoss``.

Needs open_clip_train's own requirements (webdataset, braceexpand): ``pip install -e '.[train]'``.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd
import torch

from ..core.atomic import atomic_write, write_bytes
from ..core.errors import InterrogatorError
from ..core.images import load_image
from ..core.offline import enforce_offline
from ..models.clip import load_clip
from ..models.clip_checkpoint import read_torchscript_state_dict, register_model_configs, resolve_clip
from .pairs import read_pairs
from safetensors.torch import save

RUN_NAME = "finetune"


@dataclass
class FinetuneResult:
    checkpoint: Path
    pairs: int
    loss_before: float
    loss_after: float
    log: Path

    def summary(self) -> str:
        return (f"fine-tuned on {self.pairs} pairs: contrastive loss {self.loss_before:.4f} -> {self.loss_after:.4f}\n"
                f"checkpoint: {self.checkpoint} (load it with the same clip_model)\nlog: {self.log}")


def _training_frame(pairs_csv: str, images: Optional[str] = None) -> pd.DataFrame:
    """The pairs as open_clip_train's CSV dataset reads them: absolute image paths and captions. ``images``: the
    folder the pairs' images are in (needed for a CSV of imgId, prompt), as train-head takes it."""
    pairs = read_pairs(pairs_csv, images, least=2)  # contrastive training needs at least 2
    return pd.DataFrame({"filepath": [str(p) for p in pairs.images], "title": pairs.prompts})


def _start_checkpoint(config, spec, out: Path) -> str:
    if spec.form != "torchscript":
        return str(Path(config.clip_path).resolve())
    start = out / "start.pt"
    state = read_torchscript_state_dict(config.clip_path)
    atomic_write(start, lambda f: torch.save(state, f))
    return str(start)


def train_arguments(config, spec, start: str, data: Path, out: Path, epochs: int, batch_size: int, lr: float,
                    seed: int) -> List[str]:
    """open_clip_train's command line for this run (``spec``: the config's resolved ClipSpec)."""
    device = config.resolved_device()
    args = ["--train-data", str(data), "--dataset-type", "csv", "--csv-separator", "\t",
            "--csv-img-key", "filepath", "--csv-caption-key", "title", "--model", spec.arch, "--pretrained", start,
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr), "--warmup", "0",
            "--wd", "0.1", "--workers", "0", "--seed", str(seed), "--logs", str(out / "logs"), "--name", RUN_NAME,
            "--save-frequency", str(epochs), "--report-to", "", "--device", device,
            "--precision", "amp" if device.startswith("cuda") else "fp32"]
    if spec.quick_gelu:
        args.append("--force-quick-gelu")
    for key, flag in (("mean", "--image-mean"), ("std", "--image-std")):
        value = spec.preprocess.get(f"image_{key}")
        if value is not None:
            args += [flag, *map(str, value)]
    return args


def contrastive_loss(clip, pairs: pd.DataFrame) -> float:
    """open_clip's ClipLoss of the pairs as one batch, in evaluation mode."""
    import open_clip  # lazy: slow to import
    pixels = torch.stack([clip.preprocess(load_image(Path(p))) for p in pairs.filepath])
    tokens = open_clip.get_tokenizer(clip.name)(pairs.title.tolist())
    with torch.inference_mode():
        model = clip.model
        image = model.encode_image(pixels.to(clip.device, clip.dtype), normalize=True).float()
        text = model.encode_text(tokens.to(clip.device), normalize=True).float()
        loss = open_clip.ClipLoss()(image, text, model.logit_scale.exp().float())
    return float(loss)


def finetune_clip(config, pairs_csv: str, out: str, epochs: int = 1, batch_size: int = 32, lr: float = 1e-5,
                  seed: int = 0, images: Optional[str] = None) -> FinetuneResult:
    """Fine-tune the config's CLIP on the pairs; the weights go to ``<out>/clip.safetensors``."""

    for module in ("open_clip_train", "webdataset", "braceexpand"):
        try:
            __import__(module)
        except ImportError as exc:
            raise InterrogatorError(f"finetune-clip runs open_clip_train, which needs {module}: "
                                    f"pip install -e '.[train]'") from exc
    config.require_paths("clip_path")
    config.check_dtype()
    pairs = _training_frame(pairs_csv, images)
    if batch_size > len(pairs):
        batch_size = len(pairs)  # open_clip_train drops the last partial batch: keep at least one step
    out_path = Path(out)
    if (out_path / "logs" / RUN_NAME).exists():
        raise InterrogatorError(f"--out: {out_path} already holds a fine-tuning run; name a new folder")
    out_path.mkdir(parents=True, exist_ok=True)
    data = out_path / "pairs.tsv"
    write_bytes(data, pairs.to_csv(sep="\t", index=False).encode("utf-8"))
    device, dtype = config.resolved_device(), config.torch_dtype()
    before = contrastive_loss(load_clip(config.clip_model, config.clip_path, device, dtype), pairs)
    spec = resolve_clip(config.clip_model, config.clip_path)
    start = _start_checkpoint(config, spec, out_path)
    log = out_path / "train.log"
    argv = train_arguments(config, spec, start, data, out_path, epochs, batch_size, lr, seed)
    with open(log, "w") as stream:
        proc = subprocess.run([sys.executable, "-m", "interrogator.learn.finetune", *argv], stdout=stream,
                              stderr=subprocess.STDOUT)
    checkpoint = out_path / "logs" / RUN_NAME / "checkpoints" / f"epoch_{epochs}.pt"
    if proc.returncode != 0 or not checkpoint.is_file():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["no output"]
        raise InterrogatorError(f"open_clip_train failed (exit {proc.returncode}): {tail[0][:300]} (see {log})")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    state = {k[len("module."):] if k.startswith("module.") else k: v.contiguous() for k, v in state.items()}
    target = write_bytes(out_path / "clip.safetensors", save(state))
    after = contrastive_loss(load_clip(config.clip_model, str(target), device, dtype), pairs)
    return FinetuneResult(target, len(pairs), before, after, log)


def _train(argv: Sequence[str]) -> int:
    """The child process: this project's model configs known to open_clip, then open_clip_train's main."""
    enforce_offline()
    register_model_configs()
    from open_clip_train.main import main  # lazy: the [train] extra
    result = main(list(argv))
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(_train(sys.argv[1:]))
