"""Headless Chromium for the pages' tests: Debian's /usr/bin/chromium driven by Playwright
(never a downloaded browser), and screenshots saved as the tests' artefacts.

    def test_x(browser_page, shots):
        browser_page.goto(url); shots(browser_page, "status")          # 1280 px wide
        shots.phone(browser_page, "status")                              # 390 px wide

A missing chromium is a failure, not a skip (./run installs it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("COFFRE_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which this
# machine's closed network refuses; --no-sandbox because the tests may run as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"{CHROMIUM} is missing: ./run check installs Debian's chromium package")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) and page, French first."""
    context = chromium.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900},
                                   ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


class Shots:
    """Saves screenshots under the test's temporary folder (tmp_path/screenshots)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        self.taken.append(path)
        return path

    def phone(self, page: Any, name: str) -> Path:
        """The page at 390 px wide; fails if it scrolls sideways (not readable on a phone)."""
        before = page.viewport_size
        page.set_viewport_size({"width": 390, "height": 844})
        try:
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 2, f"{name}: the page is {overflow}px wider than a phone's screen"
            return self(page, name + "-390px")
        finally:
            page.set_viewport_size(before)


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path / "screenshots")
