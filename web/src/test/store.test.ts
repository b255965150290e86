import { describe, expect, it } from "vitest";
import { initialState, quoteAt, quotesStale, reducer, tapRefusal, type Action, type State } from "../store";
import type { BetRequest, ServerMsg } from "../wire";

const body: BetRequest = { cell: "100:5", stake: "10", min_multiplier: "2.375", nonce: "abcdefgh12345678", ts: 1, signature: "0x00" };
const session = { token: "t".repeat(43), address: "0x1563915e194D8CfBA1943570603F7606A3115508" as const, sessionKey: "0x01" as const, expiresAt: 9e12 };

function run(...actions: Action[]): State {
  return actions.reduce(reducer, { ...initialState, session, conn: { state: "open", attempt: 0, retryAt: null, downSince: null } });
}
const sent: Action = { type: "tapSent", tap: { req: "t-1", cell: "100:5", stake: "10", multiplier: "2.5", body, sentAt: 0 } };
const srv = (msg: ServerMsg): Action => ({ type: "server", msg, now: 0 });
const accepted = srv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", cell: "100:5", stake: "10", multiplier: "2.5", payout: "25" });
const confirmed = srv({ type: "bet:confirmed", bet_id: "b1", status: "confirmed", cell: "100:5", stake: "10", multiplier: "2.5", payout: "25" });
const drop: Action = { type: "conn", state: "reconnecting", attempt: 1, retryAt: 5, at: 1 };
const reopen: Action = { type: "conn", state: "open", at: 2 };
const bet = (status: "confirmed" | "rejected" | "won" | "pending", extra = {}) => ({
  bet_id: "b1", status, cell: "100:5", stake: "10", multiplier: "2.5", payout: "25", potential_payout: "25", placed_at: 1, settled_at: null, ...extra,
});

describe("a tap's state machine", () => {
  it("a confirmed bet this tab did not send (placed before a reload, or in another tab) is shown", () => {
    const other = srv({ type: "bet:confirmed", bet_id: "b8", status: "confirmed", cell: "105:3", stake: "5", multiplier: "3", payout: "15" });
    const s = run(other, srv({ type: "bet:resolved", bet_id: "b8", status: "won", payout: "15" }));
    expect(s.taps["105:3"]).toMatchObject({ state: "won", betId: "b8", stake: "5", payout: "15", body: null });
    // never over a tap of this tab on the same cell that names another bet
    expect(run(sent, accepted, srv({ type: "bet:confirmed", bet_id: "b8", status: "confirmed", cell: "100:5", stake: "5", multiplier: "3", payout: "15" })).taps["100:5"]).toMatchObject({ betId: "b1", state: "pending" });
  });
  it("restore: listed bets join the taps, a known one only moves forward, a taken cell is left alone", () => {
    const s = run(sent, accepted, { type: "restore", bets: [bet("confirmed"), bet("confirmed", { bet_id: "b2", cell: "105:5" })] });
    expect(s.taps["100:5"]).toMatchObject({ state: "confirmed", betId: "b1", history: ["sending", "pending", "confirmed"] });
    expect(s.taps["105:5"]).toMatchObject({ state: "confirmed", betId: "b2", history: ["confirmed"] });
    const won = srv({ type: "bet:resolved", bet_id: "b2", status: "won", payout: "25" });
    expect([won, { type: "restore", bets: [bet("confirmed", { bet_id: "b2", cell: "105:5" })] } as Action].reduce(reducer, s).taps["105:5"]!.state).toBe("won");
    expect(run(sent, { type: "restore", bets: [bet("confirmed", { bet_id: "b3" })] }).taps["100:5"]).toMatchObject({ state: "sending", betId: null });
  });
  it("sending → pending → confirmed → won, with payout and the server's multiplier", () => {
    const s = run(sent, accepted, confirmed, srv({ type: "bet:resolved", bet_id: "b1", status: "won", payout: "25" }));
    const t = s.taps["100:5"]!;
    expect(t.state).toBe("won");
    expect(t.history).toEqual(["sending", "pending", "confirmed", "won"]);
    expect(t.payout).toBe("25");
  });
  it("bet:error keeps the reason and frees the cell", () => {
    const s = run(sent, srv({ type: "bet:error", req: "t-1", status: 422, error: { code: "stake_too_large", message: "The stake is above the maximum." } }));
    expect(s.taps["100:5"]).toMatchObject({ state: "error", reason: "The stake is above the maximum." });
    expect(tapRefusal({ ...s, stake: "10" }, "100:5", "2.5")).toBeNull();
  });
  it("bet:rejected after acceptance shows the reason", () => {
    const s = run(sent, accepted, srv({ type: "bet:rejected", bet_id: "b1", cell: "100:5", reason: "insufficient_funds" }));
    expect(s.taps["100:5"]).toMatchObject({ state: "rejected", reason: "insufficient_funds" });
  });
  it("an event naming another bet never moves a tap that already names its own", () => {
    // A re-sent tap met a claim never queued (b0): the server released it (bet:rejected not_queued)
    // and placed the same signed body as b1; the two messages may arrive in either order.
    const b0Rejected = srv({ type: "bet:rejected", bet_id: "b0", cell: "100:5", reason: "not_queued" });
    for (const order of [[accepted, b0Rejected], [b0Rejected, accepted]]) {
      const s = run(sent, drop, reopen, ...order, confirmed);
      expect(s.taps["100:5"]).toMatchObject({ state: "confirmed", betId: "b1" });
    }
    const other = srv({ type: "bet:rejected", bet_id: "b9", cell: "100:5", reason: "insufficient_funds" });
    expect(run(sent, accepted, other).taps["100:5"]).toMatchObject({ state: "pending", betId: "b1" });
  });
  it("a replayed event of the re-sent tap's bet, before the answer naming it, is the tap's", () => {
    const s = run(sent, drop, reopen, confirmed);
    expect(s.taps["100:5"]).toMatchObject({ state: "confirmed", betId: "b1" });
  });
  it("a drop while pending → unknown; the truth replaces it after the reconnect", () => {
    let s = run(sent, accepted, drop);
    expect(s.taps["100:5"]!.state).toBe("unknown");
    expect(tapRefusal(s, "200:5", "2")?.text).toMatch(/Not connected/);
    s = [reopen, { type: "truth", cell: "100:5", bet: bet("confirmed") } as Action].reduce(reducer, s);
    expect(s.taps["100:5"]!.history).toEqual(["sending", "pending", "unknown", "confirmed"]);
  });
  it("a drop before any answer → unknown; the truth may be a rejection", () => {
    const s = run(sent, drop, reopen, { type: "truth", cell: "100:5", bet: bet("rejected", { reason: "insufficient_funds" }) });
    expect(s.taps["100:5"]).toMatchObject({ state: "rejected", reason: "insufficient_funds", history: ["sending", "unknown", "rejected"] });
  });
  it("a drop does not touch settled or confirmed taps", () => {
    const s = run(sent, accepted, confirmed, drop);
    expect(s.taps["100:5"]!.state).toBe("confirmed");
  });
  it("a second tap on the same cell is refused before sending, and the reducer ignores it", () => {
    const s = run({ type: "stake", stake: "10" }, sent);
    expect(tapRefusal(s, "100:5", "2.5")?.text).toMatch(/already have a bet/);
    const again = reducer(s, { type: "tapSent", tap: { req: "t-2", cell: "100:5", stake: "10", multiplier: "2.5", body, sentAt: 1 } });
    expect(again).toBe(s);
  });
  it("refuses taps when signed out, suspended, locked or unquoted", () => {
    const base = run({ type: "stake", stake: "10" });
    expect(tapRefusal({ ...base, session: null }, "1:1", "2")?.text).toMatch(/Sign in/);
    expect(tapRefusal(reducer(base, srv({ type: "status", feed: "critical", betting: false })), "1:1", "2")?.text).toMatch(/suspended/);
    expect(tapRefusal(base, "1:1", undefined)?.text).toMatch(/locked/);
    expect(tapRefusal(base, "1:1", null)?.text).toMatch(/not offered/);
    expect(tapRefusal(base, "1:1", "2")).toBeNull();
  });
  it("a known balance below the stake: refused in the page, pointing to Account; unknown: sent", () => {
    const base = run({ type: "stake", stake: "10" });
    const me = (balance: string): Action => ({ type: "me", balance, isAdmin: false, balanceEvents: 0, at: 1 });
    expect(tapRefusal(base, "1:1", "2")).toBeNull(); // balance not read yet: the server decides
    const broke = reducer(base, me("0"));
    expect(tapRefusal(broke, "1:1", "2")).toEqual({ text: expect.stringMatching(/balance \(0\.00\) does not cover the stake \(10\).*deposit in Account/), action: "account" });
    expect(tapRefusal(reducer(base, me("9.999999")), "1:1", "2")?.action).toBe("account");
    expect(tapRefusal(reducer(base, me("10")), "1:1", "2")).toBeNull();
    expect(tapRefusal(reducer(broke, { type: "stake", stake: "1" }), "1:1", "2")?.action).toBe("account");
    expect(tapRefusal(broke, "1:1", "2")?.text).not.toMatch(/smaller|or less/); // nothing smaller would do
    const presets: State = {
      ...base,
      settings: {
        column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
        stake_presets: ["1", "5", "10"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
      },
    };
    expect(tapRefusal(reducer(presets, me("6")), "1:1", "2")?.text).toMatch(/deposit in Account, or pick a stake of 5 or less\.$/);
    // a deposit's balance event lifts it at once
    expect(tapRefusal(reducer(broke, srv({ type: "balance", balance: "50" })), "1:1", "2")).toBeNull();
    // the other reasons come first: they say what is wrong with this tap
    expect(tapRefusal(broke, "1:1", undefined)?.text).toMatch(/locked/);
  });
  it("a retry answered with status confirmed lands on confirmed", () => {
    const s = run(sent, drop, reopen, srv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "confirmed", cell: "100:5", stake: "10", multiplier: "2.5", payout: "25" }));
    expect(s.taps["100:5"]).toMatchObject({ state: "confirmed", betId: "b1" });
  });
  it("signing out forgets taps and balance; balance messages update it", () => {
    let s = run(sent, srv({ type: "balance", balance: "90" }));
    expect(s.balance).toBe("90");
    s = reducer(s, { type: "signedOut", reason: "expired" });
    expect(s).toMatchObject({ session: null, balance: null, taps: {}, signedOutReason: "expired" });
  });
});

describe("a late truth never moves a tap backwards", () => {
  const truth = (status: "confirmed" | "rejected" | "won" | "pending", extra = {}): Action => ({ type: "truth", cell: "100:5", bet: bet(status, extra) });
  it("a confirmed truth that arrives after bet:resolved keeps the tap won", () => {
    const s = run(sent, accepted, drop, reopen, srv({ type: "bet:resolved", bet_id: "b1", status: "won", payout: "25" }), truth("confirmed"));
    expect(s.taps["100:5"]).toMatchObject({ state: "won", payout: "25" });
    expect(s.taps["100:5"]!.history).toEqual(["sending", "pending", "unknown", "won"]);
  });
  it("a pending truth after bet:confirmed keeps confirmed; after a rejection keeps rejected", () => {
    expect(run(sent, accepted, drop, reopen, confirmed, truth("pending")).taps["100:5"]!.state).toBe("confirmed");
    const rejected = srv({ type: "bet:rejected", bet_id: "b1", cell: "100:5", reason: "timeout" });
    expect(run(sent, accepted, drop, reopen, rejected, truth("pending")).taps["100:5"]).toMatchObject({ state: "rejected", reason: "timeout" });
  });
  it("a stale bet:accepted (a retry's answer) does not undo a confirmation either", () => {
    const s = run(sent, drop, reopen, confirmed, srv({ type: "bet:accepted", req: "t-1", bet_id: "b1", status: "pending", cell: "100:5", stake: "10", multiplier: "2.5", payout: "25" }));
    expect(s.taps["100:5"]!.state).toBe("confirmed");
  });
  it("a truth still moves unknown and pending taps forward", () => {
    expect(run(sent, accepted, drop, reopen, truth("won", { payout: "25", settled_at: 2 })).taps["100:5"]!.state).toBe("won");
    expect(run(sent, accepted, drop, reopen, truth("pending")).taps["100:5"]!.state).toBe("pending");
  });
});

describe("the last event id (sent as resume after a reconnect)", () => {
  it("keeps the newest id of owner events, whatever order they arrive in, and forgets it on sign-out", () => {
    let s = run(sent, accepted, srv({ type: "bet:confirmed", bet_id: "b1", status: "confirmed", cell: "100:5", stake: "10", multiplier: "2.5", payout: "25", id: "10-2" }));
    expect(s.lastEventId).toBe("10-2");
    s = reducer(s, srv({ type: "balance", balance: "90", id: "9-7" }));
    expect(s.lastEventId).toBe("10-2");
    s = reducer(s, srv({ type: "balance", balance: "90" }));
    expect(s.lastEventId).toBe("10-2");
    s = reducer(s, srv({ type: "resumed", after: "10-2", last: "11-0", complete: true }));
    expect(s.lastEventId).toBe("11-0");
    expect(reducer(s, { type: "signedOut", reason: null }).lastEventId).toBeNull();
  });
});

describe("a re-sent tap refused before the nonce lookup", () => {
  const resent: Action = { type: "tapResent", cell: "100:5", at: 5 };
  const err = (status: number, code: string): Action => srv({ type: "bet:error", req: "t-1", status, error: { code, message: code }, retry_after: 1 });
  it("stays unknown, with a visible reason, for 401/429/503 refusals that say nothing of the first send", () => {
    for (const [status, code] of [[429, "rate_limited"], [429, "too_many_in_flight"], [503, "overloaded"], [401, "invalid_session"], [401, "ts_out_of_window"], [503, "nonce_busy"], [503, "recovering"]] as const) {
      const t = run(sent, drop, reopen, resent, err(status, code)).taps["100:5"]!;
      expect(t.state).toBe("unknown");
      expect(t.reason).toContain(code);
    }
  });
  it("is refused for a verdict given after the nonce lookup, and a first send is refused for any error", () => {
    expect(run(sent, drop, reopen, resent, err(422, "cell_too_soon")).taps["100:5"]!.state).toBe("error");
    expect(run(sent, err(429, "rate_limited")).taps["100:5"]!.state).toBe("error");
  });
  it("a tap the server never placed (lost in a drop) is 'unsent', not refused, and frees its cell", () => {
    const s = run(sent, drop, { type: "tapLost", cell: "100:5", reason: "No bet was placed" });
    expect(s.taps["100:5"]).toMatchObject({ state: "unsent", reason: "No bet was placed", history: ["sending", "unknown", "unsent"] });
    expect(tapRefusal({ ...s, conn: { state: "open", attempt: 0, retryAt: null, downSince: null }, stake: "10" }, "100:5", "2.5")).toBeNull();
  });
  it("'not placed' never overrides what the server said", () => {
    const s = run(sent, drop, reopen, resent, accepted, { type: "tapLost", cell: "100:5", reason: "Not placed" });
    expect(s.taps["100:5"]!.state).toBe("pending");
  });
});

describe("a /me answer and websocket balance events", () => {
  it("a /me requested before a balance event does not overwrite the event's balance, but still gives is_admin", () => {
    const before = run(srv({ type: "balance", balance: "100" }));
    const asked = before.balanceEvents; // the request is sent now
    const s = [srv({ type: "balance", balance: "75" }), { type: "me", balance: "100", isAdmin: true, balanceEvents: asked, at: 0 } as Action].reduce(reducer, before);
    expect(s).toMatchObject({ balance: "75", isAdmin: true });
  });
  it("a /me with no balance event since its request sets the balance", () => {
    const before = run(srv({ type: "balance", balance: "100" }));
    expect(reducer(before, { type: "me", balance: "90", isAdmin: false, balanceEvents: before.balanceEvents, at: 0 }).balance).toBe("90");
  });
});

describe("quotes by time", () => {
  const settings = {
    column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
    stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
  };
  // built at 999.5 s (column 995): quotes columns 1005 and 1010; the server clock is 250 ms ahead
  const grid = srv({ type: "grid", ts: 999_500, price: "50.00", current_row: 5, column_seconds: 5, price_step: "10.00", columns: [1005, 1010], rows: [5], quotes: [["2"], [null]] });
  const s = run({ type: "settings", settings, clockOffsetMs: 250 }, grid);

  it("a column within min_lead_columns of the current one is locked, whatever the last grid says", () => {
    expect(quoteAt(s, "1005:5", 999_700)).toBe("2"); // server time 999.95 s: still column 995
    expect(quoteAt(s, "1005:5", 999_800)).toBeUndefined(); // 1000.05 s: column 1000, 1005 is 1 ahead
    expect(quoteAt(s, "1010:5", 999_800)).toBeNull(); // not offered
    expect(quoteAt(s, "1010:6", 999_800)).toBeUndefined(); // not in the grid
  });
  it("quotes go out of date 3 s after the grid message, by server time", () => {
    expect(quotesStale(s, 1_002_250)).toBe(false);
    expect(quotesStale(s, 1_002_251)).toBe(true);
    expect(tapRefusal({ ...s, stake: "1" }, "1010:5", "2", true)?.text).toMatch(/out of date/);
    expect(tapRefusal({ ...s, stake: "1" }, "1010:5", "2", false)).toBeNull();
  });
});
