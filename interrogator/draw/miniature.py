"""A miniature random VQGAN of the f16 layout, for the demo and the tests (random weights: it draws noise)."""
from __future__ import annotations

from pathlib import Path

import torch

from .vqgan import TamingLayout, require_diffusers

# taming's vqgan_imagenet_f16_16384 layout (ch 128, ch_mult 1 1 2 2 4, 2 blocks, attention at 16, 16,384
# codes of 256), shrunk: the same five levels (a factor of 16), 32 channels, one block a level, and 4,096 codes
# of 4: a codebook dense in its space, as a trained one is, so that a small step of a latent changes its code to
# a near one and the straight-through gradient points somewhere (with 256 codes of 16 every step jumps)
TINY_LAYOUT = TamingLayout(ch=32, ch_mult=(1, 1, 1, 1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=256,
                           z_channels=4, in_channels=3, out_ch=3, n_embed=4096, embed_dim=4)
REAL_LAYOUT = TamingLayout(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), resolution=256,
                           z_channels=256, in_channels=3, out_ch=3, n_embed=16384, embed_dim=256)


def random_vqgan(layout: TamingLayout = TINY_LAYOUT, seed: int = 0):
    """A diffusers VQModel of ``layout`` with random weights; the codebook spread like a trained one's (unit
    normal, where diffusers' initialisation packs it into +-1/n)."""
    require_diffusers()
    from diffusers import VQModel  # lazy: the [draw] extra
    torch.manual_seed(seed)
    model = VQModel(**layout.diffusers_config())
    with torch.no_grad():
        model.quantize.embedding.weight.normal_(0, 1)
    return model.eval()


def make_demo_vqgan(folder, layout: TamingLayout = TINY_LAYOUT) -> Path:
    """Write a random VQGAN as convert-vqgan writes one (config.json + safetensors); returns the folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        random_vqgan(layout).save_pretrained(str(folder), safe_serialization=True)
    return folder
