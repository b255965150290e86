"""The trader's web app (web/) end to end: Debian's Chromium driven by Playwright against the real
stack — redis-server, gunicorn (gevent worker) and nginx over TLS serving the built app.

The wallet is the only thing the test provides: an EIP-1193 provider announced over EIP-6963 and
injected into the page, whose `personal_sign` is answered by a real private key (eth-account) in this
process. Nothing on the server is mocked. Screenshots land in `var/screenshots/` (one is in the README).

Taps go over the websocket (SPEC §8a). While the server under test does not answer `bet` messages
yet, the tap tests skip with that reason instead of failing; everything else runs.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from pathlib import Path

import pytest
import websocket
from eth_account import Account
from eth_account.messages import encode_defunct

from app.config import Settings
from tests.support.servers import ROOT, Gunicorn, Nginx, RedisServer, free_port
from tests.support.traders import HttpClient
from tests.test_exchanges_fakes import fake_binance

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("TAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DIST = ROOT / "web" / "dist"
SHOTS = ROOT / "var" / "screenshots"

WALLET_JS = """
(() => {
  let chainId = "__CHAIN__";
  const provider = {
    async request({ method, params }) {
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return ["__ADDRESS__"];
        case "eth_chainId":
          return chainId;
        case "wallet_switchEthereumChain":
          window.__walletSwitches = (window.__walletSwitches || 0) + 1;
          chainId = params[0].chainId;
          return null;
        case "personal_sign":
          return await window.__walletSign(params[0], params[1]);
        default:
          throw Object.assign(new Error("unsupported " + method), { code: 4200 });
      }
    },
    on() {},
    removeListener() {},
  };
  const info = Object.freeze({
    uuid: "7f1d1a9e-0000-4000-8000-00000000e2e0",
    name: "Test Wallet",
    icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='24' height='24'/%3E",
    rdns: "org.tap-trading.test-wallet",
  });
  const announce = () =>
    window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
})();
"""


# ---- the stack ----------------------------------------------------------------------------------


class Stack:
    def __init__(self, tmp: Path, redis_url: str, extra: dict[str, str] | None = None) -> None:
        https_port = free_port()
        self.env = {
            "TAP_DATA_DIR": str(tmp / "data"),
            "TAP_REDIS_URL": redis_url,
            "TAP_DEV_MODE": "1",
            "TAP_SIWE_DOMAIN": f"localhost:{https_port}",
            "TAP_COLUMN_SECONDS": "2",
            "TAP_RATE_PER_ADDRESS": "0",
            "TAP_HTTP_PORT": str(free_port()),
            "TAP_HTTPS_PORT": str(https_port),
            **(extra or {}),
        }
        self.gunicorn = Gunicorn(self.env, tmp / "gunicorn.log")
        self.nginx: Nginx | None = None
        self.https_port = https_port

    def start(self) -> Stack:
        self.gunicorn.start()
        settings = Settings.from_env({**self.env, "TAP_BIND": f"127.0.0.1:{self.gunicorn.port}"})
        self.nginx = Nginx(settings)
        assert (self.nginx.prefix / "html" / "assets").is_dir(), "nginx/render.py did not copy web/dist"
        self.nginx.start()
        return self

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        self.gunicorn.stop()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def api(self, token: str | None = None) -> HttpClient:
        return HttpClient(self.gunicorn.url)

    def call(self, token: str, method: str, path: str, body=None):
        return HttpClient(self.gunicorn.url)._do(method, path, body, {"Authorization": f"Bearer {token}"})


def _require_dist() -> None:
    if not (DIST / "index.html").exists():
        pytest.fail(
            "web/dist is missing: build the app first (cd web && npm ci && npm run build; make test does it)"
        )


@pytest.fixture(scope="module")
def stack(module_redis_url, tmp_path_factory):
    _require_dist()
    s = Stack(tmp_path_factory.mktemp("web"), module_redis_url).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Wallet:
    """A real key behind the injected provider."""

    def __init__(self) -> None:
        self.account = Account.create()
        self.signed: list[str] = []

    def sign(self, hex_message: str, address: str) -> str:
        assert address.lower() == self.account.address.lower()
        text = bytes.fromhex(hex_message[2:]).decode()
        self.signed.append(text)
        sig = self.account.sign_message(encode_defunct(text=text)).signature
        return "0x" + bytes(sig).hex()


def open_page(
    browser,
    stack: Stack,
    wallet: Wallet | None,
    *,
    phone: bool = False,
    chain: int = 5,
    path: str = "/",
    install_clock: bool = False,
):
    opts = {"ignore_https_errors": True}
    if phone:
        opts.update(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2
        )
    else:
        opts.update(viewport={"width": 1280, "height": 860})
    ctx = browser.new_context(**opts)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # nginx's Content-Security-Policy: anything it blocks (a script, a style, the socket) is a failure.
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.errors = errors  # type: ignore[attr-defined]
    if wallet is not None:
        page.expose_function("__walletSign", wallet.sign)
        page.add_init_script(
            WALLET_JS.replace("__ADDRESS__", wallet.account.address).replace("__CHAIN__", hex(chain))
        )
    if install_clock:
        page.clock.install()  # time flows as usual until a test moves it on (page.clock.fast_forward)
    page.goto(stack.url + path)
    return page


def sign_in(page, *, keyboard: bool = False) -> str:
    button = page.get_by_role("button", name="Sign in with Test Wallet")
    if keyboard:
        button.focus()
        page.keyboard.press("Enter")
    else:
        button.click()
    expect(page.get_by_test_id("balance")).to_be_visible()
    token = page.evaluate("JSON.parse(sessionStorage.getItem('tap-trading.session')).token")
    assert isinstance(token, str) and len(token) == 43
    return token


def view_button(page, name: str):
    """The header's Trade / Account switch (other buttons may name the Account too)."""
    return page.get_by_role("navigation", name="Views").get_by_role("button", name=name, exact=True)


def deposit(page, amount: str) -> None:
    view_button(page, "Account").click()
    page.get_by_label("Deposit").first.fill(amount)
    page.locator("form.money-form").first.get_by_role("button", name="Deposit", exact=True).click()
    expect(page.get_by_test_id("deposits-msg")).to_contain_text("Done")
    view_button(page, "Trade").click()


PICK_CELL_JS = """(col) => {
  const cells = [...document.querySelectorAll(`.cell[data-col="${col}"][data-state="open"]`)];
  if (cells.length === 0) return null;
  const rows = cells.map((c) => Number(c.dataset.row));
  const center = (Math.max(...rows) + Math.min(...rows)) / 2;
  const far = cells.filter((c) => / multiplier 100$/.test(c.getAttribute("aria-label")) &&
                                  Math.abs(Number(c.dataset.row) - center) <= 7);
  far.sort((a, b) => Math.abs(Number(b.dataset.row) - center) - Math.abs(Number(a.dataset.row) - center));
  return (far[0] || cells[Math.max(0, (cells.length >> 1) - 2)]).dataset.cell;
}"""


def placeable_cell(page, column: int = 5):
    """A quoted cell `column` columns after the current one, as a locator by its cell id.

    Preferably one quoted at the 100 cap, up to 7 bands from the price: its quote stays put. Near
    cells' quotes can move by tens of per cent within the second between two grid messages (the book
    is rebuilt every tick), more than the app's default 10 % slippage, and such a tap is refused
    (`multiplier_below_minimum`), which is right but not what these tests are about."""
    expect(page.locator(f'.cell[data-col="{column}"][data-state="open"]').first).to_be_attached()
    cell_id = page.evaluate(PICK_CELL_JS, column)
    assert cell_id, "no open cell"
    return page.locator(f'.cell[data-cell="{cell_id}"]')


def accept_any_multiplier(page) -> None:
    """Set the app's slippage to "any" (the 1.01 floor), for tests whose tap must go through.

    The simulated price walks freely, and within the second between two grid messages a quote can
    fall below the shown one by more than the default 10 %: such a tap is refused
    (`multiplier_below_minimum`), which is right but is not what those tests are about."""
    choice = page.get_by_role("radiogroup", name=re.compile("^Accept a multiplier lower")).get_by_role(
        "radio", name="any"
    )
    choice.click()
    expect(choice).to_have_attribute("aria-checked", "true")


def assert_answers_taps(stack: Stack) -> None:
    """The server answers `bet` messages on /ws (SPEC §8a): a signed-out socket's tap gets a 401.
    A check, not a skip: the tap tests must never pass by not running."""
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{stack.https_port}/ws", timeout=10, sslopt={"cert_reqs": ssl.CERT_NONE}
    )
    try:
        ws.send(json.dumps({"type": "bet", "req": "probe", "cell": "0:0", "stake": "1"}))
        deadline = time.monotonic() + 10  # past status and price messages, which keep coming
        while time.monotonic() < deadline:
            if json.loads(ws.recv()).get("type") in ("bet:error", "error"):
                return
        pytest.fail("the server did not answer a tap on /ws within 10 s (SPEC §8a)")
    finally:
        ws.close()


@pytest.fixture(scope="module")
def ws_bets(stack) -> None:
    assert_answers_taps(stack)


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path))
    return path


# ---- tests --------------------------------------------------------------------------------------


def test_sign_in_switches_chain_binds_a_session_key_and_survives_a_reload(browser, stack):
    wallet = Wallet()
    page = open_page(browser, stack, wallet, chain=5)
    token = sign_in(page, keyboard=True)
    # The sign-in button is gone: the keyboard goes on from the grid (its one tab stop), not from <body>.
    focused = page.locator(".cell:focus")
    expect(focused).to_have_count(1)
    expect(focused).to_have_attribute("tabindex", "0")
    # One wallet signature, for the EIP-4361 message, which binds the browser's session key.
    assert len(wallet.signed) == 1
    msg = wallet.signed[0]
    assert msg.startswith(f"localhost:{stack.https_port} wants you to sign in with your Ethereum account:\n")
    assert "\nChain ID: 1\n" in msg
    assert page.evaluate("window.__walletSwitches") == 1  # the wallet was on chain 5: asked to switch
    status, session, _ = stack.call(token, "GET", "/api/v1/auth/session")
    assert status == 200
    assert msg.endswith(f"- urn:tap-trading:session-key:{session['session_key']}")
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "0")

    page.reload()
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "0")
    assert len(wallet.signed) == 1  # no second popup after a reload

    # The session ends on the server (logged out elsewhere) while the trader is on the Account: the
    # socket is closed with 4401 → sign in; signing in again returns to the Account, focus on its button.
    view_button(page, "Account").click()
    assert stack.call(token, "POST", "/api/v1/auth/logout")[0] == 200
    expect(page.get_by_role("alert").filter(has_text="Sign in again")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in with Test Wallet")).to_be_visible()
    sign_in(page, keyboard=True)
    expect(view_button(page, "Account")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("region", name="Account")).to_be_visible()
    expect(view_button(page, "Account")).to_be_focused()
    assert page.errors == []
    page.context.close()


def test_no_wallet_says_how_to_get_one(browser, stack):
    page = open_page(browser, stack, None)
    expect(page.get_by_text("No Ethereum wallet found in this browser.")).to_be_visible()
    expect(page.get_by_text("Install a wallet extension")).to_be_visible()
    page.context.close()


def test_deposit_withdraw_ledger_and_grid_accessibility(browser, stack):
    wallet = Wallet()
    page = open_page(browser, stack, wallet)
    token = sign_in(page)
    deposit(page, "100")
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "100")
    view_button(page, "Account").click()
    page.get_by_role("tab", name="Ledger").click()
    expect(page.locator("table.ledger tbody tr")).to_have_count(1)
    page.get_by_label("Withdraw").first.fill("30.5")
    page.locator("form.money-form").nth(1).get_by_role("button", name="Withdraw").click()
    expect(page.get_by_test_id("withdrawals-msg")).to_contain_text("Done")
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "69.5")
    assert stack.call(token, "GET", "/api/v1/me")[1]["balance"] == "69.5"
    # The ledger on screen follows the balance change: no press of Refresh.
    expect(page.locator("table.ledger tbody tr")).to_have_count(2)
    expect(page.locator("table.ledger tbody tr").first).to_contain_text("withdrawal")
    view_button(page, "Trade").click()

    # 12 columns × 21 bands, every cell named by window, band and multiplier (or locked)
    expect(page.locator(".cell")).to_have_count(12 * 21)
    cell = placeable_cell(page)
    label = cell.get_attribute("aria-label")
    assert re.match(
        r"\d\d:\d\d:\d\d to \d\d:\d\d:\d\d UTC, band \d+\.\d\d–\d+\.\d\d, multiplier \d", label
    ), label
    locked = page.locator('.cell[data-col="0"]').first
    assert locked.get_attribute("aria-label").endswith("locked")
    # keyboard: arrows move the focus between cells, and the focus is visible
    t0, row0 = map(int, cell.get_attribute("data-cell").split(":"))
    cell.focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.cell") == f"{t0 + 2}:{row0}"  # 2 s columns
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.dataset.cell") == f"{t0 + 2}:{row0 + 1}"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    shot(page, "grid-desktop.png")
    assert page.errors == []
    page.context.close()


def test_a_long_ledger_keeps_its_length_when_it_follows_a_balance_change(browser, stack):
    """A trader who paged back past 200 rows (the API's largest page) keeps as many when an event
    re-reads the list: it is read again in pages of 200, not cut back to the newest 200."""
    page = open_page(browser, stack, Wallet())
    token = sign_in(page)
    view_button(page, "Account").click()
    page.get_by_role("tab", name="Ledger").click()
    expect(page.get_by_text("No ledger entries yet")).to_be_visible()  # not just an empty table
    for _ in range(225):
        assert stack.call(token, "POST", "/api/v1/deposits", {"amount": "1"})[0] == 200
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "225")
    expect(page.get_by_text("No ledger entries yet")).to_have_count(0)
    rows = page.locator("table.ledger tbody tr")
    older = page.get_by_role("button", name="Older entries")
    for shown in range(20, 225, 20):
        expect(rows).to_have_count(shown)
        older.click()
    expect(rows).to_have_count(225)
    expect(older).to_have_count(0)
    # A deposit elsewhere: its balance event re-reads the newest 225 rows (as many as were shown): the
    # new one on top, the oldest back behind "Older entries".
    assert stack.call(token, "POST", "/api/v1/deposits", {"amount": "2"})[0] == 200
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "227")
    expect(rows.first.locator("td").nth(2)).to_have_text("2.00")
    expect(rows).to_have_count(225)
    expect(older).to_be_visible()
    expect(page.get_by_test_id("list-trimmed")).to_have_count(0)
    assert page.errors == []
    page.context.close()


def test_stale_feed_disables_betting_with_a_banner(browser, tmp_path):
    _require_dist()
    # A Redis of its own: prices travel over Redis pub/sub, and the module's stack publishes its own.
    (tmp_path / "redis").mkdir()
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    with fake_binance() as exchange:
        s = Stack(
            tmp_path,
            own_redis.url,
            {
                "TAP_PRICE_SOURCES": "binance",
                "TAP_BINANCE_WS_URL": exchange.url,
                "TAP_FEED_DEGRADED_S": "0.5",
                "TAP_FEED_CRITICAL_S": "1",
                "TAP_FEED_RECOVERY_S": "2",
                "TAP_FEED_SOURCE_FRESH_S": "1",
                "TAP_FEED_IDLE_S": "0.8",
            },
        ).start()
        try:
            page = open_page(browser, s, Wallet())
            sign_in(page)
            expect(page.get_by_test_id("conn")).to_have_attribute("data-conn", "open")
            expect(page.get_by_test_id("status-banner")).to_have_count(0)
            exchange.pause()
            banner = page.get_by_test_id("status-banner")
            expect(banner).to_contain_text("Betting suspended", timeout=10_000)
            # A tap now is refused in the page, with the reason, and nothing is sent.
            page.locator(".cell").nth(5 * 21 + 10).dispatch_event("click")
            expect(page.get_by_test_id("notice")).to_contain_text("suspended")
            expect(page.locator("ol.taps li")).to_have_count(0)
            exchange.resume()
            expect(banner).to_have_count(0, timeout=15_000)
            page.context.close()
        finally:
            s.stop()
            own_redis.stop()


def test_a_notice_never_moves_the_grid_under_the_finger(browser, stack):
    """A notice (a refused tap's reason) or a banner (connection, feed) shows over the page, never
    above the grid in the flow: the grid pushed down by a row's height between two taps would put the
    second one on another band than the one the trader aimed at."""
    page = open_page(browser, stack, Wallet())
    sign_in(page)
    expect(page.locator(".cell")).to_have_count(12 * 21)
    before = page.locator(".grid-wrap").bounding_box()
    page.locator('.cell[data-col="0"]').first.dispatch_event("click")  # locked: refused with a notice
    expect(page.get_by_test_id("notice")).to_contain_text("locked")
    assert page.locator(".grid-wrap").bounding_box() == before
    page.context.close()


def test_a_notice_stays_while_its_button_has_the_focus(browser, stack):
    """A notice goes after a few seconds, but not from under a keyboard user on its button (the way
    to the deposit): the focus would drop to <body>. It goes once the focus has left it."""
    page = open_page(browser, stack, Wallet(), install_clock=True)
    sign_in(page)
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "0")
    placeable_cell(page).dispatch_event("click")
    button = page.get_by_test_id("notice").get_by_role("button", name="Go to Account")
    button.focus()
    page.clock.fast_forward("00:08")
    expect(button).to_be_focused()
    page.get_by_role("button", name="Sign out").focus()
    page.clock.fast_forward("00:08")
    expect(page.get_by_test_id("notice")).to_have_count(0)
    page.context.close()


def test_phone_layout(browser, stack):
    page = open_page(browser, stack, Wallet(), phone=True)
    sign_in(page)
    wrap = page.locator(".grid-wrap").bounding_box()
    assert wrap["width"] <= 390
    cell = placeable_cell(page).bounding_box()
    assert cell["width"] >= 20 and cell["height"] >= 20  # still a touch target with 12 × 21 cells
    expect(page.get_by_test_id("balance")).to_be_visible()
    shot(page, "grid-phone.png")
    page.context.close()


@pytest.mark.parametrize("layout", ["desktop", "phone"])
def test_frame_budget_12x21_cells_4_ticks_per_second(browser, stack, layout):
    """The canvas frame (draw of 252 cells, bets, price line) against a 16 ms budget; BENCHMARKS.md.

    The sim feed ticks every 250 ms (4 ticks/s), the grid message comes every second; 300 frames
    (~5 s at 60 Hz) are timed in the page with performance.now() (web/src/perf.ts)."""
    page = open_page(browser, stack, Wallet(), phone=layout == "phone")
    sign_in(page)
    expect(page.locator(".cell")).to_have_count(12 * 21)
    page.evaluate("window.__tapPerf.reset()")
    # Polled from here: wait_for_function evaluates its predicate with eval, which the page's CSP
    # (nginx: script-src 'self', no 'unsafe-eval') refuses; page.evaluate is not subject to it.
    deadline = time.monotonic() + 30
    while page.evaluate("window.__tapPerf.draw.length") < 300:
        assert time.monotonic() < deadline, "fewer than 300 frames drawn in 30 s"
        page.wait_for_timeout(100)
    res = page.evaluate(
        """() => {
          const q = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
          const d = window.__tapPerf.draw, g = window.__tapPerf.gaps;
          return { n: d.length, draw_p50: q(d, .5), draw_p95: q(d, .95), draw_p99: q(d, .99), draw_max: Math.max(...d),
                   gap_p50: q(g, .5), gap_p95: q(g, .95), gap_p99: q(g, .99), over_budget: g.filter(x => x > 16.7 * 1.5).length };
        }"""
    )
    print(f"frame figures ({layout}):", json.dumps(res))
    (ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / f"frame-budget-{layout}.json").write_text(json.dumps(res, indent=2))
    # The typical frame must fit the budget whatever else the machine runs. The p99 is a benchmark
    # figure (BENCHMARKS.md, taken on a quiet machine): under a loaded CI box a few frames are
    # preempted mid-draw, and a test must not pass or fail by that luck.
    assert res["n"] >= 300 and res["draw_p50"] < 16, res
    page.context.close()


# ---- taps over the websocket (SPEC §8a) ---------------------------------------------------------


def _settled(page, cell_id: str, timeout: int = 30_000):
    cell = page.locator(f'.cell[data-cell="{cell_id}"]')
    expect(page.locator(f'ol.taps li[data-cell="{cell_id}"]')).to_have_attribute(
        "data-state", re.compile("^(won|lost|void)$"), timeout=timeout
    )
    return cell


def test_tap_pending_confirmed_resolved_and_balance_follows(browser, stack, ws_bets):
    wallet = Wallet()
    page = open_page(browser, stack, wallet)
    token = sign_in(page)
    deposit(page, "50")
    accept_any_multiplier(page)
    cell = placeable_cell(page)
    cell_id = cell.get_attribute("data-cell")
    cell.focus()
    page.keyboard.press("Enter")  # a tap: no dialog, no wallet popup
    item = page.locator(f'ol.taps li[data-cell="{cell_id}"]')
    expect(item).to_have_attribute("data-state", re.compile("^(pending|confirmed|won|lost)$"))
    expect(item).to_have_attribute("data-bet-id", re.compile(r"\w+"))
    bet_id = item.get_attribute("data-bet-id")
    status, record, _ = stack.call(token, "GET", f"/api/v1/bets/{bet_id}")
    assert status == 200 and record["cell"] == cell_id and record["stake"] == "1"
    assert record["status"] in ("pending", "confirmed", "won", "lost")
    assert len(wallet.signed) == 1  # the tap was signed by the session key, not the wallet

    expect(item).to_have_attribute("data-state", re.compile("^(confirmed|won|lost)$"))
    shot(page, "grid-desktop-bet.png")

    # a second tap on the same cell is refused before it is sent
    page.locator(f'.cell[data-cell="{cell_id}"]').dispatch_event("click")
    expect(page.get_by_test_id("notice")).to_contain_text("already have a bet")

    # The history, opened while the bet is open (its window starts ~10 s after the tap), follows it to
    # its settlement without a press of Refresh.
    view_button(page, "Account").click()
    status_cell = page.locator(f'table.history tr[data-bet-id="{bet_id}"] td').nth(3)
    expect(status_cell).to_have_text("confirmed")
    expect(status_cell).to_have_text(re.compile("^(won|lost|void)$"), timeout=30_000)
    view_button(page, "Trade").click()

    _settled(page, cell_id)
    history = item.get_attribute("data-history")
    assert history.startswith("sending,pending,confirmed,"), history
    state = item.get_attribute("data-state")
    status, record, _ = stack.call(token, "GET", f"/api/v1/bets/{bet_id}")
    assert record["status"] == state
    me = stack.call(token, "GET", "/api/v1/me")[1]
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", me["balance"])
    if state == "won":
        expect(item).to_contain_text(f"+{record['payout']}")

    # History: the settled bet is listed, and the status filter keeps it or leaves it out.
    view_button(page, "Account").click()
    row = page.locator(f'table.history tr[data-bet-id="{bet_id}"]')
    expect(row).to_contain_text(state)
    page.get_by_label("Status").select_option(state)
    expect(row).to_be_visible()
    page.get_by_label("Status").select_option("confirmed")
    expect(row).to_have_count(0)
    page.context.close()


def test_socket_dropped_while_pending_shows_unknown_then_the_truth(browser, stack, ws_bets):
    wallet = Wallet()
    page = open_page(browser, stack, wallet)
    token = sign_in(page)
    deposit(page, "20")
    dropped = {"done": False}

    def route(ws):
        server = ws.connect_to_server()
        closed = {"now": False}

        def from_page(message):
            if closed["now"]:
                return
            server.send(message)
            if not dropped["done"] and '"type":"bet"' in str(message):
                # The bet reached the server; the connection dies before any answer comes back.
                dropped["done"] = closed["now"] = True
                ws.close(code=4000, reason="network drop")
                server.close()

        def from_server(message):
            if not closed["now"]:
                ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket(re.compile(r".*/ws$"), route)
    page.reload()
    expect(page.get_by_test_id("conn")).to_have_attribute("data-conn", "open")
    accept_any_multiplier(page)
    cell = placeable_cell(page)
    cell_id = cell.get_attribute("data-cell")
    cell.focus()
    page.keyboard.press("Enter")
    item = page.locator(f'ol.taps li[data-cell="{cell_id}"]')
    expect(item).to_have_attribute("data-state", "unknown")
    expect(page.get_by_test_id("status-banner")).to_contain_text("reconnecting")
    # The header's price and balance are from before the drop: marked, with their age, in words.
    expect(page.get_by_test_id("price")).to_have_attribute("data-stale", "true")
    expect(page.get_by_test_id("price")).to_contain_text(re.compile(r"last price \d+ s ago"))
    expect(page.get_by_test_id("balance")).to_have_attribute("data-stale", "true")
    expect(page.get_by_test_id("figures-status")).to_contain_text("not live")
    # Reconnected: the app asks the server and shows the truth.
    expect(page.get_by_test_id("conn")).to_have_attribute("data-conn", "open", timeout=10_000)
    expect(page.get_by_test_id("price")).to_have_attribute("data-stale", "false")
    expect(page.get_by_test_id("balance")).to_have_attribute("data-stale", "false")
    expect(item).to_have_attribute("data-state", re.compile("^(confirmed|won|lost)$"))
    bet_id = item.get_attribute("data-bet-id")
    status, record, _ = stack.call(token, "GET", f"/api/v1/bets/{bet_id}")
    assert status == 200 and record["cell"] == cell_id
    history = item.get_attribute("data-history").split(",")
    assert history[:2] == ["sending", "unknown"], history
    # exactly one bet on that cell: the re-sent request (same nonce) did not place a second one
    _, bets, _ = stack.call(token, "GET", "/api/v1/bets?limit=50")
    assert [b["cell"] for b in bets["bets"]].count(cell_id) == 1
    page.context.close()


def test_refused_tap_shows_the_reason(browser, stack, ws_bets):
    page = open_page(browser, stack, Wallet())
    sign_in(page)
    expect(page.get_by_test_id("balance")).to_have_attribute("data-balance", "0")
    accept_any_multiplier(page)  # so that the quote moving is not the reason
    # A balance known not to cover the stake: the tap is refused in the page, nothing is sent, and
    # the notice and the line under the grid lead to the deposit.
    placeable_cell(page).dispatch_event("click")
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("does not cover the stake")
    expect(page.get_by_test_id("low-balance")).to_be_visible()
    expect(page.locator("ol.taps li")).to_have_count(0)
    notice.get_by_role("button", name="Go to Account").click()
    expect(view_button(page, "Account")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_label("Deposit").first).to_be_focused()
    deposit(page, "1")
    expect(page.get_by_test_id("low-balance")).to_have_count(0)

    # The server stays the authority: with one stake's worth, two taps at once both go out (the page
    # deducts nothing before a confirmation), and the batch refuses the second for insufficient funds.
    first = placeable_cell(page, 5).get_attribute("data-cell")
    second = placeable_cell(page, 6).get_attribute("data-cell")
    page.evaluate(
        '(cells) => cells.forEach((c) => document.querySelector(`.cell[data-cell="${c}"]`).click())',
        [first, second],
    )
    items = page.locator("ol.taps li")
    expect(items).to_have_count(2)
    refused = page.locator('ol.taps li[data-state="rejected"]')
    expect(refused).to_have_count(1, timeout=15_000)
    expect(refused).to_contain_text("insufficient_funds")
    cell_id = refused.get_attribute("data-cell")
    assert "insufficient_funds" in (
        page.locator(f'.cell[data-cell="{cell_id}"]').get_attribute("aria-label") or ""
    )
    page.context.close()


def test_phone_tap(browser, stack, ws_bets):
    page = open_page(browser, stack, Wallet(), phone=True)
    sign_in(page)
    deposit(page, "10")
    accept_any_multiplier(page)
    cell = placeable_cell(page)
    cell_id = cell.get_attribute("data-cell")
    cell.tap(force=True)  # the grid slides with time; a touch does not wait for it to stand still
    expect(page.locator(f'ol.taps li[data-cell="{cell_id}"]')).to_have_attribute(
        "data-state", re.compile("^(pending|confirmed|won|lost)$")
    )
    shot(page, "grid-phone-bet.png")
    page.context.close()
