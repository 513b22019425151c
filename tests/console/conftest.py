"""Browser tests of the console: Playwright driving Debian's chromium (never a downloaded one).

Started by tests/e2e/console.rs, which runs a whole Tollgate (gateway, admin, fake Google
upstream) and passes its addresses and accounts in the environment.
"""
import json
import os
import pathlib
import urllib.error
import urllib.request

import pytest

ADMIN = os.environ["TG_ADMIN_URL"]
GATEWAY = os.environ["TG_GATEWAY_URL"]
PASSWORD = os.environ["TG_PASSWORD"]
ROOT = os.environ["TG_ROOT_EMAIL"]
MEMBER = os.environ["TG_MEMBER_EMAIL"]
OTHER = os.environ["TG_OTHER_EMAIL"]
KEY = os.environ["TG_APP_KEY"]
TOKEN = os.environ["TG_ROOT_TOKEN"]
SHOTS = pathlib.Path(os.environ["TG_SCREENSHOTS"])
AXE = (pathlib.Path(__file__).parent / "vendor" / "axe.min.js").read_text()


@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # axe-core is injected as an inline script, which the console's CSP refuses (as it should).
    return {**browser_context_args, "bypass_csp": True, "accept_downloads": True}


@pytest.fixture
def page(context):
    """A page that records every request it makes, to prove none leaves the origin."""
    p = context.new_page()
    p.requests_seen = []
    p.on("request", lambda r: p.requests_seen.append(r.url))
    yield p
    foreign = [u for u in p.requests_seen if not (u.startswith(ADMIN) or u.startswith("data:"))]
    assert not foreign, f"requests left the origin: {foreign}"


def login(page, email, password=PASSWORD):
    page.goto(f"{ADMIN}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api(path):
    req = urllib.request.Request(f"{ADMIN}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def gateway(key, model="gemini-2.5-flash", op="generateContent", user=None, tool=None):
    """A request through the gateway; its HTTP status."""
    headers = {"x-goog-api-key": key, "content-type": "application/json"}
    if user:
        headers["x-tollgate-user"] = user
    if tool:
        headers["x-tollgate-tool"] = tool
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "why is the sky blue"}]}]}).encode()
    req = urllib.request.Request(f"{GATEWAY}/v1beta/models/{model}:{op}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def axe_check(page):
    """axe-core's rules for labels, contrast and landmarks: no serious or critical violation."""
    page.add_script_tag(content=AXE)
    result = page.evaluate(
        """async () => await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})"""
    )
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"accessibility violations: {bad}"
