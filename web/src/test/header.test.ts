// The header's price and balance while the socket is down: marked as old, on screen and for screen
// readers, with their age; and the price line on the grid, which keeps the last price instead of vanishing.
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { HeaderFigures } from "../components/StatusBar";
import { PriceSeries } from "../series";
import { figuresFreshness, initialState, reducer, type Action, type State } from "../store";

const session = { token: "t".repeat(43), address: "0x1563915e194D8CfBA1943570603F7606A3115508" as const, sessionKey: "0x01" as const, expiresAt: 9e12 };
const T0 = 1_700_000_000_000;
const open: Action = { type: "conn", state: "open", at: T0 };
const live: State = [
  { type: "signedIn", session } as Action,
  open,
  { type: "server", msg: { type: "price", price: "67110.25", ts: T0 }, now: T0 } as Action,
  { type: "server", msg: { type: "balance", balance: "100" }, now: T0 } as Action,
].reduce(reducer, initialState);
const dropped = (at: number): State => reducer(live, { type: "conn", state: "reconnecting", attempt: 1, retryAt: at + 1000, at });

describe("how old the header's figures are", () => {
  it("live while the socket is open and prices keep coming", () => {
    expect(figuresFreshness(live, T0 + 1000)).toMatchObject({ priceStale: false, balanceStale: false, spoken: null });
  });
  it("while the socket is down: the price's age from its tick, the balance's from the drop", () => {
    const f = figuresFreshness(dropped(T0 + 2_000), T0 + 12_400);
    expect(f).toMatchObject({ priceStale: true, priceAgeS: 12, balanceStale: true, balanceAgeS: 10 });
    expect(f.spoken).toMatch(/not live/);
  });
  it("the drop is dated once: further attempts keep it, the next open clears it", () => {
    let s = dropped(T0 + 2_000);
    s = reducer(s, { type: "conn", state: "reconnecting", attempt: 2, retryAt: null, at: T0 + 5_000 });
    expect(s.conn.downSince).toBe(T0 + 2_000);
    expect(reducer(s, { type: "conn", state: "open", at: T0 + 9_000 }).conn.downSince).toBeNull();
  });
  it("a balance read over HTTP during the drop is as old as that answer", () => {
    const s = reducer(dropped(T0 + 2_000), { type: "me", balance: "90", isAdmin: false, balanceEvents: live.balanceEvents, at: T0 + 8_000 });
    expect(figuresFreshness(s, T0 + 12_400)).toMatchObject({ balanceStale: true, balanceAgeS: 4 });
  });
  it("a sign-in's new socket (closed and opened again at once) flags nothing: no flash, nothing said", () => {
    const restarting = reducer(live, { type: "conn", state: "connecting", at: T0 + 500 });
    expect(figuresFreshness(restarting, T0 + 600)).toMatchObject({ priceStale: false, balanceStale: false, spoken: null });
    // one that does not get through is being reconnected, and dated from when the old one closed
    const failed = reducer(restarting, { type: "conn", state: "reconnecting", attempt: 1, retryAt: null, at: T0 + 700 });
    expect(figuresFreshness(failed, T0 + 3_500)).toMatchObject({ priceStale: true, balanceStale: true, balanceAgeS: 3 });
  });
  it("the price alone goes stale when ticks stop coming on an open socket (a stalled feed)", () => {
    expect(figuresFreshness(live, T0 + 6_000)).toMatchObject({ priceStale: true, priceAgeS: 6, balanceStale: false });
  });
});

describe("the header while the socket is down", () => {
  const html = (s: State, now: number) => renderToStaticMarkup(createElement(HeaderFigures, { state: s, now }));

  it("says how old the price and the balance are, in words, and marks them", () => {
    const out = html(dropped(T0 + 2_000), T0 + 12_400);
    expect(out).toMatch(/data-testid="price"[^>]*data-stale="true"/);
    expect(out).toContain("last price 12 s ago");
    expect(out).toMatch(/data-testid="balance"[^>]*data-stale="true"/);
    expect(out).toContain("as of 10 s ago");
  });
  it("tells a screen reader once, in a status region that does not change every second", () => {
    const a = html(dropped(T0 + 2_000), T0 + 12_400);
    const b = html(dropped(T0 + 2_000), T0 + 13_400);
    const region = (out: string) => /<span class="sr-only" role="status"[^>]*>([^<]*)<\/span>/.exec(out)?.[1];
    expect(region(a)).toMatch(/price and balance are not live/i);
    expect(region(b)).toBe(region(a));
  });
  it("shows nothing of the sort while live", () => {
    const out = html(live, T0 + 1000);
    expect(out).not.toContain("ago");
    expect(out).toMatch(/data-testid="price"[^>]*data-stale="false"/);
    expect(/<span class="sr-only" role="status"[^>]*>([^<]*)<\/span>/.exec(out)?.[1] ?? "").toBe("");
  });
});

describe("the price line's first point", () => {
  it("is the last price before the window when no newer one came: the line stays, it does not vanish", () => {
    const s = new PriceSeries(8);
    s.push(T0, "100.00");
    s.push(T0 + 250, "100.10");
    expect(s.indexFrom(T0 + 30_000)).toBe(1); // both older than the window
    expect(s.indexFrom(T0 + 100)).toBe(0); // the point before the window's start, so the line enters from the edge
    expect(s.indexFrom(T0 - 1)).toBe(0);
    expect(new PriceSeries(8).indexFrom(T0)).toBe(0);
  });
});
