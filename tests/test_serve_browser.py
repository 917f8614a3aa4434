"""`cifarlab serve` for real: a server process on a free port, its page driven by headless Chromium."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import cifarlab
from tests.deploy_fixtures import train_tiny_run

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    run = train_tiny_run(tmp_path)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cifarlab.cli", "serve", str(run), "--port", str(port), "--precision", "fp32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as response:
                assert json.load(response)["status"] == "ok"
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"cifarlab serve did not start:\n{process.stdout.read()}")
            time.sleep(0.3)
    yield url, run
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def _browser(profile: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=900,700"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def test_the_page_uploads_an_image_and_shows_its_class(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, run = server
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 60, 30)).save(image)
    expected = cifarlab.load(run, device="cpu", precision="fp32").predict_files([image])[0].classes[0]
    driver = _browser(tmp_path / "profile")
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(image))
        result = driver.find_element(By.ID, "result")
        shown = WebDriverWait(driver, 30).until(lambda d: result.get_attribute("data-top-class"))
        assert shown == expected == driver.find_element(By.ID, "top-class").text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .row")) == 4  # top-k: min(5, 4 classes)
        screenshot = os.environ.get("CIFARLAB_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)
    finally:
        driver.quit()
