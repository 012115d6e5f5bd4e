"""A headless Chromium for the tests that look at the dashboard as a person would.

Debian's chromium and chromium-driver (.ci/run installs them); the tests using it skip
with that reason where they are absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MISSING = "needs Debian's chromium and chromium-driver (.ci/run installs them)"


def chrome(profile: Path, *, console_log: bool = False) -> Any:
    """A headless Chromium with a private profile, no network of its own and a tall
    window; ``console_log`` keeps the browser console for ``get_log("browser")``."""
    from selenium import webdriver  # a test dependency: imported by the tests that use it
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2200",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(DRIVER)), options=options)
