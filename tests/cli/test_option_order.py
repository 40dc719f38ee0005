"""Options and key=value overrides in any order (issue 9: `train CFG --quiet train.epochs=1` failed)."""

from __future__ import annotations

import json

from cnnkit import cli


def test_overrides_after_an_option_are_still_overrides(tmp_path, capsys):
    rc = cli.main(["train", "configs/lenet5_mnist5k.yaml", "--quiet", "train.epochs=1", "data.per_class=10",
                   f"train.runs_dir={tmp_path}"])
    assert rc == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "final.json").read_text())["epochs"] == 1


def test_an_unknown_option_is_still_an_error(capsys):
    try:
        rc = cli.main(["train", "--quiet", "train.epochs=1", "--bogus"])
    except SystemExit as e:
        rc = e.code
    assert rc == 2 and "--bogus" in capsys.readouterr().err
