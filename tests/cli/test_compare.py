"""``cnnkit compare``: the config keys two runs set differently (and only those), their final metrics
as final.json holds them, and their curves drawn."""

from __future__ import annotations

import json
import shutil

import pytest

from cnnkit.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    for lr in ("0.002", "0.01"):
        assert main(["train", "data.subset=200", "train.epochs=2", "train.device=cpu", f"optim.lr={lr}",
                     f"train.runs_dir={tmp}", f"train.name=lr{lr}", "--quiet"]) == 0
    return sorted(p for p in tmp.iterdir() if p.is_dir())


def test_compare_names_only_what_differs_and_the_final_figures(runs, capsys, tmp_path):
    capsys.readouterr()
    png = tmp_path / "curves.png"
    assert main(["compare", *map(str, runs), "--format", "json", "--save", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["config_differences"]) == {"optim.lr"}        # train.name differs too, and is not shown
    assert sorted(out["config_differences"]["optim.lr"]) == [0.002, 0.01]
    for i, run in enumerate(runs):
        final = json.loads((run / "final.json").read_text())
        assert out["metrics"]["val_accuracy"][i] == final["val_accuracy"]
        assert out["metrics"]["train_time_s"][i] == final["train_time_s"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["saved"] == str(png)
    assert main(["compare", *map(str, runs)]) == 0
    text = capsys.readouterr().out
    assert "optim.lr" in text and "val_accuracy" in text and "train.name" not in text


def test_compare_refusals(runs, tmp_path, capsys):
    for argv, words in ((["compare", str(runs[0])], "two or more"),
                        (["compare", str(runs[0]), str(tmp_path)], "no config.yaml"),
                        (["compare", *map(str, runs), "--save", str(tmp_path / "c.txt")], ".png")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, err


def test_compare_shows_the_reports_shift_curves(runs, capsys, tmp_path):
    """robustness.json (written by the report) becomes rows of the table, a JSON field and a panel."""
    curves = ([0.9, 0.8, 0.5], [0.95, 0.6, 0.2])
    copies = []
    for run, acc in zip(runs, curves):
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        (copy / "robustness.json").write_text(json.dumps({"shift_px": [0, 1, 2], "accuracy": acc}))
        copies.append(copy)
    png = tmp_path / "c.png"
    capsys.readouterr()
    assert main(["compare", *map(str, copies), "--format", "json", "--save", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [list(c.values()) for c in out["shift_accuracy"]] == [list(a) for a in curves]
    assert main(["compare", *map(str, copies)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("accuracy, shift 2px"))
    assert line.split()[-2:] == ["0.5", "0.2"]
