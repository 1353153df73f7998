"""taming-transformers' VQGAN decoder, written out in taming's own module layout and parameter names
(taming/modules/diffusionmodules/model.py and taming/models/vqgan.py at CompVis/taming-transformers master), so
that the tests can make a taming checkpoint and check the conversion's decoder output against it. Only what
a VQModel's state dict and decode need: the encoder's modules are built for their names and shapes."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def norm(channels):
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        w = torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c ** -0.5
        w = F.softmax(w, dim=2)
        out = torch.bmm(v.reshape(b, c, -1), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)


def _mid(c):
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
    return mid


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, in_channels):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down, res, block_in = nn.ModuleList(), resolution, ch
        for level, mult in enumerate(ch_mult):
            down = nn.Module()
            down.block, down.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                down.block.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
                if res in attn_resolutions:
                    down.attn.append(AttnBlock(block_in))
            if level != len(ch_mult) - 1:
                down.downsample, res = Downsample(block_in), res // 2
            self.down.append(down)
        self.mid = _mid(block_in)
        self.norm_out, self.conv_out = norm(block_in), nn.Conv2d(block_in, z_channels, 3, 1, 1)


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, out_ch):
        super().__init__()
        levels = len(ch_mult)
        block_in, res = ch * ch_mult[-1], resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _mid(block_in)
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
                if res in attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample, res = Upsample(block_in), res * 2
            self.up.insert(0, up)
        self.norm_out, self.conv_out = norm(block_in), nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(len(self.up))):
            for i, block in enumerate(self.up[level].block):
                h = block(h)
                if len(self.up[level].attn):
                    h = self.up[level].attn[i](h)
            if level != 0:
                h = self.up[level].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class TamingVQModel(nn.Module):
    """taming.models.vqgan.VQModel's parameters (without the loss) and its decode."""

    def __init__(self, layout):
        super().__init__()
        dd = dict(ch=layout.ch, ch_mult=layout.ch_mult, num_res_blocks=layout.num_res_blocks,
                  attn_resolutions=layout.attn_resolutions, resolution=layout.resolution,
                  z_channels=layout.z_channels)
        self.encoder = Encoder(in_channels=layout.in_channels, **dd)
        self.decoder = Decoder(out_ch=layout.out_ch, **dd)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(layout.n_embed, layout.embed_dim)
        self.quant_conv = nn.Conv2d(layout.z_channels, layout.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(layout.embed_dim, layout.z_channels, 1)

    def decode(self, quant):
        return self.decoder(self.post_quant_conv(quant))


def model_yaml(layout, target: str = "taming.models.vqgan.VQModel") -> str:
    """A model.yaml as taming's configs write one."""
    return f"""model:
  base_learning_rate: 4.5e-06
  target: {target}
  params:
    embed_dim: {layout.embed_dim}
    n_embed: {layout.n_embed}
    ddconfig:
      double_z: false
      z_channels: {layout.z_channels}
      resolution: {layout.resolution}
      in_channels: {layout.in_channels}
      out_ch: {layout.out_ch}
      ch: {layout.ch}
      ch_mult: [{', '.join(str(m) for m in layout.ch_mult)}]
      num_res_blocks: {layout.num_res_blocks}
      attn_resolutions: [{', '.join(str(r) for r in layout.attn_resolutions)}]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_start: 250001
"""
