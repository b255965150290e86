"""The operator console (web/ at /admin, SPEC §8c) end to end, with the harness of the trader's app
(tests/test_web_e2e.py): Debian's Chromium driven by Playwright against redis-server, gunicorn and
nginx over TLS serving the built app, wallets injected over EIP-6963 and signing with real keys.

An operator (its wallet in TAP_ADMIN_ADDRESSES) signs in at /admin with the keyboard, which goes on
from the console's first control, and sees the feed healthy; halts
betting with a reason (confirmed first); a trader's page shows the reason and refuses the tap with
it; the operator reopens and the trader's tap goes through; the bet's exposure appears in the heat
map and the taps panel; an integrity-check runs from the console; polls that the server never answers
are flagged as old figures and polling resumes. In the trader app, the operator's header links to the
console and a trader's does not. A trader at /admin gets a plain "not allowed" page. The console's
screenshot is written to var/screenshots/console.png (README).
"""

from __future__ import annotations

import re

import pytest

from tests.test_web_e2e import (
    SHOTS,
    Stack,
    Wallet,
    _require_dist,
    accept_any_multiplier,
    assert_answers_taps,
    browser,  # noqa: F401 - the fixture
    deposit,
    expect,
    open_page,
    placeable_cell,
    shot,
    sign_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ADMIN = Wallet()


@pytest.fixture(scope="module")
def stack(module_redis_url, tmp_path_factory):
    _require_dist()
    s = Stack(
        tmp_path_factory.mktemp("console"),
        module_redis_url,  # flushed: an earlier module's price history would read as a feed stall
        {"TAP_ADMIN_ADDRESSES": ADMIN.account.address, "TAP_RATE_PER_IP": "0"},
    ).start()
    yield s
    s.stop()


def test_operator_halts_and_reopens_and_sees_the_exposure(browser, stack):  # noqa: F811
    assert_answers_taps(stack)
    admin = open_page(browser, stack, ADMIN, path="/admin")
    sign_in(admin, keyboard=True)
    expect(admin.get_by_role("heading", name="Operator console")).to_be_visible()
    # The sign-in button is gone: the keyboard goes on from the console's first control, not from <body>.
    expect(admin.get_by_label("Reason (traders see it)")).to_be_focused()
    expect(admin.get_by_test_id("feed-state")).to_have_attribute("data-state", "healthy")
    expect(admin.locator('[data-testid="sources"] tr[data-source="sim"]')).to_have_attribute(
        "data-fresh", "true"
    )
    expect(admin.get_by_test_id("betting-state")).to_have_attribute("data-open", "true")

    trader = open_page(browser, stack, Wallet())
    sign_in(trader)
    expect(trader.get_by_test_id("balance")).not_to_have_attribute("data-balance", "")  # /me answered
    expect(trader.get_by_test_id("console-link")).to_have_count(0)  # a trader is not offered the console
    deposit(trader, "50")
    accept_any_multiplier(trader)
    expect(trader.get_by_test_id("conn")).to_have_attribute("data-conn", "open")

    # Halt: a reason is required, and the operator confirms before it takes effect.
    halt = admin.get_by_role("button", name="Halt betting")
    expect(halt).to_be_disabled()
    admin.get_by_label("Reason (traders see it)").fill("e2e maintenance")
    halt.click()
    confirm = admin.get_by_role("alertdialog")
    expect(confirm).to_contain_text("e2e maintenance")
    expect(admin.get_by_test_id("betting-state")).to_have_attribute("data-open", "true")  # not yet
    confirm.get_by_role("button", name="Yes, halt betting").click()
    expect(admin.get_by_test_id("betting-state")).to_have_attribute("data-open", "false")
    expect(admin.get_by_test_id("betting-state")).to_contain_text("HALTED — e2e maintenance")
    expect(admin.locator("table.actions tbody tr").first).to_contain_text("halt")

    # The trader is told over the websocket, and a tap is refused with the operator's reason.
    expect(trader.get_by_test_id("status-banner")).to_contain_text("Betting halted: e2e maintenance")
    cell = placeable_cell(trader)
    cell.dispatch_event("click")
    expect(trader.get_by_test_id("notice")).to_contain_text("e2e maintenance")
    expect(trader.locator("ol.taps li")).to_have_count(0)

    # Reopen: the banner goes, the tap goes through.
    admin.get_by_role("button", name="Reopen betting").click()
    expect(admin.get_by_test_id("betting-state")).to_have_attribute("data-open", "true")
    expect(trader.get_by_test_id("status-banner")).to_have_count(0)
    cell = placeable_cell(trader)
    cell_id = cell.get_attribute("data-cell")
    cell.dispatch_event("click")
    item = trader.locator(f'ol.taps li[data-cell="{cell_id}"]')
    expect(item).to_have_attribute("data-state", re.compile("^(pending|confirmed|won|lost)$"))

    # The console: the bet's exposure in the heat map and the largest cells, the tap counted.
    expect(admin.locator(f'[data-testid="heat-cell"][data-cell="{cell_id}"]')).to_have_attribute(
        "data-level", re.compile("^[1-5]$")
    )
    expect(admin.locator(f'[data-testid="largest-cells"] tr[data-cell="{cell_id}"]')).to_be_visible()
    expect(admin.locator('[data-testid="tap-totals"] tr[data-outcome="accepted"]')).to_be_visible()

    # Once the column is settled, the house panel has the bet (today and this week).
    expect(admin.locator('[data-testid="house"] tr[data-period="today"]')).to_have_attribute(
        "data-bets", "1", timeout=40_000
    )
    expect(admin.get_by_test_id("return-plot")).not_to_contain_text("today no bets")

    # An integrity-check from the console: the request returns at once, the result shows when done.
    admin.get_by_role("button", name="Run integrity-check").click()
    expect(admin.get_by_test_id("integrity")).to_have_attribute("data-state", "ok", timeout=30_000)
    expect(admin.get_by_test_id("integrity")).to_contain_text("OK")

    # One more bet, far ahead, so the screenshot has both a settled day and open exposure.
    cell = placeable_cell(trader, column=9)
    cell_id = cell.get_attribute("data-cell")
    cell.dispatch_event("click")
    item = trader.locator(f'ol.taps li[data-cell="{cell_id}"]')
    expect(item).to_have_attribute("data-state", re.compile("^(pending|confirmed)$"), timeout=15_000)
    # the console polls once a second; a loaded machine may take a few polls to show it
    heat = admin.locator(f'[data-testid="heat-cell"][data-cell="{cell_id}"]')
    expect(heat).to_be_visible(timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    admin.screenshot(path=str(SHOTS / "console.png"), full_page=True)

    # The server takes the console's polls and never answers: within seconds the operator is told how
    # old the figures are, each hung poll is given up after 5 s, and polling resumes by itself.
    console = admin.locator("main.console")
    expect(console).to_have_attribute("data-stale", "false")
    expect(admin.get_by_test_id("weeks-note")).to_have_attribute("data-level", "ok")  # listed, dated
    admin.route("**/api/v1/admin/overview*", lambda route: None)  # taken, never answered
    expect(console).to_have_attribute("data-stale", "true", timeout=10_000)
    expect(admin.get_by_test_id("stale")).to_contain_text(re.compile(r"^Data \d+ s old"))
    expect(admin.get_by_test_id("stale")).to_contain_text("server not answering", timeout=10_000)
    admin.unroute("**/api/v1/admin/overview*")
    expect(console).to_have_attribute("data-stale", "false", timeout=15_000)
    expect(admin.get_by_test_id("stale")).to_have_count(0)
    assert admin.errors == [] and trader.errors == []
    admin.context.close()
    trader.context.close()


def test_an_operator_in_the_trader_app_is_offered_the_console(browser, stack):  # noqa: F811
    page = open_page(browser, stack, ADMIN)
    sign_in(page)
    link = page.get_by_test_id("console-link")
    expect(link).to_have_attribute("href", "/admin")
    link.click()
    expect(page.get_by_role("heading", name="Operator console")).to_be_visible()
    expect(page.get_by_test_id("console-link")).to_have_count(0)  # not inside the console itself
    assert page.errors == []
    page.context.close()


def test_a_trader_at_admin_sees_not_allowed(browser, stack):  # noqa: F811
    page = open_page(browser, stack, Wallet(), path="/admin")
    sign_in(page, keyboard=True)
    forbidden = page.get_by_test_id("admin-forbidden")
    expect(forbidden.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(forbidden.get_by_role("link", name="Back to trading")).to_be_focused()
    expect(forbidden).to_contain_text("TAP_ADMIN_ADDRESSES")
    expect(page.get_by_role("heading", name="Operator console")).to_have_count(0)
    shot(page, "console-forbidden.png")
    page.context.close()
