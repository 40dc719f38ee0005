"""torchvision's detector families on cnnkit backbones: where the feature levels are cut, that each
family learns (one image overfitted, its boxes found with the right labels), and backbones taken
from a cnnkit classification run (``model.backbone_weights``), through the real commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.ops import box_iou

from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.models import create_model, get_model
from cnnkit.models.detection.backbone import find_levels
from cnnkit.models.spec import build_torch
from cnnkit.spec import parse_layers

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "detect_shapes.yaml"
LAYERS = [{"conv": {"out": 16, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2},
          {"conv": {"out": 32, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2},
          {"conv": {"out": 32, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2},
          {"conv": {"out": 64, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2}, "flatten", {"dense": 10}]


# --------------------------------------------------------------------------- feature levels


def test_levels_end_where_each_stage_ends():
    # ResNet-18 at 128 px (ImageNet stem): stages end at layerN's last ReLU, strides 4..32.
    levels = find_levels(get_model("resnet18", num_classes=10, input_size=128), (3, 128, 128))
    assert [(n, c, s) for n, c, s in levels[-4:]] == [
        ("body.layer1.1.relu_1", 64, 4), ("body.layer2.1.relu_1", 128, 8),
        ("body.layer3.1.relu_1", 256, 16), ("body.layer4.1.relu_1", 512, 32)]
    # Inception v3: a reduction block starts with branches still at the old size; the level is the
    # previous block's concatenation, not one of those branches.
    names = [n for n, _, _ in find_levels(get_model("inception_v3", num_classes=10, input_size=299), (3, 299, 299))]
    assert names[-3:] == ["body.Mixed_5d.cat", "body.Mixed_6e.cat", "body.Mixed_7c.cat_2"]
    # A layer list: the last layer before each pooling step; flatten and the head are not part of it,
    # and the trunk works at another input size than the one it was built for.
    net = build_torch(parse_layers(LAYERS), (3, 32, 32), 10)
    assert find_levels(net, (3, 64, 64)) == [("relu1", 16, 1), ("relu2", 32, 2), ("relu3", 32, 4),
                                             ("relu4", 64, 8), ("maxpool4", 64, 16)]


# --------------------------------------------------------------------------- every family learns


@pytest.mark.parametrize("name,size,steps", [("faster_rcnn", 64, 150), ("retinanet", 64, 60), ("fcos", 128, 60),
                                             ("ssd", 64, 60), ("ssdlite", 64, 80)])
def test_each_family_overfits_one_image_with_the_right_labels(name, size, steps):
    torch.manual_seed(0)
    s = size / 64
    image = torch.zeros(1, 3, size, size)
    image[:, 0, int(10 * s):int(40 * s), int(20 * s):int(50 * s)] = 1.0   # a red square, class 1
    image[:, 2, int(44 * s):int(60 * s), int(4 * s):int(20 * s)] = 1.0    # a blue one, class 0
    boxes = torch.tensor([[20.0, 10.0, 50.0, 40.0], [4.0, 44.0, 20.0, 60.0]]) * s
    target = [{"boxes": boxes, "labels": torch.tensor([1, 0])}]
    width = {"fpn_channels": 32} if name in ("faster_rcnn", "retinanet", "fcos") else {"extra_channels": 32}
    model = get_model(name, num_classes=2, input_size=size, backbone=build_torch(parse_layers(LAYERS), (3, size, size), 10),
                      **width)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        loss = sum(model(image, target).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.conf = 0.2
    with torch.no_grad():
        (out,) = model(image)
    for box, label in zip(boxes, (1, 0)):  # each square is found, with its own label (0-based, no background)
        hits = out["labels"] == label
        assert hits.any(), (name, out)
        assert box_iou(box[None], out["boxes"][hits]).max() > 0.5, (name, out)
    assert int(out["labels"].min()) >= 0 and int(out["labels"].max()) <= 1


# --------------------------------------------------------------------------- a backbone cnnkit trained


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> Path:
    """A layer-list classifier trained on the bundled grey MNIST digits."""
    root = tmp_path_factory.mktemp("cls")
    cfg = root / "cls.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "mnist5k", "subset": 200, "batch_size": 50},
                                   "model": {"layers": LAYERS}, "train": {"epochs": 1, "device": "cpu",
                                                                          "runs_dir": str(root / "runs")}}))
    assert main(["train", str(cfg), "--quiet"]) == 0
    (run,) = (root / "runs").iterdir()
    return run


FAST = ["data.subset=24", "data.image_size=64", "train.epochs=1", "data.batch_size=8", "train.device=cpu",
        "model.name=retinanet", "model.options.fpn_channels=16"]


def test_backbone_weights_from_a_classification_run(classifier_run, tmp_path, capsys):
    # The detector's backbone starts as the classifier's weights: its first convolution is the grey
    # filter spread over the three colours (each colour a third of it), the rest copied as they are.
    cfg = load_config(str(RECIPE), [*FAST, f"model.backbone_weights={classifier_run}"])
    from cnnkit.train.setup import resolve_backbone

    cfg = resolve_backbone(cfg)
    assert cfg.model.backbone.layers == LAYERS and cfg.model.backbone.input == [1, 28, 28]
    detector = create_model(cfg.model, (3, 64, 64), 3)
    state = torch.load(classifier_run / "checkpoints" / "best.pt", weights_only=True)["model"]
    got = detector.state_dict()
    prefix = "net.backbone.body.body."
    torch.testing.assert_close(got[prefix + "conv1.weight"], state["conv1.weight"].repeat(1, 3, 1, 1) / 3)
    torch.testing.assert_close(got[prefix + "conv3.weight"], state["conv3.weight"])
    assert not any(k.startswith(prefix + "dense") for k in got)  # the head is cut off

    # Through the command: the run's config says which network the backbone is, so eval rebuilds
    # it after the classification run is gone.
    runs = tmp_path / "runs"
    assert main(["train", str(RECIPE), *FAST, f"model.backbone_weights={classifier_run}", f"train.runs_dir={runs}",
                 "--quiet"]) == 0
    (det,) = runs.iterdir()
    saved = yaml.safe_load((det / "config.yaml").read_text())["model"]
    assert saved["backbone"]["layers"] == LAYERS and saved["backbone_weights"] == str(classifier_run)
    moved = tmp_path / "gone"
    shutil.move(str(classifier_run), moved)
    try:
        capsys.readouterr()
        assert main(["eval", str(det), "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["n_images"] > 0 and 0.0 <= report["map_50"] <= 1.0
        assert main(["export", str(det), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
        assert "not exported yet" in capsys.readouterr().err
    finally:
        shutil.move(str(moved), classifier_run)


@pytest.mark.parametrize("override,message", [
    (["model.name=yolo_n", "model.options={}", "model.backbone_weights=RUN"], "takes its backbone from cspnet_n"),
    (["model.name=yolo_n", "model.options={}", "model.backbone=resnet18"], "takes its backbone from cspnet_n"),
    (["model.backbone_weights=/nonexistent/run"], "does not exist"),
    (["model.backbone=yolo_n"], "is a detection model"),
    (["model.options.backbone=resnet18"], "not model.options.backbone"),
    (["model.backbone_weights=PLAIN"], "plain weights file"),
])
def test_bad_backbones_are_exit_2_before_any_run(classifier_run, tmp_path, capsys, override, message):
    plain = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(16, 1, 3, 3)}, plain)
    override = [o.replace("RUN", str(classifier_run)).replace("PLAIN", str(plain)) for o in override]
    runs = tmp_path / "runs"
    assert main(["train", str(RECIPE), *FAST, *override, f"train.runs_dir={runs}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir())


def test_yolo_starts_from_a_cspnet_run(tmp_path):
    """cspnet_n is yolo_n's backbone as a classifier; its run's weights become the detector's backbone."""
    root = tmp_path / "runs"
    cfg = tmp_path / "csp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "mnist5k", "subset": 100, "batch_size": 50, "image_size": 32},
                                   "model": {"name": "cspnet_n"},
                                   "train": {"epochs": 1, "device": "cpu", "runs_dir": str(root)}}))
    assert main(["train", str(cfg), "--quiet"]) == 0
    (run,) = root.iterdir()
    from cnnkit.train.setup import resolve_backbone

    det_cfg = resolve_backbone(load_config(str(RECIPE), ["data.image_size=64", f"model.backbone_weights={run}"]))
    assert det_cfg.model.backbone.name == "cspnet_n"
    detector = create_model(det_cfg.model, (3, 64, 64), 3)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    got = detector.state_dict()
    for key in ("stage3.0.0.weight", "stage5.2.merge.1.running_mean"):
        torch.testing.assert_close(got["backbone." + key], state["body.backbone." + key])
    torch.testing.assert_close(got["backbone.stem.0.weight"], state["body.backbone.stem.0.weight"].repeat(1, 3, 1, 1) / 3)
