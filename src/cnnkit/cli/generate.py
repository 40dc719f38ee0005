"""``cnnkit generate``: new images from a generative run (a ``gan`` run's dcgan, a ``vae`` reconstruction
run), drawn from a seeded noise and written as one grid image."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="draw new images from a gan or vae run into a grid image",
                              formatter_class=Formatter,
                              description="Sample images from a trained generative run (task gan: its dcgan "
                                          "generator; task reconstruction with model vae: its decoder on N(0, I) "
                                          "codes) and write them as one grid. The same --seed gives the same file.",
                              epilog="examples:\n  cnnkit generate runs/dcgan --n 64 --save grid.png\n"
                                     "  cnnkit generate runs/vae --n 100 --nrow 10 --seed 3 --save vae.png")
    p.add_argument("run_dir", metavar="RUN", help="a run folder or a cnnkit checkpoint (.pt)")
    p.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    p.add_argument("--save", required=True, metavar="FILE.png", help="the grid image to write (PNG or JPEG)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise the images are drawn from (default 0)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: about the square root of --n)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if args.nrow is not None and args.nrow < 1:
        raise UserError(f"--nrow must be at least 1, got {args.nrow}")
    out = Path(args.save)
    if out.suffix.lower() not in SUFFIXES:
        raise UserError(f"--save {args.save!r}: give a .png or .jpg file")
    if out.is_dir():
        raise UserError(f"--save {args.save!r} is a folder; give a file name (grid.png)")
    if not out.parent.is_dir():
        raise UserError(f"--save {args.save!r}: folder {str(out.parent)!r} does not exist")

    from torchvision.utils import save_image

    from cnnkit.atomic import atomic_write
    from cnnkit.inference import load_run_model, sample_grid

    model, info = load_run_model(args.run_dir, which=args.checkpoint)
    task = info["task"]
    gan = task.name == "gan"
    if not gan and not (task.name == "reconstruction" and callable(getattr(model, "sample", None))):
        what = f"a {task.name} run" + (f" of {info['config'].model.name}" if task.name == "reconstruction" else "")
        raise UserError(f"cnnkit generate draws images from a gan run (dcgan) or a vae run; {args.run_dir!r} is "
                        f"{what}")
    grid = sample_grid(model, gan, args.n, args.seed, args.nrow)
    fmt = "png" if out.suffix.lower() == ".png" else "jpeg"
    atomic_write(out, lambda f: save_image(grid, f, format=fmt))
    print(f"{args.n} images from {info['checkpoint']} (seed {args.seed}) -> {out}")
    return 0
