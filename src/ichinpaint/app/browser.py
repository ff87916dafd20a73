"""Drive the served review app in headless Chromium: the browser test and the README screenshot.

Uses Debian's ``chromium`` and ``chromedriver`` (``make browser``) through selenium
with an explicit driver path, so selenium never tries to download a driver. The
page counts as rendered when the slice picture has arrived: an ``<img>`` with a
non-zero natural size next to the slice caption.

    python -m ichinpaint.app.browser --root . --out docs/images/review_app.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # needed as root (containers, CI)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Text of the slice picture's caption (see streamlit_app.show_slice).
SLICE_CAPTION = "cyan: detections"
_LOADED_IMAGES = (
    "return Array.from(document.images)"
    ".filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length"
)


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served_app(app_args: list[str], port: int, log: Path, timeout: float = 60) -> Iterator[str]:
    """Run ``ichinpaint app --port <port> <app_args>``; yield its URL once it answers.

    The server's output goes to `log` (shown when a check fails); the process is
    stopped on exit.
    """
    command = [str(Path(sys.executable).with_name("ichinpaint")), "app", "--port", str(port)]
    with open(log, "wb") as out:
        # Own process group, so the streamlit child can be stopped with it whatever happens.
        process = subprocess.Popen(
            [*command, *app_args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, process, log, timeout)
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the app (it stops its server), then SIGKILL to whatever is left of the group."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the app did not answer on {url} within {timeout} s:\n{log.read_text()}")


@contextlib.contextmanager
def chromium(width: int = 1500, height: int = 1300) -> Iterator:
    """A headless Chromium session with a fresh profile directory, closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ichinpaint-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    with contextlib.suppress(Exception):
        return driver.find_element(By.TAG_NAME, "body").text
    return "<no page text>"


def wait_for_slice_image(driver, url: str, timeout: float = 90, min_images: int = 1) -> int:
    """Load `url` and wait until the slice picture (and `min_images` images in all) has
    rendered; returns the loaded image count.

    Raises TimeoutError carrying the page text, so a failure says what the page shows
    instead (an error message, a traceback, a spinner).
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)

    def rendered(d) -> int | bool:
        loaded = d.execute_script(_LOADED_IMAGES)
        return loaded if loaded >= min_images and SLICE_CAPTION in page_text(d) else False

    try:
        return int(WebDriverWait(driver, timeout, poll_frequency=0.5).until(rendered))
    except TimeoutException:
        raise TimeoutError(
            f"no rendered slice image on {url} after {timeout} s; page text:\n{page_text(driver)}"
        ) from None


def save_screenshot(driver, out: Path) -> None:
    """The page as a PNG, after the last re-run settles (spinners gone)."""
    time.sleep(2.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the review app in headless Chromium.")
    parser.add_argument("--out", type=Path, default=Path("docs/images/review_app.png"))
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=1300)
    args, app_args = parser.parse_known_args(argv)
    if not browser_available():
        raise SystemExit(f"needs {CHROMIUM} and {CHROMEDRIVER} (make browser)")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with served_app(app_args, free_port(), log) as url, chromium(args.width, args.height) as d:
            wait_for_slice_image(d, url, min_images=2)  # slice picture and score strip
            save_screenshot(d, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
