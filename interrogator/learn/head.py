"""A learned head: CLIP image features -> the sentence model's prompt embedding (the winners' method).

``train_head`` fits a linear map or a small MLP with cosine loss (AdamW, cosine learning-rate schedule),
scoring a held-out split after every epoch with the competition metric (score.mean_cosine) and keeping
the best epoch (early stopping after ``patience`` epochs without a better score). It is seeded, and on
the CPU deterministic: the same inputs and seed give the same weights bit for bit.

A head is saved as ``<folder>/head.safetensors`` (the weights) and ``<folder>/head.json`` (its shape,
how it was trained, and the identity of the CLIP weights whose features it was trained on). A head only
means something on features of those weights, so loading it for another CLIP is an error naming both.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.atomic import write_bytes
from ..core.errors import ConfigError
from ..core.score import mean_cosine
from ..models.weights import load_weights
from safetensors.torch import save
from safetensors.torch import load_file

HEAD_FORMAT = "1"
WEIGHTS_NAME, SPEC_NAME = "head.safetensors", "head.json"


@dataclass
class HeadSpec:
    """What head.json holds."""

    clip_model: str
    clip_weights: str        # Clip.identity / ClipSpec.identity of the weights it was trained on
    input_dim: int
    output_dim: int
    hidden: int              # 0: a linear map
    training: dict = field(default_factory=dict)
    format: str = HEAD_FORMAT


class Head(torch.nn.Module):
    """Linear, or Linear-GELU-Linear with a residual linear path; outputs are unit-norm."""

    def __init__(self, input_dim: int, output_dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.linear = torch.nn.Linear(input_dim, output_dim)
        self.mlp = None
        if hidden:
            self.mlp = torch.nn.Sequential(torch.nn.Linear(input_dim, hidden), torch.nn.GELU(),
                                           torch.nn.Dropout(dropout), torch.nn.Linear(hidden, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return F.normalize(y, dim=-1)


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    val_score: float


@dataclass
class TrainedHead:
    head: Head
    spec: HeadSpec
    history: List[Epoch]
    best_epoch: int
    val_score: float


def split(n: int, val_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle of 0..n-1 cut into (train, validation); validation gets at least one row."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return order[n_val:], order[:n_val]


def val_score(head: Head, features: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = head(features).numpy()
    ids = [str(i) for i in range(len(targets))]
    return mean_cosine(ids, predicted, ids, targets.numpy())


def train_head(features: np.ndarray, targets: np.ndarray, clip_model: str, clip_weights: str, hidden: int = 0,
               epochs: int = 50, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256,
               val_fraction: float = 0.1, patience: int = 5, dropout: float = 0.1, seed: int = 0,
               device: str = "cpu", progress=None) -> TrainedHead:
    """Fit a head on (features, targets) rows (both unit-norm); see the module docstring."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ConfigError(f"train-head: {len(x)} feature rows and {len(y)} targets; expected one target per image")
    if len(x) < 2:
        raise ConfigError("train-head needs at least 2 pairs (one to train on, one to score)")
    train, val = split(len(x), val_fraction, seed)
    torch.manual_seed(seed)
    head = Head(x.shape[1], y.shape[1], hidden, dropout).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    order_gen = torch.Generator().manual_seed(seed + 1)
    x_train, y_train = x[train].to(device), y[train].to(device)
    x_val, y_val = x[val], y[val]
    best, best_state, best_epoch, history, waited = -math.inf, None, 0, [], 0
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(len(train), generator=order_gen).to(device)
        total = 0.0
        for i in range(0, len(train), batch_size):
            idx = order[i:i + batch_size]
            loss = (1 - (head(x_train[idx]) * y_train[idx]).sum(dim=1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        score = val_score(head.cpu(), x_val, y_val)
        head.to(device)
        history.append(Epoch(epoch, total / len(train), score))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(val_score=f"{score:.4f}")
        if score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    head.load_state_dict(best_state)
    head = head.cpu().eval()
    spec = HeadSpec(clip_model, clip_weights, x.shape[1], y.shape[1], hidden,
                    {"pairs": len(x), "train": len(train), "validation": len(val), "epochs_run": len(history),
                     "best_epoch": best_epoch, "val_score": best, "lr": lr, "weight_decay": weight_decay,
                     "batch_size": batch_size, "seed": seed, "dropout": dropout, "patience": patience})
    return TrainedHead(head, spec, history, best_epoch, best)


def save_head(trained: TrainedHead, folder: str) -> Path:
    folder = Path(folder)
    write_bytes(folder / WEIGHTS_NAME, save({k: v.contiguous() for k, v in trained.head.state_dict().items()}))
    write_bytes(folder / SPEC_NAME, (json.dumps(asdict(trained.spec), indent=1) + "\n").encode())
    return folder


def read_spec(folder: str, key: str = "head_path") -> HeadSpec:
    path = Path(folder) / SPEC_NAME
    try:
        values = json.loads(path.read_text())
        spec = HeadSpec(**values)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key '{key}': {path} is not a head this tool wrote ({type(exc).__name__})") from exc
    if spec.format != HEAD_FORMAT:
        raise ConfigError(f"config key '{key}': {path} has head format {spec.format!r}, expected {HEAD_FORMAT}")
    for name in ("input_dim", "output_dim", "hidden"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "hidden" else 1):
            raise ConfigError(f"config key '{key}': {path}: {name} must be a whole number "
                              f">= {0 if name == 'hidden' else 1}, got {value!r}")
    if not (isinstance(spec.clip_model, str) and isinstance(spec.clip_weights, str)):
        raise ConfigError(f"config key '{key}': {path}: clip_model and clip_weights must be text")
    return spec


def check_clip(spec: HeadSpec, weights, where: str) -> None:
    """A head trained on other CLIP weights (identity.Weights) is refused, with one line naming both."""
    if not weights.matches(spec.clip_weights):
        raise ConfigError(f"{where} was trained on features of other CLIP weights ({spec.clip_model}, "
                          f"{spec.clip_weights}); this run's CLIP is {weights.identity}")


def load_head(folder: str, clip_weights, key: str = "head_path") -> Head:
    """The head in folder, for features of the CLIP whose identity.Weights are ``clip_weights``."""
    spec = read_spec(folder, key)
    check_clip(spec, clip_weights, f"config key '{key}': the head in {folder}")
    head = Head(spec.input_dim, spec.output_dim, spec.hidden)
    try:
        state = load_file(str(Path(folder) / WEIGHTS_NAME))
    except Exception as exc:
        raise ConfigError(f"config key '{key}': cannot read {Path(folder) / WEIGHTS_NAME}: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    load_weights(head, state, Path(folder) / WEIGHTS_NAME, f"config key '{key}'")
    return head.eval()


def predict(head: Head, features: torch.Tensor, device: Optional[str] = None) -> np.ndarray:
    """Unit-norm predicted prompt embeddings (N, output_dim) float32 of feature rows."""
    with torch.no_grad():
        return head.to(device or "cpu")(features.float().to(device or "cpu")).cpu().numpy().astype(np.float32)
