"""`make screenshots`: the README's picture of `usr explore`, taken in a real headless Chromium.

Builds the sample screening dataset (tools/screen_sample.py) in a scratch root, serves it, opens it with a
motif filter and a record, and writes docs/img/explore.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tools.browser import chromium
from tools.screen_sample import MOTIF, NAME, screen
from usr_es.explore_http import ExploreServer

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "explore.png"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="usr-screenshots-") as scratch:
        screen(Path(scratch))
        with ExploreServer(Path(scratch)) as server, chromium() as browser:
            tab = browser.new_page(viewport={"width": 1400, "height": 860})
            tab.goto(server.link(NAME))
            tab.wait_for_selector("#rows tbody tr")
            tab.fill("#motif", MOTIF)
            tab.click("#apply")
            tab.wait_for_function("document.querySelector('#count').textContent.includes('of 79 rows')")
            tab.locator("#rows tbody tr").nth(2).click()
            tab.wait_for_selector("#record-history li")
            OUT.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(OUT))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
