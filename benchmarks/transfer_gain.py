"""What pretrained features are worth: fine-tuning against training from scratch, by images per class.

The course's transfer setting on the demo recipe (configs/lenet5_mnist5k.yaml):
a source run trained on MNIST digits 0-4 exactly as the recipe says, then, for
each number of images per class of digits 5-9 and each seed,

- ``scratch``:      ``cnnkit train RECIPE data.classes=[5..9] data.per_class=N`` (the recipe as it is);
- ``finetune``:     ``cnnkit finetune --from SOURCE RECIPE data.classes=[5..9] data.per_class=N``
                    (the fine-tuning defaults: finetune.min_steps, finetune.augment=auto);
- ``finetune-bare``: the same with ``finetune.min_steps=0 finetune.augment=off`` (the recipe's 20 epochs,
                    no augmentation: what fine-tuning gave before those defaults);
- ``scratch-same``: scratch given what ``finetune`` got on top of the recipe (the same number of
                    steps and the same augmentation), so the table separates what the pretrained
                    features are worth from what the longer, augmented schedule is worth.

All four are scored on the same held-out digits 5-9 (the recipe's 10% split, about 250 images).

    python benchmarks/transfer_gain.py [--per-class 5,10,20,50] [--seeds 0,1,2] [--out DIR]

Prints one row per images-per-class with the mean held-out accuracy of each arm and the gains
``finetune - scratch`` and ``finetune - scratch-same``, in points.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "lenet5_mnist5k.yaml"
TARGET = "data.classes=[5,6,7,8,9]"


def _int_list(text: str, lowest: int, example: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < lowest:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers >= {lowest} separated by commas, e.g. {example}")
    return out


def _accuracy(run_dir: Path) -> float:
    return json.loads((Path(run_dir) / "final.json").read_text())["val_accuracy"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=lambda t: _int_list(t, 1, "5,10,20"), default=[5, 10, 20, 50],
                    help="images per class of digits 5-9")
    ap.add_argument("--seeds", type=lambda t: _int_list(t, 0, "0,1,2"), default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    args = ap.parse_args(argv)

    from cnnkit.api import train
    from cnnkit.config import load_config
    from cnnkit.runs import RunFolder
    from cnnkit.train.finetune import finetune

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        t0 = time.perf_counter()
        source = train(load_config(RECIPE, ["data.classes=[0,1,2,3,4]", "train.device=cpu",
                                            f"train.runs_dir={root / 'source'}"]), quiet=True).run_dir
        print(f"source: digits 0-4, the recipe as it is: held-out accuracy {_accuracy(source):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rows = []
        header = (f"{'per class':>9} {'scratch':>8} {'finetune':>9} {'ft-bare':>8} {'scr-same':>9} "
                  f"{'gain':>6} {'gain-same':>10}")
        for pc in args.per_class:
            acc: dict[str, list[float]] = {k: [] for k in ("scratch", "finetune", "bare", "same")}
            for seed in args.seeds:
                common = [TARGET, f"data.per_class={pc}", "train.device=cpu", f"train.seed={seed}"]

                def runs(arm: str) -> str:
                    return f"train.runs_dir={root / arm / f'pc{pc}-s{seed}'}"

                acc["scratch"].append(_accuracy(train(load_config(RECIPE, common + [runs("scratch")]),
                                                      quiet=True).run_dir))
                ft = finetune(str(source), str(RECIPE), common + [runs("finetune")], quiet=True)
                acc["finetune"].append(_accuracy(ft.run_dir))
                acc["bare"].append(_accuracy(finetune(str(source), str(RECIPE), common + [
                    runs("bare"), "finetune.min_steps=0", "finetune.augment=off"], quiet=True).run_dir))
                # Scratch with what the fine-tuning defaults added: the same repeats and augmentation.
                ft_cfg = RunFolder(ft.run_dir).read_config()
                aug = ft_cfg["augment"]
                same = [f"data.epoch_repeats={ft_cfg['data']['epoch_repeats']}",
                        f"augment.rotation={aug['rotation']}", f"augment.crop_padding={aug['crop_padding']}"]
                acc["same"].append(_accuracy(train(load_config(RECIPE, common + [runs("same"), *same]),
                                                   quiet=True).run_dir))
            m = {k: statistics.mean(v) for k, v in acc.items()}
            rows.append((pc, m, acc))
            if len(rows) == 1:
                print(header)
            print(f"{pc:>9} {m['scratch']:>8.3f} {m['finetune']:>9.3f} {m['bare']:>8.3f} {m['same']:>9.3f} "
                  f"{100 * (m['finetune'] - m['scratch']):>+6.1f} {100 * (m['finetune'] - m['same']):>+10.1f}",
                  flush=True)
        print(f"\nmean held-out accuracy over seeds {args.seeds}; gains in points. "
              f"total {time.perf_counter() - t0:.0f} s")
        for pc, _, acc in rows:
            print(f"  per class {pc}: " + "; ".join(f"{k} {[round(a, 3) for a in v]}" for k, v in acc.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
