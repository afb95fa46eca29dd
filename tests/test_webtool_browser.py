"""End to end in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``).

The test starts ``sa-engine annotate`` on a free loopback port, opens the page, clicks on an
object of a synthetic image, checks that a mask overlay appears, accepts it (and a brushed
mask), moves to the next image and finds the annotations in the run directory. Nothing is
downloaded: Selenium is given the driver's path, so Selenium Manager never runs. Skips with
a reason when Chromium, ChromeDriver or Selenium is missing.

Set ``SA_ENGINE_SCREENSHOT=path.png`` to keep the page's screenshot (docs/images uses it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import clicks as click_rules
from engine import masks as mask_ops
from engine.annotators.human_store import HumanAnnotationStore
from engine.data.synthetic import render_scene
from engine.model import SamPredictor, build_sam, save_checkpoint
from engine.webtool.demo_queue import write_demo_queue

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)
H, W = 384, 512
PREFIX = "stage1-r00"
GUARD_SECONDS = 120.0  # a hang guard only: a healthy run needs a few seconds per step
ROOT = Path(__file__).resolve().parents[1]

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, what: str):
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """3 synthetic scenes; a seeded tiny model saved as the round's checkpoint."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_checkpoint(build_sam("tiny"), root / "checkpoints" / "init.pt")
    write_demo_queue(
        root,
        count=3,
        height=H,
        width=W,
        prefill=2,
        stage="semi_automatic",
        checkpoint="checkpoints/init.pt",
    )
    return root


@pytest.fixture(scope="module")
def server(run_dir):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "stages.cli", "annotate", f"run_dir={run_dir}", f"port={port}"]
    log = open(run_dir / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((run_dir / "server.log").read_text())
        try:
            with urllib.request.urlopen(url + "api/round", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        _wait(up, "the server to start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _click_target(key: str, rank: int = 0) -> tuple[float, float]:
    """The interior point farthest from the boundary of the image's ``rank``-th largest
    reference mask (0 = the largest)."""
    seed = int(key.split("-")[1])
    _, references = render_scene(seed, H, W)
    ranked = sorted(references, key=lambda r: -mask_ops.rle_area(r.rle))
    click = click_rules.next_click(mask_ops.rle_to_mask(ranked[rank].rle), None)
    return float(click.x), float(click.y)


def _click_at(driver, element, x: float, y: float) -> None:
    """Click image pixel (x, y) of the displayed canvas (offsets are from its centre)."""
    rect = element.rect
    dx = (x + 0.5) * rect["width"] / W - rect["width"] / 2
    dy = (y + 0.5) * rect["height"] / H - rect["height"] / 2
    ActionChains(driver).move_to_element_with_offset(element, int(dx), int(dy)).click().perform()


def test_rle_codec_in_the_page_matches_pycocotools(server, browser):
    browser.get(server + "?annotator=codec")
    _wait(lambda: browser.execute_script("return typeof RLE === 'object'"), "rle.js")
    rng = np.random.default_rng(0)
    cases = [
        np.zeros((5, 7), dtype=bool),
        np.ones((5, 7), dtype=bool),
        np.indices((6, 9)).sum(0) % 2 == 0,  # checkerboard: many short runs
        rng.random((40, 33)) < 0.3,
        np.pad(np.ones((300, 200), dtype=bool), ((1, 2), (3, 4))),  # long runs (multi-group)
    ]
    for mask in cases:
        rle = mask_ops.mask_to_rle(mask)
        h, w = mask.shape
        flat = [int(v) for v in mask.reshape(-1)]
        encoded = browser.execute_script(
            "return RLE.encode(arguments[0], arguments[1], arguments[2])", flat, h, w
        )
        assert encoded == rle
        decoded = browser.execute_script("return Array.from(RLE.decode(arguments[0]))", rle)
        assert decoded == flat


def test_click_accept_brush_and_next_in_chromium(server, browser, run_dir, tmp_path):
    browser.get(server + "?annotator=alice")
    _wait(lambda: browser.execute_script("return !!window.saTool && saTool.ready()"), "the page")
    key = browser.find_element(By.ID, "image-key").text
    store = HumanAnnotationStore(run_dir, PREFIX)
    assert store.holder(key) is None  # this process's store is not the server's
    overlay = browser.find_element(By.ID, "overlay")
    prefilled = browser.execute_script("return saTool.overlayOpaquePixels()")
    assert prefilled > 0  # the pre-filled mask is drawn

    # a click on the largest object: the model's mask shows as an overlay
    x, y = _click_target(key)
    _click_at(browser, overlay, x, y)
    area = _wait(lambda: browser.execute_script("return saTool.currentArea()"), "a mask proposal")
    _wait(
        lambda: browser.execute_script("return saTool.overlayOpaquePixels()") > prefilled,
        "the overlay to show the proposal",
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#proposals button")) == 3

    ActionChains(browser).send_keys(Keys.ENTER).perform()
    path = run_dir / "human" / PREFIX / f"{key}.json"
    _wait(path.exists, "the saved annotation")
    doc = json.loads(path.read_text())
    saved = doc["masks"][-1]
    assert doc["annotator"] == "alice" and not doc["done"]
    assert saved["provenance"]["source"] == "annotator"
    assert saved["provenance"]["clicks"] == 1 and saved["provenance"]["hand_fixed"] is False
    assert saved["segmentation"]["size"] == [H, W] and saved["area"] == area
    # the saved mask is the model's best proposal for the click the page sent
    ((px, py),) = saved["point_coords"]
    assert abs(px - x) <= 1.5 and abs(py - y) <= 1.5
    torch.manual_seed(0)
    predictor = SamPredictor(build_sam("tiny"))
    predictor.set_image(render_scene(int(key.split("-")[1]), H, W)[0])
    masks, scores, _ = predictor.predict(np.array([[px, py]]), np.array([1]))
    np.testing.assert_array_equal(
        mask_ops.rle_to_mask(saved["segmentation"]), masks[int(np.argmax(scores))]
    )

    # brush: a stroke on an empty mask, accepted as a hand-made mask
    ActionChains(browser).send_keys("b").perform()
    rect = overlay.rect
    start = (int(-rect["width"] * 0.3), int(rect["height"] * 0.3))
    ActionChains(browser).move_to_element_with_offset(
        overlay, *start
    ).click_and_hold().move_by_offset(60, 0).release().perform()
    assert browser.execute_script("return saTool.currentArea()") > 0
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    _wait(lambda: len(json.loads(path.read_text())["masks"]) == len(doc["masks"]) + 1, "brush mask")
    brushed = json.loads(path.read_text())["masks"][-1]["provenance"]
    assert brushed["hand_fixed"] is True and brushed["model_iou"] is None

    # a second object: the page shows the proposal, its 3 choices and the click
    ActionChains(browser).send_keys("p").perform()
    _click_at(browser, overlay, *_click_target(key, rank=1))
    _wait(lambda: browser.execute_script("return saTool.currentArea()"), "a second proposal")
    ActionChains(browser).send_keys("2").perform()
    shot = tmp_path / "annotation_tool.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SA_ENGINE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SA_ENGINE_SCREENSHOT"])

    # N refuses to leave a pending mask; Esc discards it; N finishes and opens the next image
    ActionChains(browser).send_keys("n").perform()
    _wait(lambda: "first" in browser.find_element(By.ID, "message").text, "the N refusal")
    assert browser.find_element(By.ID, "image-key").text == key
    ActionChains(browser).send_keys(Keys.ESCAPE, "n").perform()
    _wait(lambda: browser.find_element(By.ID, "image-key").text not in (key, ""), "next image")
    assert store.done_keys() == {key}
    assert browser.find_element(By.ID, "image-key").text != key
