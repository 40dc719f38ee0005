"""The ``cnnkit`` command line: exit codes, one clear ``error:`` line, and outputs
checked against independent computations.

User-fixable mistakes exit 2 with exactly one ``error:`` line that names the bad
value and no traceback. A few are run through real subprocesses (started
together, to share the import time); the rest call ``cnnkit.cli.main`` in-process,
where stderr is captured whole.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit import cli
from cnnkit.config import validate
from cnnkit.models import build_torch, parse_layers
from cnnkit.api import train
from cnnkit.config import load_config

TINY = "[{conv: {out: 4, kernel: 3}}, relu, flatten, {dense: 10}]"


def digits_overrides(runs: Path, *extra: str) -> list[str]:
    return ["data.name=digits", "model.input=null", f"model.layers={TINY}", f"train.runs_dir={runs}",
            "train.device=cpu", "train.epochs=2", "data.batch_size=64", "optim.lr=0.01", *extra]


def one_error_line(err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1, err
    # Nothing else but harmless notes may accompany it.
    assert all(l.startswith(("error:", "note:")) for l in lines), err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def main_rc(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse (usage errors, --help)
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- a trained run shared by this file


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("cli_runs")
    return train(load_config(None, digits_overrides(runs)), quiet=True).run_dir


@pytest.fixture(scope="module")
def run_best_not_last(tmp_path_factory) -> Path:
    """A run whose best epoch is not its last one (adam at a high constant lr overshoots)."""
    runs = tmp_path_factory.mktemp("cli_runs_bnl")
    res = train(load_config(None, digits_overrides(runs, "train.epochs=4", "optim.lr=0.05", "schedule.name=constant",
                                                   "train.seed=0", "data.batch_size=32")), quiet=True)
    acc = [h["val_accuracy"] for h in res.history]
    assert max(acc) != acc[-1], f"premise: the last epoch is not the best one ({acc})"
    return res.run_dir


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """Real digits images (the dataset's uint8 encoding) saved as 8x8 grayscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path_factory.mktemp("pngs")
    picks = [0, 1, 2, 3, 17, 42, 100, 333]
    files, arrays, labels = [], [], []
    for i in picks:
        arr = np.rint(d.images[i] * (255.0 / 16.0)).astype(np.uint8)
        p = folder / f"digit_{i}.png"
        Image.fromarray(arr, mode="L").save(p)
        files.append(str(p))
        arrays.append(arr)
        labels.append(int(d.target[i]))
    return files, np.stack(arrays), labels


# --------------------------------------------------------------------------- exit 2 through real subprocesses

SUBPROCESS_CASES = {
    "unknown-key": (["train", "data.name=digits", "optim.lrr=0.1"], ["'optim.lrr'", "lr"]),
    "shapes-do-not-fit": (["train", "data.name=digits", "model.input=null",
                           "model.layers=[{conv: {out: 4, kernel: 3}}, relu, {dense: 10}]"],
                          ["layer 2", "dense", "4x6x6"]),
    "unreadable-image": (["predict", "{run}", "{txt}"], ["x.png", "image"]),
}


@pytest.fixture(scope="module")
def subprocess_results(run_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("subproc")
    txt = folder / "x.png"
    txt.write_text("this is not an image\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = {}
    for name, (argv, _) in SUBPROCESS_CASES.items():
        argv = [a.replace("{run}", str(run_dir)).replace("{txt}", str(txt)) for a in argv]
        procs[name] = subprocess.Popen([sys.executable, "-m", "cnnkit", *argv], cwd=folder, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=600)
        results[name] = (p.returncode, out, err)
    # Nothing was trained or written by a failing command.
    assert not (folder / "runs").exists()
    return results


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_user_errors_exit_2_with_one_error_line_and_no_traceback(case, subprocess_results):
    rc, out, err = subprocess_results[case]
    assert rc == 2, (rc, err)
    one_error_line(err, *SUBPROCESS_CASES[case][1])


# --------------------------------------------------------------------------- exit 2 in-process


@pytest.fixture
def text_png(tmp_path) -> Path:
    p = tmp_path / "x.png"
    p.write_text("hello\n")
    return p


def test_unknown_config_key_lists_the_allowed_keys(capsys):
    rc, _, err = main_rc(["train", "data.name=digits", "optim.lrr=0.1"], capsys)
    assert rc == 2
    line = one_error_line(err, "'optim.lrr'", "did you mean 'lr'")
    for key in ("lr", "weight_decay", "beta1", "beta2", "eps"):
        assert key in line


def test_unknown_config_key_in_a_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: digits}\ntrain: {epochs: 1, epoch: 2}\n")
    rc, _, err = main_rc(["train", str(cfg)], capsys)
    assert rc == 2
    one_error_line(err, "'train.epoch'", "epochs")


def test_wrong_type_names_key_and_value(capsys):
    rc, _, err = main_rc(["train", "train.epochs=abc"], capsys)
    assert rc == 2
    one_error_line(err, "train.epochs", "'abc'")


def test_padding_smae(capsys, tmp_path):
    rc, _, err = main_rc(["train", *digits_overrides(tmp_path / "runs"),
                          "model.layers=[{conv: {out: 4, padding: smae}}, flatten, {dense: 10}]"], capsys)
    assert rc == 2
    one_error_line(err, "layer 0", "'smae'", "'valid'", "'same'")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("layers, needles", [
    ("[{conv: {out: 4, kernel: 3}}, relu, {dense: 10}]", ["layer 2", "dense", "4x6x6", "flatten"]),
    ("[{conv: {out: 4, kernel: 9}}, flatten, {dense: 10}]", ["layer 0", "conv", "1x8x8"]),
    ("[flatten, {maxpool: 2}, {dense: 10}]", ["layer 1", "maxpool", "64"]),
])
def test_layer_list_whose_shapes_do_not_fit(layers, needles, capsys, tmp_path):
    rc, _, err = main_rc(["train", *digits_overrides(tmp_path / "runs"), f"model.layers={layers}"], capsys)
    assert rc == 2
    one_error_line(err, *needles)
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    rc, _, err = main_rc(["train", str(missing), "train.epochs=1"], capsys)
    assert rc == 2
    one_error_line(err, str(missing), "does not exist")


@pytest.mark.parametrize("cmd", [["eval"], ["predict"], ["train", "--resume"]])
def test_missing_run_folder(cmd, tmp_path, capsys, digit_pngs):
    missing = str(tmp_path / "runs" / "nope")
    argv = [*cmd, missing] + ([digit_pngs[0][0]] if cmd == ["predict"] else [])
    rc, _, err = main_rc(argv, capsys)
    assert rc == 2
    one_error_line(err, missing)


def test_unreadable_image(run_dir, text_png, capsys):
    rc, _, err = main_rc(["predict", str(run_dir), str(text_png)], capsys)
    assert rc == 2
    one_error_line(err, str(text_png))


def test_missing_image(run_dir, tmp_path, capsys):
    rc, _, err = main_rc(["predict", str(run_dir), str(tmp_path / "gone.png")], capsys)
    assert rc == 2
    one_error_line(err, "gone.png", "does not exist")


def test_unknown_model_name_in_summary(capsys):
    rc, _, err = main_rc(["summary", "lenet6"], capsys)
    assert rc == 2
    line = one_error_line(err, "'lenet6'", "did you mean 'lenet5'")
    assert "resnet18" in line


def test_unknown_model_name_in_config(tmp_path, capsys):
    rc, _, err = main_rc(["train", "data.name=digits", "model.input=null", "model.name=lenet6",
                          f"train.runs_dir={tmp_path / 'runs'}"], capsys)
    assert rc == 2
    one_error_line(err, "'lenet6'", "lenet5")
    assert not (tmp_path / "runs").exists()


def test_unknown_dataset_name(tmp_path, capsys):
    rc, _, err = main_rc(["train", "data.name=digitz", f"train.runs_dir={tmp_path / 'runs'}"], capsys)
    assert rc == 2
    one_error_line(err, "'digitz'", "digits")


def test_unknown_optimiser_name(tmp_path, capsys):
    rc, _, err = main_rc(["train", *digits_overrides(tmp_path / "runs"), "optim.name=adamm"], capsys)
    assert rc == 2
    one_error_line(err, "'adamm'", "adam")
    assert not (tmp_path / "runs").exists()


def test_misspelt_early_stopping_monitor_is_a_user_error(tmp_path, capsys):
    rc, _, err = main_rc(["train", *digits_overrides(tmp_path / "runs"),
                          "regularization.early_stopping={monitor: val_acc}"], capsys)
    assert rc == 2, err
    one_error_line(err, "'val_acc'", "val_accuracy")


def test_eval_split_test_on_a_dataset_without_one(run_dir, capsys):
    rc, _, err = main_rc(["eval", str(run_dir), "--split", "test"], capsys)
    assert rc == 2
    one_error_line(err, "'digits'", "test", "--split val")


def test_bad_top_k(run_dir, digit_pngs, capsys):
    rc, _, err = main_rc(["predict", str(run_dir), digit_pngs[0][0], "--top-k", "0"], capsys)
    assert rc == 2
    one_error_line(err, "--top-k", "0")


# --------------------------------------------------------------------------- exit 0 and the outputs


def test_models_with_a_pattern(capsys):
    rc, out, _ = main_rc(["models", "resnet*"], capsys)
    assert rc == 0
    names = [l.split()[0] for l in out.splitlines() if l.strip()]
    assert names == sorted(names)
    assert all(fnmatch.fnmatchcase(n, "resnet*") for n in names)
    for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet20", "resnet32", "resnet44",
              "resnet56", "resnet110"):
        assert n in names
    assert "resnext50_32x4d" not in names
    shape = {l.split()[0]: l.split()[1] for l in out.splitlines() if l.strip()}
    assert shape["resnet20"] == "3x32x32" and shape["resnet18"] == "3x224x224"
    rc, out, err = main_rc(["models", "nomatch*"], capsys)
    assert rc == 2
    one_error_line(err, "'nomatch*'")


def test_models_lists_lenet5(capsys):
    rc, out, _ = main_rc(["models"], capsys)
    assert rc == 0
    line = next(l for l in out.splitlines() if l.split()[0] == "lenet5")
    assert "1x28x28" in line


def test_datasets(capsys):
    rc, out, _ = main_rc(["datasets"], capsys)
    assert rc == 0
    names = [l.split()[0] for l in out.splitlines() if l.strip()]
    for n in ("digits", "mnist5k", "cifar10"):
        assert n in names
    digits_line = next(l for l in out.splitlines() if l.split()[0] == "digits")
    assert "1,797" in digits_line or "1797" in digits_line


def test_summary_lenet5_json(capsys):
    rc, out, _ = main_rc(["summary", "lenet5", "--format", "json"], capsys)
    assert rc == 0
    data = json.loads(out)
    assert data["total_params"] == 44_426 and data["total_macs"] == 281_640
    shapes = [l["output_shape"] for l in data["layers"] if l["type"] in ("Conv2d", "MaxPool2d", "Linear")]
    assert shapes == [[6, 24, 24], [6, 12, 12], [16, 8, 8], [16, 4, 4], [120], [84], [10]]
    for l in data["layers"]:
        assert {"name", "type", "output_shape", "params", "macs", "receptive_field", "stride"} <= set(l)


def test_train_prints_the_run_folder_last(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc, out, err = main_rc(["train", *digits_overrides(runs, "train.epochs=1")], capsys)
    assert rc == 0, err
    last = out.strip().splitlines()[-1]
    assert Path(last).parent == runs and Path(last).is_dir()
    assert [p for p in runs.iterdir()] == [Path(last)]
    assert (Path(last) / "final.json").is_file()


def _independent_probs(run: Path, images: np.ndarray) -> np.ndarray:
    """Softmax of the run's best checkpoint, with the model and normalisation rebuilt by hand."""
    best = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()))
    meta = json.loads((run / "meta.json").read_text())
    model = build_torch(parse_layers(cfg.model.layers), tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(best["model"])
    model.eval()
    x = (images.astype(np.float64)[:, None] / 255.0 - meta["mean"][0]) / meta["std"][0]
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float()).double()
    return torch.softmax(logits, dim=1).numpy()


def test_predict_json(run_dir, digit_pngs, capsys):
    files, images, labels = digit_pngs
    rc, out, err = main_rc(["predict", str(run_dir), *files, "--top-k", "3", "--format", "json"], capsys)
    assert rc == 0, err
    results = json.loads(out)
    assert [r["file"] for r in results] == files
    want = _independent_probs(run_dir, images)
    for r, p in zip(results, want):
        probs = r["probabilities"]
        assert len(probs) == 10
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(probs, p, atol=1e-5)  # every class, in label order
        top = r["top"]
        assert len(top) == 3
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
        assert top[0]["label"] == int(np.argmax(p))
        for t in top:
            assert t["class"] == str(t["label"])  # digits' class names are "0".."9"
            assert t["probability"] == pytest.approx(probs[t["label"]], abs=1e-12)
    # A trained model gets most of these real digits right.
    assert sum(r["top"][0]["label"] == y for r, y in zip(results, labels)) >= 6


def test_predict_text_and_top_k_larger_than_the_classes(run_dir, digit_pngs, capsys):
    files, images, _ = digit_pngs
    rc, out, _ = main_rc(["predict", str(run_dir), files[0], "--top-k", "50", "--format", "json"], capsys)
    assert rc == 0
    assert len(json.loads(out)[0]["top"]) == 10
    rc, out, _ = main_rc(["predict", str(run_dir), files[0]], capsys)
    assert rc == 0
    p = _independent_probs(run_dir, images[:1])[0]
    assert out.startswith(f"{files[0]}: {int(np.argmax(p))} (")


def test_predict_resizes_and_converts_colour_images(run_dir, digit_pngs, tmp_path, capsys):
    from PIL import Image

    files, images, _ = digit_pngs
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(images[0][:, :, None], 3, axis=2), mode="RGB").save(rgb)
    rc, out, _ = main_rc(["predict", str(run_dir), str(rgb), files[0], "--format", "json"], capsys)
    assert rc == 0
    a, b = json.loads(out)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)


def _eval_json(run: Path, capsys, *extra: str) -> dict:
    rc, out, err = main_rc(["eval", str(run), "--format", "json", *extra], capsys)
    assert rc == 0, err
    return json.loads(out)


def test_eval_accuracy_equals_final_json(run_dir, capsys):
    res = _eval_json(run_dir, capsys)
    final = json.loads((run_dir / "final.json").read_text())
    assert res["n"] == final["n_val"]
    assert res["accuracy"] == pytest.approx(final["val_accuracy"], abs=1e-12)
    assert res["loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    cm = np.array(res["confusion_matrix"])
    assert cm.sum() == final["n_val"] and np.trace(cm) / cm.sum() == pytest.approx(res["accuracy"])


def test_eval_accuracy_equals_final_json_when_the_best_epoch_is_not_the_last(run_best_not_last, capsys):
    final = json.loads((run_best_not_last / "final.json").read_text())
    res = _eval_json(run_best_not_last, capsys)
    # `cnnkit eval RUN_DIR` and final.json must describe the same model.
    assert (res["accuracy"], res["loss"]) == pytest.approx((final["val_accuracy"], final["val_loss"]), rel=1e-6), (
        f"eval ({res['checkpoint']}): accuracy {res['accuracy']}, loss {res['loss']}; final.json: "
        f"accuracy {final['val_accuracy']}, loss {final['val_loss']} (best epoch {final['best_epoch']} "
        f"of {final['epochs']})")


def test_eval_of_each_checkpoint_matches_its_epochs_metrics(run_best_not_last, capsys):
    rows = {json.loads(l)["epoch"]: json.loads(l) for l in (run_best_not_last / "metrics.jsonl").read_text().splitlines()}
    final = json.loads((run_best_not_last / "final.json").read_text())
    best = _eval_json(run_best_not_last, capsys, "--checkpoint", "best")
    last = _eval_json(run_best_not_last, capsys, "--checkpoint", "last")
    assert best["accuracy"] == pytest.approx(rows[final["best_epoch"]]["val_accuracy"], abs=1e-12)
    assert last["accuracy"] == pytest.approx(rows[final["epochs"]]["val_accuracy"], abs=1e-12)


# --------------------------------------------------------------------------- help


CONTRACT_COMMANDS = ["train", "eval", "predict", "summary", "models", "datasets"]


def _subcommands() -> list[str]:
    """Every registered subcommand (the contract's six if the parser cannot even be built)."""
    try:
        parser = cli.build_parser()
    except Exception:  # reported by test_the_contracts_subcommands_exist
        return CONTRACT_COMMANDS
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return CONTRACT_COMMANDS


def test_the_contracts_subcommands_exist():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(CONTRACT_COMMANDS) <= set(sub.choices)


@pytest.mark.parametrize("cmd", [None, *_subcommands()])
def test_help_exits_0_and_shows_examples(cmd, capsys):
    argv = ["--help"] if cmd is None else [cmd, "--help"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out.lower(), out
