"""Every file a user hands cnnkit is read as data, never as code.

A checkpoint is a pickle, and unpickling can call any function the file names. So every command
that reads a checkpoint, a run folder or a weights file must use ``torch.load(weights_only=True)``
and never fall back to an unsafe load (STYLE.md: "Load data, not code"). A file that is not plain
data is refused: exit 2, one ``error:`` line that names the file and says why, no traceback.

The attack: a real run's checkpoint, with one extra entry in its ``meta`` whose ``__reduce__`` is
``Path.touch(MARKER)``. An unsafe load creates MARKER (and then carries on normally, as a real
attack would); a safe load refuses the file before anything runs. Each command is its own case, run
through a real ``python -m cnnkit`` subprocess; the control cases hand the same commands the good
run, so a refusal of everything would fail too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lenet5_mnist5k.yaml"
# The demo recipe, made tiny: sklearn's 8x8 digits, a one-conv network, one epoch (seconds per command).
TINY = ["data.name=digits", "model.input=null",
        "model.layers=[{conv: {out: 4, kernel: 3}}, relu, flatten, {dense: 10}]",
        "data.per_class=20", "train.epochs=1", "train.device=cpu"]
WHY = re.compile(r"weights_only|plain data|unsafe|not safe|not allowed|refus", re.IGNORECASE)


class TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: code run by merely loading the file."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def cnnkit(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_own_checkpoint(path: Path) -> dict:
    """A checkpoint this test file has just written (so trusted); plain data where the loader is fixed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an older checkpoint format (NumPy RNG state): still our own fresh file
        return torch.load(path, map_location="cpu", weights_only=False)


def make_evil(ckpt_path: Path, out: Path, marker: Path) -> None:
    """``ckpt_path``'s checkpoint, unchanged but for one booby-trapped entry in its ``meta``."""
    ckpt = read_own_checkpoint(ckpt_path)
    ckpt["meta"] = {**ckpt["meta"], "note": TouchOnLoad(marker)}
    torch.save(ckpt, out)


# --------------------------------------------------------------------------------------------
# Fixtures: one small real run per test module (per xdist worker), evil copies per test
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("safe_loading_runs")
    proc = cnnkit("train", str(CONFIG), *TINY, f"train.runs_dir={runs}", "--quiet", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    [run] = [p for p in runs.iterdir() if (p / "checkpoints").is_dir()]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    return run


@pytest.fixture
def files(good_run, tmp_path) -> dict[str, Path]:
    """Paths for one case: the good run, a malicious checkpoint and run folder, an image, a marker."""
    from PIL import Image

    marker = tmp_path / "MARKER"
    evil_pt = tmp_path / "evil.pt"
    make_evil(good_run / "checkpoints" / "best.pt", evil_pt, marker)
    evil_run = tmp_path / "evil_run"
    shutil.copytree(good_run, evil_run)
    for name in ("best.pt", "last.pt"):
        make_evil(good_run / "checkpoints" / name, evil_run / "checkpoints" / name, marker)
    student = tmp_path / "student_run"  # a good run to write next to (compress --distill-from)
    shutil.copytree(good_run, student)
    img = tmp_path / "digit.png"
    Image.new("L", (8, 8), color=0).save(img)
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [0.01]\n")
    weights_config = tmp_path / "with_weights.yaml"  # the demo recipe with model.weights: evil.pt
    recipe = yaml.safe_load(CONFIG.read_text())
    for override in TINY[:3]:  # the same tiny digits network
        key, value = override.split("=", 1)
        section, name = key.split(".")
        recipe[section][name] = yaml.safe_load(value)
    recipe["model"]["weights"] = str(evil_pt)
    weights_config.write_text(yaml.safe_dump(recipe))
    runs = tmp_path / "runs"
    return {"marker": marker, "evil_pt": evil_pt, "evil_run": evil_run, "good_run": good_run,
            "good_pt": good_run / "checkpoints" / "best.pt", "student": student, "img": img, "space": space,
            "weights_config": weights_config, "runs": runs, "out": tmp_path, "config": CONFIG}


def fill(argv: list[str], files: dict[str, Path]) -> list[str]:
    """``{name}`` in each argument replaced by that file's path (other braces are YAML, left alone)."""
    out = []
    for arg in argv:
        for name, path in files.items():
            arg = arg.replace("{" + name + "}", str(path))
        out.append(arg)
    return out


# --------------------------------------------------------------------------------------------
# The crafted file is a real attack, and torch's safe load stops it
# --------------------------------------------------------------------------------------------


def test_the_crafted_checkpoint_runs_code_when_loaded_unsafely(files):
    assert not files["marker"].exists()
    torch.load(files["evil_pt"], map_location="cpu", weights_only=False)
    assert files["marker"].exists(), "premise: an unsafe load of evil.pt runs Path.touch(MARKER)"


def test_torch_refuses_the_crafted_checkpoint_with_weights_only(files):
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(files["evil_pt"], map_location="cpu", weights_only=True)
    assert not files["marker"].exists()


# --------------------------------------------------------------------------------------------
# Every command that reads a checkpoint refuses it
# --------------------------------------------------------------------------------------------

TRAIN = ["{config}", *TINY, "train.runs_dir={runs}"]
FINETUNE = [*TINY, "data.classes=[5,6,7,8,9]", "finetune.min_steps=0", "train.runs_dir={runs}", "--quiet"]

# name -> argv; each reads evil.pt or EVIL_RUN, which the error must name.
REFUSE = {
    "predict-checkpoint": ["predict", "{evil_pt}", "{img}"],
    "predict-run": ["predict", "{evil_run}", "{img}"],
    "eval-run": ["eval", "{evil_run}"],
    "eval-run-last": ["eval", "{evil_run}", "--checkpoint", "last"],
    "finetune-from-checkpoint": ["finetune", "--from", "{evil_pt}", "{config}", *FINETUNE],
    "finetune-from-run": ["finetune", "--from", "{evil_run}", *FINETUNE],
    "train-model-weights-checkpoint": ["train", *TRAIN, "model.weights={evil_pt}", "--quiet"],
    "train-model-weights-run": ["train", *TRAIN, "model.weights={evil_run}", "--quiet"],
    "train-resume": ["train", "--resume", "{evil_run}", "--quiet"],
    "train-distill-teacher": ["train", *TRAIN, "train.distill.teacher={evil_run}", "--quiet"],
    "export-onnx": ["export", "{evil_run}", "--out", "{out}/model.onnx"],
    "export-safetensors": ["export", "{evil_run}", "--format", "safetensors", "--out", "{out}/m.safetensors"],
    "compress-prune": ["compress", "{evil_run}", "--prune", "0.5", "--epochs", "1", "--quiet"],
    "compress-distill-teacher": ["compress", "{student}", "--distill-from", "{evil_run}", "--epochs", "1",
                                 "--quiet"],
    "lr-find-model-weights": ["lr-find", "{config}", *TINY, "model.weights={evil_pt}",
                              "--steps", "5", "--plot", "none"],
    "tune-model-weights": ["tune", *TRAIN, "model.weights={evil_pt}", "--space", "{space}", "--sampler", "grid",
                           "--trials", "1"],
}

# Commands that read only a config: they may ignore model.weights (exit 0) or refuse the file
# (exit 2), but they must never run it.
IGNORE_OR_REFUSE = {
    "summary-config-model-weights": ["summary", "{weights_config}"],  # summary takes no overrides
    "explain-shapes-config-model-weights": ["explain", "shapes", "{config}", *TINY[:3], "model.weights={evil_pt}"],
    "explain-backprop-config-model-weights": ["explain", "backprop", "{config}", *TINY[:3],
                                              "model.weights={evil_pt}", "--batch-size", "2"],
}


# Each case is a subprocess (~5-10 s of CPU, most of it imports), so `make test` runs one case per
# way in (a .pt file, a run folder's best.pt, resume's last.pt, a weights file: model.weights, which
# finetune --from shares) and `make test-all` runs them all.
FAST = {"predict-checkpoint", "eval-run", "train-resume", "train-model-weights-checkpoint"}


def cases(table: dict[str, list[str]], fast: set[str]) -> list:
    """The table's case names, those not in ``fast`` marked slow."""
    return [name if name in fast else pytest.param(name, marks=pytest.mark.slow) for name in table]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_refused(proc: subprocess.CompletedProcess, files: dict[str, Path]) -> None:
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2 (a refused file)\nstderr:\n{err}"
    errors = error_lines(err)
    assert len(errors) == 1, f"expected one error: line\nstderr:\n{err}"
    assert WHY.search(errors[0]), f"the error does not say the file is not plain data: {errors[0]}"
    assert str(files["evil_pt"]) in errors[0] or str(files["evil_run"]) in errors[0], (
        f"the error does not name the refused file: {errors[0]}")


@pytest.mark.parametrize("case", cases(REFUSE, FAST))
def test_a_checkpoint_that_runs_code_is_refused(case, files):
    proc = cnnkit(*fill(REFUSE[case], files), cwd=files["out"])
    ran = files["marker"].exists()
    assert not ran, f"`cnnkit {case}` ran code from the file (unsafe torch.load)\nstderr:\n{proc.stderr[-2000:]}"
    assert_refused(proc, files)


@pytest.mark.parametrize("case", cases(IGNORE_OR_REFUSE, set()))
def test_config_only_commands_never_run_a_weights_file(case, files):
    argv = fill(IGNORE_OR_REFUSE[case], files)
    proc = cnnkit(*argv, cwd=files["out"])
    assert not files["marker"].exists(), f"`cnnkit {case}` ran code from the file\nstderr:\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        assert_refused(proc, files)


# --------------------------------------------------------------------------------------------
# Control: the same commands on the good run work, so a refusal above is for the right reason
# --------------------------------------------------------------------------------------------

FAST_GOOD = {"predict-run", "eval-run"}
GOOD = {
    "predict-checkpoint": ["predict", "{good_pt}", "{img}"],
    "predict-run": ["predict", "{good_run}", "{img}"],
    "eval-run": ["eval", "{good_run}"],
    "eval-run-last": ["eval", "{good_run}", "--checkpoint", "last"],
    "train-model-weights-checkpoint": ["train", *TRAIN, "model.weights={good_pt}", "--quiet"],
    "finetune-from-run": ["finetune", "--from", "{good_run}", *FINETUNE],
}


@pytest.mark.parametrize("case", cases(GOOD, FAST_GOOD))
def test_the_same_commands_accept_a_good_run(case, files):
    proc = cnnkit(*fill(GOOD[case], files), cwd=files["out"])
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and not error_lines(proc.stderr), proc.stderr
