"""The explorer's browser tests' Chromium (tools/browser.py): `.ci/run` installs the distribution's
`chromium` when missing and sets `USR_REQUIRE_BROWSER=1`, so there a missing browser fails the tests
instead of skipping them. Screenshots go to `build/test-artifacts/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tools.browser import BrowserMissing
from tools.browser import chromium as launch

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; skips (fails, with `USR_REQUIRE_BROWSER=1`) where there is none."""
    try:
        with launch() as browser:
            yield browser
    except BrowserMissing as exc:  # raised before the browser starts, never by a test's own steps
        if os.environ.get("USR_REQUIRE_BROWSER") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
