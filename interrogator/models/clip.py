"""CLIP from a local open_clip checkpoint: image features and fast exact label encoding."""
from __future__ import annotations

from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..core.errors import ModelLoadError
from .tokenizer import fast_tokenizer
from ..core.workers import map_chunks

from .clip_checkpoint import read_torchscript_state_dict, resolve_clip
from .weights import check_loaded, load_weights
import inspect

UNCAPPED_CONTEXT = 1024  # tokenizer context used to count tokens past CLIP's 77
PREFIX_CHUNK_POSITIONS = 1 << 18  # key positions of one suffix batch in encode_prefixed (bounds its memory)


@dataclass
class Clip:
    """An open_clip model with its preprocess and tokenizer, on one device."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    device: torch.device
    dtype: torch.dtype
    identity: Optional[str] = None  # the architecture and checkpoint contents, for the label cache
    weights: object = None  # identity.Weights: the identity, and the one versions before 0.3 recorded

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, batch_size: int = 0) -> torch.Tensor:
        """L2-normalised image features (B, D) for a preprocessed batch."""
        pixels = pixels.to(self.device, self.dtype, non_blocking=True)
        step = batch_size or pixels.shape[0]
        feats = [self.model.encode_image(pixels[i:i + step]) for i in range(0, pixels.shape[0], step)]
        return F.normalize(torch.cat(feats).float(), dim=-1).to(self.dtype)

    @torch.inference_mode()
    def encode_labels(self, labels: Sequence[str], batch_size: int = 1024, progress=None,
                      tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """L2-normalised text features (N, D) in label order, computed exactly but fast.

        Labels are sorted by token count and each batch's context is cut after its
        longest sequence: the text transformer is causal, so tokens after a
        sequence's EOT cannot change the EOT feature.
        """
        if tokens is None:  # the caller may pass the labels' tokens if it already has them
            tokens = tokenize_many(self.tokenizer, list(labels))
        lengths = token_lengths(tokens)
        order = torch.argsort(lengths, descending=True, stable=True)
        out = torch.empty((len(labels), self.embed_dim), dtype=self.dtype, device=self.device)
        for start in range(0, len(labels), batch_size):
            idx = order[start:start + batch_size]
            cut = int(lengths[idx].max())
            batch = tokens[idx, :cut].to(self.device, non_blocking=True)
            out[idx.to(self.device)] = self.encode_text_tokens(batch).to(self.dtype)
            if progress is not None:
                progress.update(len(idx))
        return out

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised features of token rows that may be shorter than the full context."""
        model = self.model
        if not _supports_cut_context(model) or tokens.shape[1] == model.positional_embedding.shape[0]:
            full = tokens
            if tokens.shape[1] < self.context_length:
                full = F.pad(tokens, (0, self.context_length - tokens.shape[1]))
            return F.normalize(model.encode_text(full).float(), dim=-1)
        from open_clip.transformer import text_global_pool  # lazy: slow to import
        n = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:n].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, model.text_pool_type, **_eos_option(text_global_pool, model))
        if isinstance(x, tuple):  # open_clip 2 returns (pooled, tokens)
            x = x[0]
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
        return F.normalize(x.float(), dim=-1)

    @torch.inference_mode()
    def encode_prefixed(self, tokens: torch.Tensor, groups: Sequence[Tuple[int, int]],
                        max_positions: int = PREFIX_CHUNK_POSITIONS) -> Tuple[torch.Tensor, int]:
        """Normalised features of token rows that come in groups sharing a prefix (a chain step's candidates
        ``prompt, flavor`` for each image of a batch), and the number of token positions the tower computed.

        The tower is causal: a prefix's hidden states at every layer are the same in every text that starts
        with it. So each group's longest common token prefix (shorter than every row, so each keeps its end
        token) runs once, all groups' prefixes in one call, and each layer's keys and values of it are kept. Then the rows' own tokens run at their own positions, attending to their
        group's kept prefix and causally to themselves: rows with as many own tokens run together, whatever
        their group (no padding), in batches of at most ``max_positions`` key positions. The end token's
        feature takes ``ln_final`` and the projection as ``encode_text`` does. A group with no usable prefix,
        or a tower this cannot follow, is encoded in full. Exact up to float rounding (tests: 1e-5 in fp32).
        """
        out = torch.empty((tokens.shape[0], self.embed_dim), dtype=torch.float32, device=self.device)
        lengths = token_lengths(tokens)
        prefixes = [_common_prefix(tokens[a:b], lengths[a:b]) if _supports_prefix(self.model) else 0
                    for a, b in groups]
        positions = 0
        for (start, end), prefix in zip(groups, prefixes):
            if prefix < 2:
                cut = int(lengths[start:end].max())
                out[start:end] = self.encode_text_tokens(tokens[start:end, :cut].to(self.device))
                positions += (end - start) * cut
        cached = [(g, a, b, p) for g, ((a, b), p) in enumerate(zip(groups, prefixes)) if p >= 2]
        if not cached:
            return out, positions
        widest = max(p for *_, p in cached)
        heads = torch.stack([F.pad(tokens[a, :p], (0, widest - p)) for _, a, _, p in cached]).to(self.device)
        kept = _prefix_states(self.model, heads)  # right padding: causal, so it changes no real position
        positions += sum(p for *_, p in cached)
        rows = torch.cat([torch.arange(a, b) for _, a, b, _ in cached])
        owner = torch.cat([torch.full((b - a,), k) for k, (_, a, b, _) in enumerate(cached)])
        prefix_of = torch.tensor([p for *_, p in cached])[owner]
        own = lengths[rows] - prefix_of
        for count in torch.unique(own).tolist():  # rows with as many own tokens together
            index = (own == count).nonzero().flatten()
            step = max(1, max_positions // (widest + count))
            for s in range(0, len(index), step):
                part = index[s:s + step]
                out[rows[part].to(self.device)] = _suffix_features(
                    self.model, tokens[rows[part]], prefix_of[part], count, owner[part], kept)
                positions += len(part) * count
        return out, positions

    def count_tokens(self, texts: Sequence[str]) -> List[int]:
        """Token count of each text including start and end tokens, not capped at the context."""
        if hasattr(self.tokenizer, "count"):
            return self.tokenizer.count(list(texts))
        return token_lengths(self.tokenizer(list(texts), context_length=UNCAPPED_CONTEXT)).tolist()

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "context_length", 77))

    @property
    def embed_dim(self) -> int:
        proj = self.model.text_projection
        if isinstance(proj, torch.nn.Linear):
            return proj.out_features
        return proj.shape[1] if proj is not None else self.model.transformer.width

def _tokenize_chunk(tokenizer, texts: List[str], size: int, i: int) -> torch.Tensor:
    return tokenizer(texts[i * size:(i + 1) * size])


def tokenize_many(tokenizer, texts: List[str], workers: Optional[int] = None, min_parallel: int = 10_000,
                  chunk: int = 2_000) -> torch.Tensor:
    """``tokenizer(texts)``, in worker processes for long lists; identical to the single call.

    100k flavors on this 2-core machine: open_clip's tokenizer 6.5 s in one process, 3.9 s with
    2 workers; FastClipTokenizer 0.98 s and 0.69 s.
    """
    if len(texts) < min_parallel:
        return tokenizer(texts)
    count = (len(texts) + chunk - 1) // chunk
    return torch.cat(list(map_chunks(partial(_tokenize_chunk, tokenizer, texts, chunk), count, workers)))


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Length of each token row up to and including its last non-zero token."""
    nonzero = tokens != 0
    positions = torch.arange(1, tokens.shape[1] + 1).expand_as(tokens)
    return (positions * nonzero).max(dim=1).values


def _common_prefix(rows: torch.Tensor, lengths: torch.Tensor) -> int:
    """The length of the token prefix all rows share, less than every row's length (each keeps its end token)."""
    same = (rows == rows[:1]).all(dim=0)
    differs = (~same).nonzero()
    common = int(differs[0]) if len(differs) else rows.shape[1]
    return min(common, int(lengths.min()) - 1)


def _supports_prefix(model) -> bool:
    """A text tower of open_clip's plain residual blocks: self-attention through one packed in-projection (no
    separate key/value norm, no added key/value biases or zero attention)."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    return (_supports_cut_context(model) and blocks is not None
            and all(hasattr(b, "attn") and hasattr(b, "ln_1") and not hasattr(b, "ln_1_kv")
                    and isinstance(b.attn, torch.nn.MultiheadAttention) and b.attn.in_proj_weight is not None
                    and b.attn.bias_k is None and not b.attn.add_zero_attn for b in blocks))


def _projections(attn: torch.nn.MultiheadAttention, x: torch.Tensor, which: slice) -> torch.Tensor:
    """Rows ``which`` (q, k or v) of the block's packed in-projection applied to x."""
    bias = attn.in_proj_bias[which] if attn.in_proj_bias is not None else None
    return F.linear(x, attn.in_proj_weight[which], bias)


def _prefix_states(model, prefix: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values of the prefixes (G, P, D each), computed once: the in-projection of the
    block's ``ln_1`` of its input there."""
    n = prefix.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(prefix).to(cast_dtype) + model.positional_embedding[:n].to(cast_dtype)
    mask = model.attn_mask[:n, :n]
    kept = []
    for block in model.transformer.resblocks:
        d = block.attn.embed_dim
        h = block.ln_1(x)
        kept.append((_projections(block.attn, h, slice(d, 2 * d)), _projections(block.attn, h, slice(2 * d, 3 * d))))
        x = block(x if block.attn.batch_first else x.transpose(0, 1), attn_mask=mask)
        x = x if block.attn.batch_first else x.transpose(0, 1)
    return kept


def _suffix_features(model, rows: torch.Tensor, prefixes: torch.Tensor, count: int, owner: torch.Tensor,
                     kept: List[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Normalised features of full token rows whose first ``prefixes[i]`` tokens ran already (``kept``: each
    layer's keys and values of the prefixes, right-padded to one width; ``owner[i]``: row i's prefix), each
    with ``count`` tokens of its own. Attention is the block's own weights in ``scaled_dot_product_attention``,
    so a prefix's keys and values are projected once, not once per candidate."""
    device = kept[0][0].device
    cast_dtype = model.transformer.get_cast_dtype()
    at = prefixes[:, None] + torch.arange(count)[None, :]  # (B, count): each own token's position
    x = (model.token_embedding(torch.gather(rows, 1, at).to(device)).to(cast_dtype)
         + model.positional_embedding[at.to(device)].to(cast_dtype))
    width = kept[0][0].shape[1]
    allowed = torch.cat([(torch.arange(width)[None, None, :] < prefixes[:, None, None]).expand(-1, count, -1),
                         torch.ones(count, count, dtype=torch.bool).tril()[None].expand(len(rows), -1, -1)], dim=2)
    mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, float("-inf")).to(device)[:, None]
    owner = owner.to(device)
    for block, (keys, values) in zip(model.transformer.resblocks, kept):
        attn, d = block.attn, block.attn.embed_dim
        heads = attn.num_heads
        h = block.ln_1(x)

        def split(t):  # (B, L, D) -> (B, heads, L, D / heads)
            return t.reshape(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)
        q = _projections(attn, h, slice(0, d))
        k = torch.cat([keys[owner], _projections(attn, h, slice(d, 2 * d))], dim=1)
        v = torch.cat([values[owner], _projections(attn, h, slice(2 * d, 3 * d))], dim=1)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        out = attn.out_proj(out.transpose(1, 2).reshape(len(x), count, d))
        x = x + block.ls_1(out)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = model.ln_final(x[:, -1])  # the end token is each row's last (ln_final is per position)
    x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return F.normalize(x.float(), dim=-1)


def _eos_option(pool, model) -> dict:
    """open_clip 3 pools at the model's EOS id ('eos' pooling); open_clip 2 has only 'argmax' and no such argument."""
    if "eos_token_id" in inspect.signature(pool).parameters:
        return {"eos_token_id": getattr(model, "text_eos_id", None)}
    return {}


def _supports_cut_context(model) -> bool:
    return (hasattr(model, "positional_embedding") and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", "argmax") in ("argmax", "eos"))


def load_clip(name: str, checkpoint: str, device: str, dtype: torch.dtype) -> Clip:
    """open_clip's model and preprocess for ``name`` (``ARCH`` or ``ARCH/TAG``, see clip_checkpoint.py),
    with the weights of a local checkpoint file in any of its forms (never a download)."""
    import open_clip  # lazy: slow to import
    if not Path(checkpoint).is_file():
        raise ModelLoadError(f"config key 'clip_path': expected a checkpoint file (.pt/.bin/.safetensors), got {checkpoint}")
    spec = resolve_clip(name, checkpoint)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch, pretrained=None, device=device, precision=precision, force_quick_gelu=spec.quick_gelu,
            **spec.preprocess)
        if spec.form == "torchscript":
            load_weights(model, read_torchscript_state_dict(checkpoint), checkpoint, "config key 'clip_path'")
        else:
            keys = open_clip.load_checkpoint(model, str(checkpoint), strict=False, weights_only=True)
            check_loaded(getattr(keys, "missing_keys", ()), getattr(keys, "unexpected_keys", ()), checkpoint,
                         "config key 'clip_path'")
    except ModelLoadError:
        raise
    except (RuntimeError, KeyError, ValueError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"config key 'clip_path': checkpoint {checkpoint} does not match "
                             f"clip_model {name!r}: {first[:300]}") from exc
    except Exception as exc:  # pickle errors, corrupt zip, truncated safetensors
        raise ModelLoadError(f"config key 'clip_path': cannot read checkpoint {checkpoint}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    clip = wrap_clip(model, preprocess, spec.arch, device, dtype)
    clip.weights = spec.weights(checkpoint)
    clip.identity = clip.weights.identity
    return clip


def load_config_clip(config) -> Clip:
    """The config's CLIP (``clip_model``, ``clip_path``) on its device and dtype, the paths, device and dtype
    checked first: the one way a command loads the CLIP of a config."""
    config.require_paths("clip_path")
    config.check_device()
    config.check_dtype()
    return load_clip(config.clip_model, config.clip_path, config.resolved_device(), config.torch_dtype())


def wrap_clip(model: torch.nn.Module, preprocess: Callable, name: str, device: str, dtype: torch.dtype) -> Clip:
    """A Clip around an open_clip model already on ``device``, in eval mode, with the fast tokenizer for ``name``."""
    import open_clip  # lazy: slow to import
    return Clip(model=model.eval(), preprocess=preprocess, tokenizer=fast_tokenizer(open_clip.get_tokenizer(name)),
                name=name, device=torch.device(device), dtype=dtype)
