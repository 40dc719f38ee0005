"""``cnnkit finetune``: start from trained weights, give the network a new head, train on new data.

The library side (freezing, lr multipliers, unfreezing, loading the source) is
:mod:`cnnkit.train.finetune`; this module is the command line, calling :func:`cnnkit.api.finetune`.
"""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter, report_run, split_config_and_overrides


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="start from trained weights, new head, train on new data (freeze, lr_mult, unfreeze)",
        formatter_class=Formatter,
        description="Fine-tune: build the config's model for the new data's classes, load every weight but the "
                    "head from --from (a run folder, a cnnkit checkpoint or a .pt/.pth/.safetensors state dict; "
                    "without --from, the config's model.pretrained or model.weights), give it a fresh head and "
                    "train, writing an ordinary run folder. CONFIG may be left out when --from is a run (its "
                    "config is used), and a CONFIG without model.name/model.layers takes the source run's model.\n\n"
                    "finetune.freeze: none | backbone | until:LAYER (frozen batch norms keep their statistics)\n"
                    "finetune.lr_mult: {backbone: 0.1, head: 1.0} or {LAYER: mult}; most specific name wins\n"
                    "finetune.unfreeze_at: {LAYER: EPOCH}; LAYER and every layer after it train from EPOCH on",
        epilog="examples:\n"
               "  cnnkit finetune --from runs/x configs/lenet5_mnist5k.yaml 'data.classes=[5,6,7,8,9]' "
               "data.per_class=20\n"
               "  cnnkit finetune --from runs/x 'data.classes=[5,6,7,8,9]' finetune.freeze=backbone\n"
               "  cnnkit finetune --from runs/x my.yaml finetune.freeze=until:conv2 "
               "'finetune.unfreeze_at={conv2: 5}'\n"
               "  cnnkit finetune --from runs/x my.yaml 'finetune.lr_mult={backbone: 0.1, head: 1.0}'\n"
               "  cnnkit finetune --from resnet18.safetensors cifar.yaml model.name=resnet18\n"
               "  cnnkit finetune cifar.yaml model.name=resnet18 model.pretrained=imagenet data.image_size=224 "
               "finetune.freeze=backbone")
    p.add_argument("--from", dest="source", metavar="RUN_DIR|WEIGHTS",
                   help="a run folder, a cnnkit checkpoint, or a .pt/.pth/.safetensors state dict")
    p.add_argument("config", nargs="?", help="YAML config file (a key=value here is taken as an override)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. finetune.freeze=backbone")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.api import finetune

    config, overrides = split_config_and_overrides(args.config, args.overrides)
    return report_run(finetune(args.source, config, overrides, quiet=args.quiet))
