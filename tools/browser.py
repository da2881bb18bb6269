"""A real headless Chromium, driven by Playwright's Python API: the distribution's browser
(`apt-get install chromium`), never one Playwright downloads. Used by the explorer's browser tests
(tests/browser.py) and `make screenshots`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Flags for a sandboxed machine with no network beyond loopback (no first-run, sync or update traffic).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


class BrowserMissing(RuntimeError):
    """No Chromium, or no Playwright, on this machine."""


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (a Playwright `Browser`)."""
    binary = chromium_binary()
    if binary is None:
        raise BrowserMissing("chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserMissing("playwright not installed (pip install -e '.[dev]')") from None
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=binary, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
