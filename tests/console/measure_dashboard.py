"""How long the dashboard takes in a real browser: navigation start to the load event, and to
the first paint of the cards, for a page the benchmark (benches/admin_reads.rs) set up.

Usage: measure_dashboard.py URL COOKIE_VALUE   (prints one JSON line)
"""
import json
import sys
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

url, cookie = sys.argv[1], sys.argv[2]
host = urlparse(url).hostname
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
    context = browser.new_context()
    context.add_cookies([{"name": "tg_session", "value": cookie, "domain": host, "path": "/"}])
    page = context.new_page()
    runs = []
    for _ in range(5):
        page.goto(url)
        page.wait_for_selector("#card-cost")
        runs.append(page.evaluate("""() => {
            const n = performance.getEntriesByType('navigation')[0];
            return {response_ms: n.responseEnd, dom_ready_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd};
        }"""))
    browser.close()
runs.sort(key=lambda r: r["load_ms"])
print(json.dumps({"median": runs[len(runs) // 2], "runs": len(runs)}))
