"""What a person does in the console, in a real browser, against a real Tollgate."""
import csv
import io
import time

from conftest import (ADMIN, KEY, MEMBER, OTHER, ROOT, api, axe_check, gateway, login, shot)


def wait_for(what, check, within=5.0):
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def numbers(text):
    return text.replace(",", "").replace("$", "").strip()


def test_a_wrong_password_is_refused_and_the_right_one_lands_on_the_dashboard(page):
    login(page, ROOT, "not the password")
    assert page.get_by_role("alert").inner_text() == "wrong email or password"
    shot(page, "login-refused")
    login(page, ROOT)
    page.wait_for_url("**/orgs/acme/dashboard")
    assert page.get_by_role("heading", level=1).inner_text() == "acme: usage"


def test_the_dashboard_shows_the_traffic_as_the_api_counts_it(page):
    for _ in range(3):
        assert gateway(KEY, user="alice", tool="chat") == 200
    assert gateway(KEY, model="gemini-2.5-pro", user="bob") == 200
    usage = {}

    def recorded():
        usage.update(api("/api/v1/orgs/acme/usage?range=this_month"))
        return usage["totals"]["requests"] >= 4

    wait_for("the gateway's events are written", recorded, within=10)
    login(page, ROOT)
    page.goto(f"{ADMIN}/orgs/acme/dashboard?range=this_month")
    t = usage["totals"]
    assert numbers(page.locator("#card-requests").inner_text()) == str(t["requests"])
    assert numbers(page.locator("#card-tokens").inner_text()) == str(t["total_tokens"])
    cost = page.locator("#card-cost").inner_text()
    assert cost.startswith("$")
    io_card = page.locator("#card-io").inner_text().split("/")
    assert numbers(io_card[0]) == str(t["input_tokens"])
    assert numbers(io_card[1]) == str(t["output_tokens"] + t["thinking_tokens"])
    for table, key in (("model", "by_model"), ("user", "by_user"), ("tool", "by_tool"), ("provider", "by_provider")):
        rows = page.locator(f"#table-{table} tbody tr").all()
        assert len(rows) == len(usage[key]), table
        for row, want in zip(rows, usage[key]):
            name = row.locator("th").inner_text()
            cells = row.locator("td").all_inner_texts()
            assert name == (want["key"] or "(none)")
            assert numbers(cells[0]) == str(want["requests"])
            assert numbers(cells[1]) == str(want["total_tokens"])
    assert page.locator("svg.chart rect.day").count() >= 1
    events = page.locator("#table-events tbody tr").count()
    page_of_events = api("/api/v1/orgs/acme/events")
    assert events == len(page_of_events["events"])
    assert f"kept {page_of_events['kept_days']} days" in page.locator("#kept-days").inner_text()
    axe_check(page)
    shot(page, "dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "dashboard-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, "no sideways scrolling of the page"


def test_ranges_switch_and_the_csv_equals_the_table(page):
    login(page, ROOT)
    page.goto(f"{ADMIN}/orgs/acme/dashboard")
    page.get_by_label("Last 7 days").check()
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**range=last_7_days**")
    assert page.get_by_label("Last 7 days").is_checked()
    with page.expect_download() as dl:
        page.locator('a[href*="/export/model.csv"]').click()
    text = open(dl.value.path()).read()
    rows = list(csv.DictReader(io.StringIO(text)))
    table = page.locator("#table-model tbody tr").all()
    assert len(rows) == len(table) and rows
    for r, tr in zip(rows, table):
        assert r["model"] == tr.locator("th").inner_text()
        cells = tr.locator("td").all_inner_texts()
        assert r["requests"] == numbers(cells[0])
        assert r["total_tokens"] == numbers(cells[1])


def test_a_limit_set_in_the_admin_area_refuses_the_next_request(page):
    login(page, ROOT)
    page.goto(f"{ADMIN}/orgs/acme/admin/limits")
    form = page.locator("#limit-daily_requests")
    form.get_by_label("Limit").fill("1")
    form.get_by_role("button", name="Save").click()
    page.wait_for_url("**notice=saved**")
    axe_check(page)
    shot(page, "admin-limits")
    wait_for("a request refused with 429 for the limit", lambda: gateway(KEY) == 429)
    page.locator("#limit-daily_requests").get_by_role("button", name="Remove").click()
    page.wait_for_url("**notice=removed**")
    wait_for("the limit is gone", lambda: gateway(KEY) == 200)
    # A bad value is explained beside the field.
    form = page.locator("#limit-monthly_cost")
    form.get_by_label("Limit").fill("-3")
    form.get_by_role("button", name="Save").click()
    err = page.locator("#err-monthly_cost")
    assert "0 or more" in err.inner_text()


def test_a_feature_switched_off_refuses_its_operation(page):
    login(page, ROOT)
    page.goto(f"{ADMIN}/orgs/acme/admin/features")
    page.get_by_label("pro_models").uncheck()
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url("**notice=saved**")
    assert not page.get_by_label("pro_models").is_checked()
    shot(page, "admin-features")
    wait_for("a pro model refused with 403", lambda: gateway(KEY, model="gemini-2.5-pro") == 403)
    page.get_by_role("button", name="Enable all").click()
    page.wait_for_url("**notice=saved**")
    wait_for("enabled again", lambda: gateway(KEY, model="gemini-2.5-pro") == 200)


def test_a_key_made_in_the_console_works_until_revoked(page):
    login(page, ROOT)
    page.goto(f"{ADMIN}/orgs/acme/admin/keys")
    page.get_by_label("Name").fill("from-the-console")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text()
    assert secret.startswith("tg_")
    assert secret in page.locator("#sdk-snippet").inner_text()
    shot(page, "admin-keys")
    wait_for("the new key works", lambda: gateway(secret) == 200)
    page.goto(f"{ADMIN}/orgs/acme/admin/keys")
    assert secret not in page.content(), "the secret is shown once"
    page.on("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Revoke key from-the-console").click()
    page.wait_for_url("**notice=revoked**")
    wait_for("the revoked key is refused with 401", lambda: gateway(secret) == 401)


def test_the_other_tabs_render(page):
    login(page, ROOT)
    for tab in ("orgs", "users", "audit"):
        page.goto(f"{ADMIN}/orgs/acme/admin/{tab}")
        assert page.get_by_role("heading", level=1).inner_text() == "acme: admin"
        axe_check(page)
        shot(page, f"admin-{tab}")
    page.goto(f"{ADMIN}/account")
    page.get_by_label("Name").fill("script")
    page.get_by_role("button", name="Create token").click()
    assert page.locator("#new-token").inner_text().startswith("tgp_")
    axe_check(page)
    shot(page, "account")


def test_a_member_sees_no_admin_controls_and_is_refused_when_posting(page):
    login(page, MEMBER)
    page.wait_for_url("**/orgs/acme/dashboard")
    for tab in ("limits", "features", "keys"):
        page.goto(f"{ADMIN}/orgs/acme/admin/{tab}")
        assert page.get_by_role("button", name="Save").count() == 0, tab
        assert page.get_by_role("button", name="Create key").count() == 0, tab
        assert page.get_by_role("button", name="Revoke").count() == 0, tab
    assert page.get_by_role("link", name="Users").count() == 0
    shot(page, "member-keys")
    csrf = page.locator('input[name="csrf_token"]').first.input_value()
    r = page.request.post(
        f"{ADMIN}/orgs/acme/admin/limits/save",
        form={"csrf_token": csrf, "limit_type": "daily_requests", "value": "0", "enabled": "on", "action": "save"},
    )
    assert r.status in (403, 404), r.status
    assert gateway(KEY) == 200, "nothing changed"
    r = page.request.post(f"{ADMIN}/orgs/acme/admin/keys/create", form={"csrf_token": csrf, "name": "x"})
    assert r.status in (403, 404)


def test_another_orgs_dashboard_is_not_found(page):
    login(page, OTHER)
    page.wait_for_url("**/orgs/globex/dashboard")
    r = page.goto(f"{ADMIN}/orgs/acme/dashboard")
    assert r.status == 404
    r = page.goto(f"{ADMIN}/orgs/1/dashboard")
    assert r.status == 404, "by id neither"
    shot(page, "other-org-404")


def test_without_javascript_one_can_log_in_and_save_a_limit(browser):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    login(page, ROOT)
    page.wait_for_url("**/orgs/acme/dashboard")
    page.goto(f"{ADMIN}/orgs/acme/admin/limits")
    form = page.locator("#limit-daily_ads")
    form.get_by_label("Limit").fill("7")
    form.get_by_role("button", name="Save").click()
    page.wait_for_url("**notice=saved**")
    limits = api("/api/v1/orgs/acme/limits")
    assert any(l["limit_type"] == "daily_ads" and l["raw_value"] == 7 for l in limits), limits
    shot(page, "no-js-limit-saved")
    context.close()
