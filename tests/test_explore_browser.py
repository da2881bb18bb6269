"""The explorer as a person uses it, in a real headless Chromium: open the landing page, pick the dataset,
filter by a motif, page, open a record, move "as of" back, diff two points; the page must show what the
dataset holds (counted here from the data, not from the server). A screenshot of each step is kept in
build/test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import ARTIFACTS, chromium
from tools.screen_sample import MOTIF, NAME, dna, ids_of
from usr_es.explore_http import ExploreServer


@pytest.fixture
def served(screen_server: ExploreServer) -> ExploreServer:
    return screen_server


@pytest.fixture
def page(served: ExploreServer) -> Iterator[Any]:
    with chromium() as browser:
        tab = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(served.url)
        yield tab
        assert errors == [], errors  # no script error on the way


def _shot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"explore-{name}.png"), full_page=True)


def _count(tab: Any) -> str:
    return str(tab.locator("#count").inner_text())


def test_a_walk_through_the_explorer(page: Any) -> None:
    from playwright.sync_api import expect

    sequences = dna(240)
    motif_ids = [i for i, s in zip(ids_of(sequences), sequences, strict=True) if MOTIF in s.upper()]
    live_motif = [i for i in motif_ids if i not in ids_of(sequences)[:2]]  # two records deleted at seq 5

    # The landing page lists the dataset with its row count; picking it shows its facts and rows.
    entry = page.locator("#dataset-list button", has_text=NAME)
    expect(entry).to_contain_text("278")
    entry.click()
    expect(page.locator("#ds-facts")).to_contain_text("278 rows · 2 deleted · seq 6 · head")
    expect(page.locator("#count")).to_have_text("1–50 of 278 rows")
    expect(page.locator("#rows tbody tr")).to_have_count(50)
    expect(page.locator("[data-card='bio type']")).to_contain_text("protein")
    _shot(page, "1-dataset")

    # A motif, in lower case: the rows carrying it in any case, and the summaries follow the filter.
    page.fill("#motif", MOTIF.lower())
    page.click("#apply")
    expect(page.locator("#count")).to_have_text(f"1–50 of {len(live_motif)} rows")
    expect(page.locator("[data-card='bio type']")).not_to_contain_text("protein")
    expect(page.locator("[data-card^='sequence length']")).to_contain_text(f"({len(live_motif)} rows)")
    shown = page.locator("#rows tbody tr td.seq").all_inner_texts()
    assert shown and all(MOTIF in s.upper() for s in shown)
    _shot(page, "2-motif")

    # The next page holds the rest, and no row twice.
    first_page = page.locator("#rows tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    page.click("#next")
    expect(page.locator("#count")).to_have_text(f"51–{len(live_motif)} of {len(live_motif)} rows")
    second_page = page.locator("#rows tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert sorted(first_page + second_page) == sorted(live_motif)

    # A record: its values, its history and who wrote each value.
    row = page.locator("#rows tbody tr").first
    record_id = row.get_attribute("data-id")
    row.click()
    expect(page.locator("#record-title")).to_have_text(f"Record {record_id}")
    expect(page.locator("#record-history li").first).to_contain_text("import_rows")
    expect(page.locator("#record-values")).to_contain_text(str(sequences[ids_of(sequences).index(record_id)]))
    expect(page.locator("#record-blame tbody tr", has_text="sequence")).to_contain_text("import_rows")
    _shot(page, "3-record")

    # As of seq 2 (before the attach and the deletes), with the motif still applied.
    page.fill("#asof-seq", "2")
    page.locator("#asof-seq").dispatch_event("change")
    expect(page.locator("#ds-facts")).to_contain_text("240 rows · 0 deleted · seq 2 · as of seq 2")
    expect(page.locator("#count")).to_have_text(f"1–50 of {len(motif_ids)} rows")
    expect(page.locator("#asof-label")).to_contain_text("import_rows")
    columns = page.locator("#rows thead th").all_inner_texts()
    assert "assay__score" not in columns
    _shot(page, "4-as-of")

    # Back to the head, then the diff between seq 3 and the head.
    page.click("#asof-head")
    expect(page.locator("#ds-facts")).to_contain_text("seq 6 · head")
    page.fill("#diff-from", "3")
    page.fill("#diff-to", "6")
    page.click("#diff-run")
    expect(page.locator("#diff-facts")).to_contain_text("40 added")
    expect(page.locator("#diff-facts")).to_contain_text("2 deleted")
    _shot(page, "5-diff")


def test_a_bad_motif_is_reported_on_the_page(page: Any) -> None:
    from playwright.sync_api import expect

    page.locator("#dataset-list button", has_text=NAME).click()
    expect(page.locator("#count")).to_contain_text("of 278 rows")
    page.fill("#motif", "GA(ATT")
    page.click("#apply")
    expect(page.locator("#status")).to_have_text(re.compile("not a regular expression"))
    expect(page.locator("#count")).to_contain_text("of 278 rows")  # the last answer stays


def test_a_link_opens_a_dataset_as_of_a_seq(served: ExploreServer) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        tab = browser.new_page()
        tab.goto(served.link(NAME).replace("#dataset=", "#as_of=4&dataset="))
        expect(tab.locator("#ds-facts")).to_contain_text("seq 4 · as of seq 4")
        expect(tab.locator("#count")).to_have_text("1–50 of 280 rows")
