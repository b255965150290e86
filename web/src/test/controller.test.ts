// The controller against a fake WebSocket and a fake fetch: what it sends and asks after a reconnect.
// Timers are fake (the socket's reconnect backoff, the controller's retries): nothing sleeps.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ACCOUNT_REFRESH_MS, Controller, REREAD_MAX_ROWS } from "../controller";
import { quoteAt, quotesStale } from "../store";
import type { BetRequest } from "../wire";

class FakeWS {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static all: FakeWS[] = [];
  readyState = FakeWS.CONNECTING;
  sent: Record<string, unknown>[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeWS.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000): void {
    if (this.readyState === FakeWS.CLOSED) return;
    this.readyState = FakeWS.CLOSED;
    this.onclose?.({ code });
  }
  // the server's side
  accept(): void {
    this.readyState = FakeWS.OPEN;
    this.onopen?.();
  }
  recv(m: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  lose(): void {
    this.close(1006);
  }
  ofType(type: string): Record<string, unknown>[] {
    return this.sent.filter((m) => m["type"] === type);
  }
}

/** GET answers by path (without the query); anything else is a 404. Every request is recorded. */
let routes: Record<string, unknown> = {};
let requests: string[] = [];
function fakeFetch(input: string): Promise<Response> {
  const path = new URL(input).pathname;
  requests.push(new URL(input).pathname + new URL(input).search);
  const body = routes[path];
  if (body === undefined)
    return Promise.resolve(new Response(JSON.stringify({ error: { code: "not_found", message: "no" } }), { status: 404 }));
  return Promise.resolve(new Response(JSON.stringify(body), { status: 200 }));
}

const ADDRESS = "0x1563915e194D8CfBA1943570603F7606A3115508";
const me = (balance: string) => ({ address: ADDRESS, balance, open_stakes: "0", open_bets: 0, is_admin: false });
const CELL = "100:5";
const body: BetRequest = { cell: CELL, stake: "10", min_multiplier: "2.375", nonce: "abcdefgh12345678", ts: 0, signature: "0x00" };
const betFields = { cell: CELL, stake: "10", multiplier: "2.5", payout: "25" };
const record = (status: string, extra: Record<string, unknown> = {}) => ({
  bet_id: "b1", status, ...betFields, potential_payout: "25", placed_at: 1, settled_at: null, ...extra,
});

async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}
function latest(): FakeWS {
  const ws = FakeWS.all[FakeWS.all.length - 1];
  if (!ws) throw new Error("no socket");
  return ws;
}
/** Open the newest socket and answer its auth. */
async function authenticate(): Promise<FakeWS> {
  const ws = latest();
  ws.accept();
  ws.recv({ type: "auth:ok", address: ADDRESS });
  await settle();
  return ws;
}
/** The network drops the socket; the backoff passes; the new socket is authenticated. */
async function reconnect(): Promise<FakeWS> {
  latest().lose();
  await vi.advanceTimersByTimeAsync(1_200); // the first backoff, 1 s + at most 20 % jitter
  return authenticate();
}

async function signedInWithTap(sentAgoMs = 0): Promise<{ ctl: Controller; ws: FakeWS }> {
  const ctl = new Controller("http://tap.test");
  ctl.store.dispatch({ type: "signedIn", session: { token: "t".repeat(43), address: ADDRESS, sessionKey: "0x01", expiresAt: 9e15 } });
  ctl.socket.start("t".repeat(43));
  const ws = await authenticate();
  ctl.store.dispatch({ type: "tapSent", tap: { req: "t-1", cell: CELL, stake: "10", multiplier: "2.5", body: { ...body, ts: Date.now() - sentAgoMs }, sentAt: Date.now() - sentAgoMs } });
  ws.send(JSON.stringify({ type: "bet", req: "t-1", ...body }));
  return { ctl, ws };
}

/** sessionStorage as the browser keeps it across a reload: the session and its key. */
function storedSession(expiresAt = 9e15): void {
  const items = new Map<string, string>([
    ["tap-trading.session", JSON.stringify({ token: "t".repeat(43), address: ADDRESS, sessionKey: "0x01", expiresAt, sessionKeyPrivate: `0x${"11".repeat(32)}` })],
  ]);
  vi.stubGlobal("sessionStorage", {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, v),
    removeItem: (k: string) => void items.delete(k),
  });
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  vi.setSystemTime(1_700_000_000_000);
  FakeWS.all = [];
  routes = { "/api/v1/me": me("100") };
  requests = [];
  vi.stubGlobal("WebSocket", FakeWS);
  vi.stubGlobal("fetch", fakeFetch);
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("resuming after a reconnect", () => {
  it("sends resume with the newest event id after re-authenticating, and applies the missed settlement", async () => {
    const { ctl, ws } = await signedInWithTap();
    ws.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    ws.recv({ id: "1700000000000-9", type: "bet:confirmed", bet_id: "b1", status: "confirmed", ...betFields });
    ws.recv({ id: "1700000000001-0", type: "balance", balance: "90" });
    expect(ws.ofType("resume")).toEqual([]); // the first authentication has nothing to resume

    requests = []; // the first authentication listed the open bets (a fresh tab may not know them all)
    const ws2 = await reconnect();
    expect(ws2.ofType("resume")).toEqual([{ type: "resume", after: "1700000000001-0" }]);
    ws2.recv({ id: "1700000000900-0", type: "bet:resolved", bet_id: "b1", status: "won", payout: "25" });
    ws2.recv({ type: "resumed", after: "1700000000001-0", last: "1700000000900-0", complete: true });
    await settle();
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "won", payout: "25" });
    expect(ctl.store.get().lastEventId).toBe("1700000000900-0");
    expect(requests.filter((r) => r.startsWith("/api/v1/bets"))).toEqual([]); // complete: nothing to re-read
  });

  it("on complete:false re-reads every bet that may still change, and /me", async () => {
    const { ctl, ws } = await signedInWithTap();
    ws.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    ws.recv({ id: "5-0", type: "bet:confirmed", bet_id: "b1", status: "confirmed", ...betFields });
    const ws2 = await reconnect();
    routes["/api/v1/bets/b1"] = record("lost", { payout: "0", settled_at: 2 });
    routes["/api/v1/me"] = me("90");
    requests = [];
    ws2.recv({ type: "resumed", after: "5-0", last: null, complete: false });
    await settle();
    expect(requests).toContain("/api/v1/bets/b1");
    expect(requests).toContain("/api/v1/me");
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "lost", payout: "0" });
    expect(ctl.store.get().balance).toBe("90");
  });

  it("with no event id known after a drop, a confirmed bet is re-read (it may have settled meanwhile)", async () => {
    const { ctl, ws } = await signedInWithTap();
    ws.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    ws.recv({ type: "bet:confirmed", bet_id: "b1", status: "confirmed", ...betFields }); // no id
    routes["/api/v1/bets/b1"] = record("won", { settled_at: 2 });
    const ws2 = await reconnect();
    expect(ws2.ofType("resume")).toEqual([]);
    expect(ctl.store.get().taps[CELL]!.state).toBe("won");
  });

  it("a refused resume falls back to re-reading", async () => {
    const { ctl, ws } = await signedInWithTap();
    ws.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    ws.recv({ id: "5-0", type: "bet:confirmed", bet_id: "b1", status: "confirmed", ...betFields });
    const ws2 = await reconnect();
    routes["/api/v1/bets/b1"] = record("won", { settled_at: 2 });
    ws2.recv({ type: "error", error: { code: "dependency_unavailable", message: "try again" } });
    await settle();
    expect(ctl.store.get().taps[CELL]!.state).toBe("won");
  });
});

describe("a re-sent tap whose answer says nothing about the first send", () => {
  const refuse = (ws: FakeWS, status: number, code: string, retry_after?: number) =>
    ws.recv({ type: "bet:error", req: "t-1", status, error: { code, message: code }, ...(retry_after ? { retry_after } : {}) });
  const page = (...bets: Record<string, unknown>[]) => ({ bets, next_cursor: null });

  it("429: stays unknown and is re-sent after retry_after while its ts is fresh", async () => {
    const { ctl } = await signedInWithTap();
    const ws2 = await reconnect(); // the drop came before any answer: the body is re-sent
    expect(ws2.ofType("bet")).toHaveLength(1);
    refuse(ws2, 429, "rate_limited", 2);
    expect(ctl.store.get().taps[CELL]!.state).toBe("unknown");
    await vi.advanceTimersByTimeAsync(1_999);
    expect(ws2.ofType("bet")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws2.ofType("bet")).toHaveLength(2);
    expect(ws2.ofType("bet")[1]).toEqual(ws2.ofType("bet")[0]); // the same signed body
    routes["/api/v1/bets/b1"] = record("confirmed");
    ws2.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    await settle();
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "confirmed", betId: "b1" });
  });

  it("ts_out_of_window: stays unknown, then the history shows the first send was placed", async () => {
    const { ctl } = await signedInWithTap();
    const ws2 = await reconnect();
    refuse(ws2, 401, "ts_out_of_window");
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "unknown" });
    expect(ctl.store.get().taps[CELL]!.reason).toMatch(/ts_out_of_window/);
    routes["/api/v1/bets"] = page(record("confirmed", { bet_id: "b7", cell: "105:1" }), record("confirmed", { bet_id: "b9" }));
    await vi.advanceTimersByTimeAsync(12_000); // until a bet accepted then would be committed or rejected
    expect(requests.some((r) => r.startsWith("/api/v1/bets?"))).toBe(true);
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "confirmed", betId: "b9" });
  });

  it("503 overloaded too late to re-send: not in the history → not placed", async () => {
    const { ctl } = await signedInWithTap(22_000);
    const ws2 = await reconnect();
    refuse(ws2, 503, "overloaded", 5); // 22 s + 1.2 s + 5 s is past the 25 s re-send window
    routes["/api/v1/bets"] = page();
    await vi.advanceTimersByTimeAsync(12_000);
    expect(ws2.ofType("bet")).toHaveLength(1);
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "unsent" }); // told "not sent", not "refused"
    expect(ctl.store.get().taps[CELL]!.reason).toMatch(/no bet was placed/i);
  });

  it("a tap too old to re-send after a drop is looked up in the history, not shown refused", async () => {
    const { ctl } = await signedInWithTap(30_000);
    routes["/api/v1/bets"] = page(record("won", { settled_at: 2 }));
    const ws2 = await reconnect();
    expect(ws2.ofType("bet")).toHaveLength(0);
    await settle();
    expect(ctl.store.get().taps[CELL]).toMatchObject({ state: "won", betId: "b1" });
    expect(ctl.store.get().taps[CELL]!.history).not.toContain("error");
  });
});

describe("GET /api/v1/me and the balance event", () => {
  it("a balance event that arrives while /me is in flight wins", async () => {
    const { ctl, ws } = await signedInWithTap();
    let answer: (r: Response) => void = () => undefined;
    vi.stubGlobal("fetch", (input: string) =>
      new URL(input).pathname === "/api/v1/me" ? new Promise<Response>((resolve) => (answer = resolve)) : fakeFetch(input),
    );
    const refreshed = ctl.refreshMe();
    ws.recv({ id: "7-0", type: "balance", balance: "90" });
    answer(new Response(JSON.stringify({ ...me("100"), is_admin: true }), { status: 200 }));
    await refreshed;
    expect(ctl.store.get()).toMatchObject({ balance: "90", isAdmin: true });
  });
});

describe("a reload or a new sign-in: the open bets this tab did not send", () => {
  const page = (...bets: Record<string, unknown>[]) => ({ bets, next_cursor: null });

  it("after a reload the open bets are listed, shown, and their settlement comes through", async () => {
    storedSession();
    routes["/api/v1/bets"] = page(record("confirmed", { bet_id: "b5", cell: "105:2" }));
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    const ws = await authenticate();
    expect(requests).toContain("/api/v1/bets?status=confirmed&limit=200");
    expect(ctl.store.get().taps["105:2"]).toMatchObject({ state: "confirmed", betId: "b5", payout: "25" });
    ws.recv({ id: "9-0", type: "bet:resolved", bet_id: "b5", status: "won", payout: "25" });
    expect(ctl.store.get().taps["105:2"]).toMatchObject({ state: "won", payout: "25" });
  });

  it("after a reload the balance is read over HTTP, even while the socket cannot get through", async () => {
    storedSession();
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    await settle(); // the socket is never accepted
    expect(ctl.store.get()).toMatchObject({ balance: "100", conn: { state: "connecting" } });
  });

  it("a kept session that has expired since: the trader is told so, not just shown the sign-in", async () => {
    storedSession(Date.now() - 1);
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    expect(ctl.store.get()).toMatchObject({ session: null, signedOutReason: "Your session has expired. Sign in again." });
    expect(sessionStorage.getItem("tap-trading.session")).toBeNull();
  });

  it("the view the trader was on outlives an ended session and a reload of the tab", async () => {
    storedSession();
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    const ws = await authenticate();
    ctl.setView("account");
    ws.close(4401); // the session ended (signed out elsewhere, or expired)
    expect(ctl.store.get()).toMatchObject({ session: null, view: "account" });
    ctl.store.dispatch({ type: "signedIn", session: { token: "u".repeat(43), address: ADDRESS, sessionKey: "0x01", expiresAt: 9e15 } });
    expect(ctl.store.get().view).toBe("account"); // signing in again returns to the Account
    const reloaded = new Controller("http://tap.test");
    await reloaded.start();
    expect(reloaded.store.get().view).toBe("account");
  });

  it("an owner event that arrives while the list is read: the listed bets are re-read", async () => {
    storedSession();
    let answer: (r: Response) => void = () => undefined;
    vi.stubGlobal("fetch", (input: string) =>
      new URL(input).pathname === "/api/v1/bets" ? new Promise<Response>((resolve) => (answer = resolve)) : fakeFetch(input),
    );
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    const ws = await authenticate();
    // b5 settles while the list is on its way: its event names a bet this tab does not know yet.
    ws.recv({ id: "9-0", type: "bet:resolved", bet_id: "b5", status: "lost", payout: "0" });
    routes["/api/v1/bets/b5"] = record("lost", { bet_id: "b5", cell: "105:2", payout: "0", settled_at: 2 });
    answer(new Response(JSON.stringify(page(record("confirmed", { bet_id: "b5", cell: "105:2" }))), { status: 200 }));
    await settle();
    expect(ctl.store.get().taps["105:2"]).toMatchObject({ state: "lost", payout: "0" });
  });
});

describe("a tap on quotes the grid no longer stands behind", () => {
  const settings = {
    column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
    stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
  };
  const NOW_S = 1_700_000_000; // a column boundary (5 s columns)
  /** Signed in, with the grid message of half a second ago: built in the previous column, it quotes
   *  1700000005 (then 2 columns ahead, now only 1) to 1700000060. */
  async function tradingWithGrid(): Promise<{ ctl: Controller; ws: FakeWS }> {
    storedSession();
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    const ws = await authenticate();
    ctl.store.dispatch({ type: "settings", settings, clockOffsetMs: 0 });
    const columns = Array.from({ length: 12 }, (_, i) => NOW_S + 5 + 5 * i);
    ws.recv({
      type: "grid", ts: NOW_S * 1000 - 500, price: "50.00", current_row: 5, column_seconds: 5, price_step: "10.00",
      columns, rows: [4, 5, 6], quotes: columns.map(() => ["3", "2", "3"]),
    });
    return { ctl, ws };
  }

  it("a column that locked since the last grid message is refused in the page, not sent", async () => {
    const { ctl, ws } = await tradingWithGrid();
    expect(await ctl.tap(`${NOW_S + 5}:5`)).toMatch(/locked/);
    expect(ws.ofType("bet")).toEqual([]);
    expect(await ctl.tap(`${NOW_S + 10}:5`)).toBeNull(); // the first placeable column goes out
    expect(ws.ofType("bet")).toHaveLength(1);
  });

  it("a balance known not to cover the stake: refused in the page with a way to Account, nothing sent", async () => {
    routes["/api/v1/me"] = me("0.5");
    const { ctl, ws } = await tradingWithGrid();
    await settle();
    expect(ctl.store.get().balance).toBe("0.5");
    expect(await ctl.tap(`${NOW_S + 20}:5`)).toMatch(/does not cover the stake.*Account/);
    expect(ctl.store.get().notice).toMatchObject({ action: "account" });
    expect(ws.ofType("bet")).toEqual([]);
    ws.recv({ type: "balance", balance: "1" }); // a deposit in another tab
    expect(await ctl.tap(`${NOW_S + 20}:5`)).toBeNull();
    expect(ws.ofType("bet")).toHaveLength(1);
  });

  it("quotes older than 3 s are out of date: the tap says so and sends nothing", async () => {
    const { ctl, ws } = await tradingWithGrid();
    await vi.advanceTimersByTimeAsync(2_600); // the grid message is 3.1 s old
    expect(await ctl.tap(`${NOW_S + 20}:5`)).toMatch(/out of date/);
    expect(ws.ofType("bet")).toEqual([]);
  });
});

describe("the Account view's history and ledger follow the trader's events", () => {
  it("are refreshed once per burst of bet or balance events, and never while nothing happens", async () => {
    const { ctl, ws } = await signedInWithTap();
    const bets = vi.fn();
    const ledger = vi.fn();
    const stopBets = ctl.watchAccount("bets", bets);
    const stopLedger = ctl.watchAccount("ledger", ledger);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(bets).not.toHaveBeenCalled(); // no poll loop
    expect(ledger).not.toHaveBeenCalled();

    ws.recv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", ...betFields });
    ws.recv({ id: "5-0", type: "bet:confirmed", bet_id: "b1", status: "confirmed", ...betFields });
    ws.recv({ id: "5-1", type: "balance", balance: "90" });
    routes["/api/v1/me"] = me("90"); // what a settlement's /me reads back
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS - 1);
    expect(bets).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(bets).toHaveBeenCalledTimes(1); // the confirmation and its balance: one refresh each list
    expect(ledger).toHaveBeenCalledTimes(1);

    // A settled bet: the history shows it without a press of Refresh; a loss moves no money.
    ws.recv({ id: "6-0", type: "bet:resolved", bet_id: "b1", status: "lost", payout: "0" });
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS);
    expect(bets).toHaveBeenCalledTimes(2);
    expect(ledger).toHaveBeenCalledTimes(1);

    stopBets();
    stopLedger();
    ws.recv({ id: "7-0", type: "balance", balance: "190" });
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS);
    expect(ledger).toHaveBeenCalledTimes(1);
  });

  it("a deposit, and a /me after a reconnect that finds a new balance, refresh the ledger", async () => {
    const { ctl } = await signedInWithTap();
    const ledger = vi.fn();
    ctl.watchAccount("ledger", ledger);
    routes["/api/v1/deposits"] = { balance: "150", amount: "50", ref_id: "d1", status: "committed" };
    vi.stubGlobal("fetch", (input: string, init?: RequestInit) =>
      init?.method === "POST" ? Promise.resolve(new Response(JSON.stringify(routes["/api/v1/deposits"]), { status: 200 })) : fakeFetch(input),
    );
    await ctl.move("deposits", "50", "k-1");
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS);
    expect(ledger).toHaveBeenCalledTimes(1);

    routes["/api/v1/me"] = me("140");
    await reconnect();
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS);
    expect(ledger).toHaveBeenCalledTimes(2);
    await reconnect(); // the same balance again: nothing to refresh
    await vi.advanceTimersByTimeAsync(ACCOUNT_REFRESH_MS);
    expect(ledger).toHaveBeenCalledTimes(2);
  });
});

describe("the browser's clock set after the page measured the server's", () => {
  const settings = {
    column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
    stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
  };
  const START_MS = 1_700_000_000_000; // the fake system time, a column boundary: the server agrees at first
  const columnsAt = (nowMs: number) => Array.from({ length: 10 }, (_, i) => Math.floor(nowMs / 5000) * 5 + 10 + 5 * i);
  /** The server's grid at its time `nowMs`, as GET /grid answers it and as the websocket sends it. */
  function serverGrid(nowMs: number): Record<string, unknown> {
    const columns = columnsAt(nowMs);
    const quotes = { ts: nowMs, price: "50.00", current_row: 5, column_seconds: 5, price_step: "10.00", columns, rows: [4, 5, 6], quotes: columns.map(() => ["3", "2", "3"]) };
    routes["/api/v1/grid"] = { ...quotes, server_time: nowMs, feed: { type: "status", feed: "healthy", betting: true }, settings };
    return { type: "grid", ...quotes };
  }

  async function trading(): Promise<{ ctl: Controller; ws: FakeWS }> {
    storedSession();
    serverGrid(START_MS);
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    const ws = await authenticate();
    expect(ctl.store.get().clockOffsetMs).toBe(0);
    return { ctl, ws };
  }

  it("set a minute ahead: the offset is measured again from the next grid message, and taps go out", async () => {
    const { ctl, ws } = await trading();
    await vi.advanceTimersByTimeAsync(1_000);
    const server = START_MS + 1_000;
    vi.setSystemTime(Date.now() + 60_000); // NTP steps the browser's clock; the server's did not move
    requests = [];
    ws.recv(serverGrid(server));
    await settle();
    expect(requests).toContain("/api/v1/grid");
    expect(ctl.store.get().clockOffsetMs).toBe(-60_000);
    expect(quotesStale(ctl.store.get(), Date.now())).toBe(false);
    const cell = `${columnsAt(server)[0]}:5`;
    expect(await ctl.tap(cell)).toBeNull();
    const sent = ws.ofType("bet");
    expect(sent).toHaveLength(1);
    expect(Math.abs((sent[0]?.["ts"] as number) - server)).toBeLessThan(1_000); // the server's time, not the browser's
  });

  it("set back: a column the server has locked is locked in the page again", async () => {
    const { ctl, ws } = await trading();
    await vi.advanceTimersByTimeAsync(500);
    vi.setSystemTime(Date.now() - 20_000);
    const server = START_MS + 500;
    ws.recv(serverGrid(server));
    await settle();
    expect(ctl.store.get().clockOffsetMs).toBe(20_000);
    const locked = Math.floor(server / 5000) * 5 + 5; // within min_lead_columns by the server's clock
    expect(quoteAt(ctl.store.get(), `${locked}:5`, Date.now())).toBeUndefined();
  });

  it("the chart's back-fill asks for the last two minutes of the server's time, not the browser's", async () => {
    storedSession();
    serverGrid(START_MS - 600_000); // the browser's clock is ten minutes ahead of the server's
    const ctl = new Controller("http://tap.test");
    await ctl.start();
    await settle();
    expect(requests).toContain(`/api/v1/prices?since=${START_MS - 600_000 - 120_000}`);
  });

  it("a grid message within a normal delivery time asks nothing", async () => {
    const { ws } = await trading();
    requests = [];
    await vi.advanceTimersByTimeAsync(1_500);
    ws.recv(serverGrid(START_MS + 1_000)); // half a second on its way
    await settle();
    expect(requests).not.toContain("/api/v1/grid");
  });
});

describe("the Account's lists re-read as many rows as the trader paged back to", () => {
  /** GET /api/v1/bets over `total` bets, newest first; the cursor is the offset. */
  function betsServer(total: number): string[] {
    const asked: string[] = [];
    vi.stubGlobal("fetch", (input: string) => {
      const u = new URL(input);
      if (u.pathname !== "/api/v1/bets") return fakeFetch(input);
      asked.push(u.search);
      const from = Number(u.searchParams.get("cursor") ?? "0");
      const limit = Number(u.searchParams.get("limit"));
      if (limit < 1 || limit > 200) return Promise.resolve(new Response(JSON.stringify({ error: { code: "invalid_limit", message: "1-200" } }), { status: 400 }));
      const bets = Array.from({ length: Math.max(0, Math.min(limit, total - from)) }, (_, i) => record("lost", { bet_id: `b${from + i}` }));
      const next = from + limit < total ? String(from + limit) : null;
      return Promise.resolve(new Response(JSON.stringify({ bets, next_cursor: next }), { status: 200 }));
    });
    return asked;
  }

  it("260 rows shown: 200 then 60, the same rows, and the next page after them", async () => {
    const { ctl } = await signedInWithTap();
    const asked = betsServer(1000);
    const p = await ctl.newestBets("", 260);
    expect(p.bets).toHaveLength(260);
    expect(p.bets[259]?.bet_id).toBe("b259");
    expect(p.next_cursor).toBe("260");
    expect(asked).toEqual(["?limit=200", "?limit=60&cursor=200"]);
  });

  it("fewer bets than rows shown: all of them, no next page", async () => {
    const { ctl } = await signedInWithTap();
    betsServer(230);
    const p = await ctl.newestBets("won", 400);
    expect(p.bets).toHaveLength(230);
    expect(p.next_cursor).toBeNull();
  });

  it("at most REREAD_MAX_ROWS, in pages the API allows", async () => {
    const { ctl } = await signedInWithTap();
    const asked = betsServer(5000);
    const p = await ctl.newestBets("", 3000);
    expect(p.bets).toHaveLength(REREAD_MAX_ROWS);
    expect(p.next_cursor).toBe(String(REREAD_MAX_ROWS));
    expect(asked).toHaveLength(REREAD_MAX_ROWS / 200);
  });
});
