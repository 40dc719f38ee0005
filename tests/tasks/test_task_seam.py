"""The task seam: classification goes through it in both engines, in eval, predict and the loaders;
`cnnkit eval --data` on another dataset; an unknown task is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import cli
from cnnkit.api import train
from cnnkit.config import load_config
from cnnkit.data.loaders import make_loader
from cnnkit.tasks import create_task, list_tasks
from cnnkit.tasks.classification import ClassificationTask
from cnnkit.train.callbacks import Callback

DIGITS = ["data.name=digits", "data.batch_size=64", "train.epochs=2", "schedule.name=constant",
          "optim.name=adam", "optim.lr=0.01", "train.seed=0", "model.name=null", "model.input=null",
          "model.layers=[flatten, {dense: 32}, relu, {dense: 10}]"]


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_classification_is_registered_and_the_default():
    assert "classification" in list_tasks()
    cfg = load_config(None, [])
    assert cfg.task == "classification"
    assert isinstance(create_task(cfg, ["a", "b"]), ClassificationTask)


def test_unknown_task_is_exit_2_with_the_list(tmp_path, capsys):
    rc, _, err = run_cli(["train", *DIGITS, "task=clasification", f"train.runs_dir={tmp_path}", "--quiet"], capsys)
    assert rc == 2
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "'clasification'" in err and "classification" in err.split("choose from")[-1]
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


def test_evaluate_matches_a_count_by_hand():
    """Task.evaluate's loss and accuracy against a direct computation, on batches of uneven size."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(50, 1, 3, 4), torch.randint(0, 3, (50,))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 50, 16)]
    task = create_task(load_config(None, []), ["a", "b", "c"])
    res = task.evaluate(model, batches, torch.device("cpu"))
    with torch.no_grad():
        logits = model(x)
    assert res["n"] == 50
    assert res["accuracy"] == (logits.argmax(1) == y).sum().item() / 50
    assert res["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)


class CountEpochs(Callback):
    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, trainer, epoch, metrics):
        self.epochs.append((epoch, metrics["val_accuracy"]))


@pytest.mark.parametrize("engine", ["torch", "reference"])
def test_both_engines_run_the_callbacks_they_are_given(engine, tmp_path):
    seen = CountEpochs()
    result = train(load_config(None, [*DIGITS, f"train.engine={engine}", f"train.runs_dir={tmp_path}"]),
                   quiet=True, callbacks=[seen])
    assert [e for e, _ in seen.epochs] == [1, 2]
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in rows] == [a for _, a in seen.epochs]
    assert result.final["task"] == "classification" and result.final["engine"] == engine


def test_resuming_with_the_other_engine_is_exit_2(tmp_path, capsys):
    result = train(load_config(None, [*DIGITS, "train.epochs=1", f"train.runs_dir={tmp_path}"]), quiet=True)
    before = (result.run_dir / "checkpoints" / "last.pt").read_bytes()
    rc, _, err = run_cli(["train", "--resume", str(result.run_dir), "train.engine=reference", "train.epochs=2",
                          "--quiet"], capsys)
    assert rc == 2 and "torch engine" in err and "train.engine=torch" in err and "Traceback" not in err
    assert (result.run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_the_loader_carries_sequences_with_a_task_collate():
    """Items that are not (image, label): token ids of varying length, padded by a collate."""
    class Sentences(torch.utils.data.Dataset):
        def __init__(self):
            self.items = [(torch.arange(1, n + 1), n % 2) for n in (3, 1, 4, 2, 5)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    def pad(items):
        length = max(len(t) for t, _ in items)
        ids = torch.zeros(len(items), length, dtype=torch.long)
        for i, (t, _) in enumerate(items):
            ids[i, :len(t)] = t
        return {"ids": ids, "mask": ids != 0}, torch.tensor([y for _, y in items])

    loader = make_loader(Sentences(), batch_size=2, mean=(0.0,), std=(1.0,), shuffle=False, seed=0,
                         device="cpu", augment=None, collate=pad)
    batches = list(loader)
    assert len(batches) == 3
    x, y = batches[0]
    assert x["ids"].tolist() == [[1, 2, 3], [1, 0, 0]] and x["mask"].sum().item() == 4
    assert y.tolist() == [1, 1]


# --------------------------------------------------------------------------- eval --data


def write_folder(root: Path, seed: int, per_class: int = 12) -> None:
    """Two classes of 8x8 grey images: dark squares and bright squares, with noise."""
    rng = np.random.default_rng(seed)
    for name, level in (("bright", 200), ("dark", 40)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(level, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / name / f"{i}.png")


def test_eval_on_another_dataset_counts_all_of_it(tmp_path, capsys):
    write_folder(tmp_path / "train", 0)
    write_folder(tmp_path / "other", 1, per_class=9)
    result = train(load_config(None, ["data.name=imagefolder", f"data.path={tmp_path / 'train'}",
                                      "data.val_fraction=0.25", "data.batch_size=8", "train.epochs=3",
                                      "model.name=null", "model.input=null", "model.layers=[flatten, {dense: 2}]", "optim.name=adam",
                                      "optim.lr=0.05", f"train.runs_dir={tmp_path / 'runs'}"]), quiet=True)
    rc, out, err = run_cli(["eval", str(result.run_dir), "--data", str(tmp_path / "other"), "--format", "json"],
                           capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["n"] == 18 and report["split"] == "data"
    # The oracle: predict every file of the other folder and count by hand.
    files = sorted(str(p) for p in (tmp_path / "other").rglob("*.png"))
    rc, out, err = run_cli(["predict", str(result.run_dir), *files, "--format", "json"], capsys)
    assert rc == 0, err
    predictions = json.loads(out)
    truth = [Path(f).parent.name for f in files]
    correct = sum(p["top"][0]["class"] == t for p, t in zip(predictions, truth))
    assert report["accuracy"] == pytest.approx(correct / 18)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == 18 and np.trace(matrix) == correct


def test_eval_data_errors_are_exit_2(tmp_path, capsys):
    write_folder(tmp_path / "train", 0)
    result = train(load_config(None, ["data.name=imagefolder", f"data.path={tmp_path / 'train'}",
                                      "data.val_fraction=0.25", "train.epochs=1", "model.name=null", "model.input=null",
                                      "model.layers=[flatten, {dense: 2}]", f"train.runs_dir={tmp_path / 'runs'}"]),
                   quiet=True)
    rc, _, err = run_cli(["eval", str(result.run_dir), "--data", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "does not exist" in err
    for name in ("a", "b", "c"):
        (tmp_path / "three3" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / "three3" / name / "0.png")
    rc, _, err = run_cli(["eval", str(result.run_dir), "--data", str(tmp_path / "three3")], capsys)
    assert rc == 2 and "classes" in err and "Traceback" not in err
