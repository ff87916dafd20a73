"""End to end: `ichinpaint app` serves the page and headless Chromium renders a slice.

Skipped only when Debian's chromium/chromedriver are absent outside CI; with ``CI``
set it must run (``make test`` installs them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_app import write_output_set

from ichinpaint.app import browser
from ichinpaint.stages import app as app_stage


def test_app_command_is_headless_local_and_forwards_paths():
    parser = argparse.ArgumentParser()
    app_stage.add_arguments(parser)
    args = parser.parse_args(["--port", "8765", "--root", "/x", "--ground_truth", "gt"])
    command = app_stage.streamlit_command(args)
    joined = " ".join(command)
    assert str(app_stage.SCRIPT) in command and app_stage.SCRIPT.exists()
    assert "--server.headless true" in joined and "--server.address 127.0.0.1" in joined
    assert "--server.port 8765" in joined
    assert command[command.index("--") + 1 :][:2] == ["--root", "/x"]
    assert "--ground_truth gt" in joined


def test_app_help_lists_its_options():
    exe = Path(sys.executable).with_name("ichinpaint")
    out = subprocess.run([exe, "app", "--help"], capture_output=True, text=True, check=True)
    assert "--port" in out.stdout and "--detections" in out.stdout


@pytest.mark.browser
def test_page_renders_a_slice_in_headless_chromium(tmp_path):
    if not browser.browser_available():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {browser.CHROMIUM} / {browser.CHROMEDRIVER} are missing")
        pytest.skip(f"{browser.CHROMIUM} and {browser.CHROMEDRIVER} absent (run `make browser`)")
    root = write_output_set(tmp_path / "outputs")
    log = tmp_path / "server.log"
    app_args = ["--root", str(root), "--ground_truth", "data/raw/ground_truth"]
    with (
        browser.served_app(app_args, browser.free_port(), log) as url,
        browser.chromium() as driver,
    ):
        try:
            loaded = browser.wait_for_slice_image(driver, url, min_images=2)
        except TimeoutError as error:
            pytest.fail(f"{error}\n--- server log ---\n{log.read_text()}")
        text = browser.page_text(driver)
    assert loaded >= 2, text  # slice picture and score strip
    assert "Bleed slices flagged" in text and "Traceback" not in text
    assert not streamlit_servers_for(root), "the app left its streamlit server running"


def streamlit_servers_for(root: Path) -> list[str]:
    """Command lines of running processes serving `root` (from /proc; Linux)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(args) and str(root).encode() in args:
            found.append(b" ".join(args).decode(errors="replace"))
    return found
