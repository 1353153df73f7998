"""``draw`` (VQGAN+CLIP text to image on the config's CLIP) and ``convert-vqgan`` (the ``[draw]`` extra)."""
from __future__ import annotations

import math
import os
from pathlib import Path

from .arguments import add_common, add_config, float_in, non_negative_int, seed_number, output_folder, positive_float, positive_int
from ..core.config import load_config
from ..core.errors import InterrogatorError
from ..core.images import load_image
from ..draw.prompts import Settings, make_jobs, read_draw_prompts

# What draws (torch, the VQGAN, CLIP, the writer) is imported when a command runs: --help imports none of it.

TRUST_HELP = ("read a checkpoint that holds pickled objects besides tensors (a Lightning checkpoint's "
              "callbacks): this runs the code the pickle names, so only for files you trust")


_range = float_in(0.0, math.inf)  # a finite number >= 0


def settings_of(args, config, vqgan: str):
    width, height = args.size
    return Settings(width=width, height=height, steps=args.steps, crops=args.crops, lr=args.lr,
                    weight_decay=args.weight_decay, seed=args.seed, save_every=args.save_every,
                    noise=tuple(args.noise), crop_scale=tuple(args.crop_scale), exclude=args.exclude,
                    exclude_weight=args.exclude_weight, extras=args.extras, init=args.init,
                    init_weight=args.init_weight, clip=f"{config.clip_model} {config.clip_path}", vqgan=vqgan)


def check_draw(args, config):
    """Everything that can be known before a model loads: the VQGAN's files and layout, the size, the
    prompts, the init image, the output files. Returns (VQGAN source, settings, jobs, out folder)."""
    from ..draw.vqgan import find_vqgan, require_diffusers
    from ..draw.writer import check_targets, require_video
    from ..runner.needs import check
    if args.noise[0] > args.noise[1] or args.crop_scale[0] > args.crop_scale[1] or args.crop_scale[0] == 0:
        raise InterrogatorError("--noise and --crop-scale take LOW HIGH with LOW <= HIGH (and a crop scale > 0)")
    if args.video and not args.save_every:
        raise InterrogatorError("--video blends the saved latents: give --save-every K too")
    require_diffusers()
    require_video(args.video)
    vqgan = args.vqgan or config.vqgan_path
    if not vqgan:
        raise InterrogatorError("give --vqgan PATH or set config key 'vqgan_path' (a taming last.ckpt with its "
                                "model.yaml, or a folder convert-vqgan wrote)")
    config.require_paths("clip_path")
    if args.interrogate:
        check(config, round_trip_needs(config))
    source = find_vqgan(vqgan)
    factor = source.factor()
    if any(v % factor for v in args.size):
        raise InterrogatorError(f"--size {args.size[0]} {args.size[1]}: each side must be a multiple of {factor} "
                                f"(the VQGAN's downsampling factor)")
    check_size(args.size, source.diffusers_config()["block_out_channels"][0], config.resolved_device())
    settings = settings_of(args, config, str(vqgan))
    jobs = make_jobs(read_draw_prompts(args.prompt, args.prompts), settings)
    if args.init:
        try:
            load_image(Path(args.init))
        except ValueError as exc:
            raise InterrogatorError(f"--init {args.init}: not an image this tool decodes: {exc}") from None
    out = Path(args.out)
    check_targets(out, jobs, settings, args.video, args.overwrite)
    return source, settings, jobs, out


FULL_SIZE_TENSORS = 6  # float32 tensors of the decoder's first width at full size, kept for the backward pass


def check_size(size, channels: int, device: str) -> None:
    """The decoder's activations at full size must fit in the device's memory (a rough lower bound: the
    tensors of its last block at the image's size, in fp32)."""
    need = size[0] * size[1] * channels * 4 * FULL_SIZE_TENSORS
    if device.startswith("cuda"):
        import torch  # lazy: slow to import
        have = torch.cuda.get_device_properties(torch.device(device)).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise InterrogatorError(f"--size {size[0]} {size[1]}: drawing it needs at least {need / 2 ** 30:,.0f} GiB "
                                f"for the VQGAN's activations, and {device} has {have / 2 ** 30:,.0f} GiB")


def cmd_draw(args) -> int:
    from ..core.oom import StageBatcher, concat_lists
    from ..draw.optimize import Drawer
    from ..draw.vqgan import build_vqgan
    from ..draw.writer import write_drawn
    from ..models.clip import load_config_clip
    config = load_config(args.config, device=args.device)
    source, settings, jobs, out = check_draw(args, config)
    clip = load_config_clip(config)
    device = config.resolved_device()
    vqgan = build_vqgan(source, args.trust_checkpoint).to(device).requires_grad_(False)
    drawer = Drawer(clip, vqgan, settings, device, progress=not args.no_progress)

    def draw(chunk):
        results = drawer.draw(chunk)
        for drawn in results:
            paths = write_drawn(out, drawn, settings, drawer, args.video, args.video_frames, args.fps)
            print(f"wrote {paths[0]} (loss {drawn.loss:.4f})" + (f" and {len(paths) - 1} more" if len(paths) > 1 else ""),
                  flush=True)
        return results
    drawn = StageBatcher({"draw": args.batch_size}, device).run("draw", jobs, draw, concat_lists)
    if args.interrogate:
        round_trip(config, clip, drawn, out)
    return 0


def round_trip_needs(config):
    """What ``--interrogate`` reads (a needs.Needs): the drawing's CLIP, the captioner and tagger; no folder, no
    sentence model."""
    from ..runner.needs import needs_of
    return needs_of(config, data=False, sentence=False, clip=True)


def round_trip(config, clip, drawn, out: Path) -> None:
    """The interrogator on each final image, and the CLIP similarity of its prompt at the start and the end."""
    from ..core.images import ImageFile
    from ..core.oom import StageBatcher
    from ..core.timer import StageTimer
    from ..draw.optimize import include_similarity
    from ..draw.writer import final_path
    from ..runner.loading import load_models
    from ..runner.stages import interrogate_files
    models = load_models(config, round_trip_needs(config), clip=clip)
    batcher = StageBatcher.of(config)
    files = [ImageFile(d.job.name, final_path(out, d.job)) for d in drawn]
    record = interrogate_files(models, config, files, batcher, StageTimer(config.resolved_device()))
    for i, d in enumerate(drawn):
        start, end = include_similarity(clip, [d.start, d.image], d.job)
        print(f"{d.job.name}: CLIP similarity to the prompt {start:.4f} at the start, {end:.4f} at the end; "
              f"interrogated: {record.final[i]}")


def cmd_convert_vqgan(args) -> int:
    from ..draw.vqgan import convert_vqgan, require_diffusers
    require_diffusers()
    out = convert_vqgan(args.vqgan, args.out, args.trust_checkpoint)
    print(f"wrote {out} (diffusers VQModel: config.json and safetensors; use it as vqgan_path)")
    return 0


EXAMPLES = {  # each command's example, under its help (cli.Commands)
    'draw': 'draw --config demo_models/vqgan/config.json --prompt "a lighthouse at dusk" --steps 20 --out drawings',
    'convert-vqgan': 'convert-vqgan --vqgan vqgan_imagenet_f16_16384 --out vqgan-f16-16384 --trust-checkpoint',
}
TITLE = "Draw"  # its heading in the top-level help


def add_commands(sub) -> None:
    p = sub.add_parser("draw", help="text to image: VQGAN+CLIP on the config's CLIP (the [draw] extra)")
    add_config(p, what="JSON config (its CLIP; its vqgan_path unless --vqgan)")
    p.add_argument("--vqgan", help="a taming last.ckpt (with its model.yaml) or a folder convert-vqgan wrote")
    p.add_argument("--prompt", action="append", default=[],
                   help="what to draw (repeatable: one image each); parts split by |, each TEXT or TEXT:WEIGHT")
    p.add_argument("--prompts", help="a file of prompts, one a line")
    p.add_argument("--exclude", default="", help="what to draw away from (e.g. 'watermark, blurry, cropped')")
    p.add_argument("--exclude-weight", type=positive_float, default=0.5, help="the exclude prompt's weight (0.5)")
    p.add_argument("--extras", default="", help="added to every prompt (e.g. 'watercolor paper')")
    p.add_argument("--init", help="an image to start from (edited toward the prompt)")
    p.add_argument("--init-weight", type=_range, default=0.0,
                   help="keep the latent near the init image's: weight of the squared distance (default 0)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("W", "H"), default=[256, 256],
                   help="image size, multiples of the VQGAN's factor (16) (default 256 256)")
    p.add_argument("--steps", type=positive_int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--crops", type=positive_int, default=30, help="random crops CLIP scores each step (default 30)")
    p.add_argument("--crop-scale", type=_range, nargs=2, metavar=("LOW", "HIGH"), default=[0.43, 1.9],
                   help="crop side as a share of the image's shorter side (default 0.43 1.9)")
    p.add_argument("--noise", type=_range, nargs=2, metavar=("LOW", "HIGH"), default=[0.22, 0.28],
                   help="each crop's noise level is drawn from LOW..HIGH (default 0.22 0.28; 0 0 for none)")
    p.add_argument("--lr", type=positive_float, default=0.5, help="AdamW learning rate (default 0.5)")
    p.add_argument("--weight-decay", type=_range, default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument("--seed", type=seed_number, default=0, help="seed; prompt i uses seed + i (default 0)")
    p.add_argument("--save-every", type=non_negative_int, default=0,
                   help="also save the image every K steps (and the start), in a folder per prompt")
    p.add_argument("--video", choices=("mp4", "gif"), help="blend the saved steps into a video (needs --save-every)")
    p.add_argument("--video-frames", type=non_negative_int, default=7,
                   help="blended frames between two saved steps (default 7)")
    p.add_argument("--fps", type=positive_int, default=12, help="video frames per second (default 12)")
    p.add_argument("--batch-size", type=positive_int, default=4,
                   help="prompts drawn together (default 4; halved on CUDA out-of-memory)")
    p.add_argument("--interrogate", action="store_true",
                   help="then interrogate each image and report its CLIP similarity to the prompt, start and end")
    p.add_argument("--out", type=output_folder, default="drawings", help="output folder (default drawings)")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier draw")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_common(p, progress=True)
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("convert-vqgan", help="write a taming VQGAN checkpoint once as safetensors (the [draw] extra)")
    p.add_argument("--vqgan", required=True, help="a taming last.ckpt (with its model.yaml), or its folder")
    p.add_argument("--out", required=True, type=output_folder, help="the new folder to write")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_common(p, device="")
    p.set_defaults(func=cmd_convert_vqgan)
