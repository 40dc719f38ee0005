"""``cnnkit serve`` end to end in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium): the runs page lists the run, an image uploaded through the run page's file input
is predicted as ``predict_files`` predicts it, and the glass box's Next button walks the course's
convolution with the values NumPy computes. Screenshots go to ``$CNNKIT_SCREENSHOTS`` (else a temp folder).

The browser is required, not optional: without it these tests fail and say how to install it
(``.ci/ensure-chromium`` does, in CI).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from cnnkit.tools.serve import create_app
from test_serve_api import COURSE, digit_png, lenet_runs_dir

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app over a runs folder with one finished run, on a free port of 127.0.0.1, in a thread."""
    root = lenet_runs_dir(tmp_path_factory)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(root, allowed_hosts=["127.0.0.1"]), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", next(root.glob("*-lenet-*"))
    server.should_exit = True
    thread.join(WAIT_S)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"the browser tests need Debian's Chromium and its driver ({', '.join(missing)} missing): "
                    f"install them with 'apt-get install -y chromium chromium-driver' (or run .ci/ensure-chromium)",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CNNKIT_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"timed out waiting for {what}")


def js_fmt(v: float, digits: int) -> str:
    """app.js's ``fmt`` of a number in [1e-3, 1e6): ``String(Number(v.toFixed(digits)))``."""
    x = float(f"{v:.{digits}f}")
    return str(int(x)) if x == int(x) else repr(x)


def test_runs_page_lists_the_run_with_its_final_metrics(served, browser, screenshots):
    from selenium.webdriver.common.by import By

    base, run = served
    browser.get(base + "/")
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-run="{run.name}"]'), "the run's row")[0]
    cells = row.find_elements(By.TAG_NAME, "td")
    assert cells[0].text == run.name and cells[1].text == "finished" and cells[2].text == "classification"
    final = json.loads((run / "final.json").read_text())
    assert f"accuracy {js_fmt(final['val_accuracy'], 4)}" in cells[5].text
    browser.save_screenshot(str(screenshots / "runs.png"))


def test_run_page_predicts_an_uploaded_image_as_predict_files(served, browser, screenshots, tmp_path):
    from selenium.webdriver.common.by import By

    from cnnkit.inference import load_run_model, predict_files

    base, run = served
    png = digit_png(tmp_path / "digit.png")
    model, info = load_run_model(run, device="cpu")
    want = predict_files(model, info, [str(png)], top_k=5)[0]["top"][0]

    browser.get(f"{base}/runs/{run.name}")
    file_input = wait(browser, lambda d: d.find_element(By.ID, "predict-file") if d.find_element(
        By.ID, "image-input").is_displayed() else False, "the file input")
    file_input.send_keys(str(png))
    button = browser.find_element(By.ID, "predict-button")
    wait(browser, lambda d: button.is_enabled(), "the predict button")
    button.click()
    shown = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#prediction .top-class"), "the prediction")[0]
    assert shown.text == want["class"]
    assert want["class"] in browser.find_element(By.ID, "prediction").text
    assert f"({100 * want['probability']:.2f}%)" in browser.find_element(By.CSS_SELECTOR, "#prediction .top").text
    # the loss curve was drawn: pixels in the first series' colour (the page's own COLORS[0]; the title,
    # axes and grid are drawn in other colours), in the plot (below the legend row) and in its legend
    drawn = browser.execute_script(
        "const rgb = COLORS[0].match(/[0-9a-f]{2}/gi).map(h => parseInt(h, 16));"
        "const c = document.getElementById('chart-loss'), dpr = window.devicePixelRatio || 1;"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const n = {plot: 0, legend: 0};"
        "for (let i = 0; i < d.length; i += 4) {"
        "  if (d[i + 3] < 200 || [0, 1, 2].some(k => Math.abs(d[i + k] - rgb[k]) > 30)) continue;"
        "  if (Math.floor(i / 4 / c.width) < 20 * dpr) n.legend++; else n.plot++; }"
        "return n;")
    assert drawn["plot"] >= 10 and drawn["legend"] >= 20, drawn
    browser.save_screenshot(str(screenshots / "run.png"))

    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    browser.find_element(By.ID, "predict-file").send_keys(str(not_image))
    wait(browser, lambda d: button.is_enabled(), "the predict button")
    button.click()
    error = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#prediction .error"), "the error")[0]
    assert "not an image" in error.text


def test_glass_box_steps_through_the_course_convolution(served, browser, screenshots):
    from selenium.webdriver.common.by import By

    base, _ = served
    oracle = (np.lib.stride_tricks.sliding_window_view(COURSE, (3, 3)) / 9).sum(axis=(-2, -1))
    browser.get(base + "/explain")
    value = browser.find_element(By.ID, "step-value")
    wait(browser, lambda d: value.text not in ("", "–"), "the first step")
    prev, nxt = browser.find_element(By.ID, "step-prev"), browser.find_element(By.ID, "step-next")
    assert not prev.is_enabled()
    for k, expected in enumerate(oracle.ravel()):
        i, j = divmod(k, 3)
        assert abs(float(value.text) - expected) <= 5e-5, (k, value.text, expected)
        assert browser.find_element(By.ID, "step-position").text == f"({i}, {j})"
        highlighted = [float(c.text) for c in browser.find_elements(By.CSS_SELECTOR, "#input-matrix td.in-window")]
        assert highlighted == COURSE[i:i + 3, j:j + 3].ravel().tolist()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#output-matrix td.done")) == k
        if k == 4:
            browser.save_screenshot(str(screenshots / "explain.png"))
        if k < 8:
            nxt.click()
    assert not nxt.is_enabled() and prev.is_enabled()
    prev.click()
    assert abs(float(value.text) - oracle[2, 1]) <= 5e-5
