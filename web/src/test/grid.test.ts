// The grid's accessible layer and the list of taps, rendered to markup (no DOM needed): one tab stop,
// where the keyboard goes when its cell leaves the layer, and how a tap's fate is told.
import { createElement, createRef } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { CellLayer } from "../components/Grid";
import { Taps } from "../components/Taps";
import type { Tap } from "../store";
import { cellText, geometry, refocusCell, tabStopCell } from "../layout";
import type { GridSettings } from "../wire";

const settings: GridSettings = {
  column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
  stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
};

function layer(focusCell: string | null, taps: Record<string, Tap> = {}): string {
  const g = geometry(1280, 640, settings, 1000);
  return renderToStaticMarkup(
    createElement(CellLayer, {
      layerRef: createRef<HTMLDivElement>(), g, settings, layerCol: 1000, centerRow: 50, quotes: new Map([["1010:50", "2"]]),
      taps, stepCents: 1000n, stale: false, focusCell, onFocusCell: () => undefined, onTap: () => undefined,
    }),
  );
}
const tabStops = (html: string): string[] => [...html.matchAll(/data-cell="([^"]+)"[^>]*tabindex="0"/g)].map((m) => m[1] ?? "");

describe("the grid's layer of cells", () => {
  it("is one stop in the Tab order, not 252: the first placeable column at the current band", () => {
    const html = layer(null);
    expect(html.match(/<button/g)).toHaveLength(12 * 21);
    expect(tabStops(html)).toEqual(["1010:50"]);
    expect(html.match(/tabindex="-1"/g)).toHaveLength(12 * 21 - 1);
  });
  it("keeps the cell the keyboard is on as the stop while it is shown", () => {
    expect(tabStops(layer("1030:55"))).toEqual(["1030:55"]);
    expect(tabStops(layer("995:55"))).toEqual(["1010:50"]); // its column has run out
  });
  it("sends the keyboard to the nearest shown cell when its own leaves the layer", () => {
    expect(refocusCell("995:55", 1000, settings, 50)).toBe("1000:55"); // column passed: same band, now
    expect(refocusCell("1030:63", 1000, settings, 50)).toBe("1030:60"); // band left: nearest band
    expect(tabStopCell("1030:61", 1000, settings, 50)).toBe("1010:50");
  });
});

const tap = (patch: Partial<Tap>): Tap => ({
  req: "t-1", cell: "1796682435:6711", stake: "1", multiplier: "6.7261", payout: null, betId: null, state: "sending",
  reason: null, history: ["sending"], body: null, sentAt: 1, resentAt: null, ...patch,
});

describe("a cell with a bet on it", () => {
  const label = (t: Tap) => /data-cell="1010:50"[^>]*aria-label="([^"]*)"/.exec(layer(null, { "1010:50": t }))?.[1];
  it("is named by the bet, its multiplier and its state, not by the quote of the moment", () => {
    expect(label(tap({ cell: "1010:50", state: "confirmed", multiplier: "2.4218" }))).toBe(
      "00:16:50 to 00:16:55 UTC, band 500.00–510.00, your bet: 1 at 2.4218, confirmed",
    );
    expect(label(tap({ cell: "1010:50", state: "won", multiplier: "2.4218", payout: "2.4218" }))).toMatch(/won, paid 2\.4218$/);
  });
  it("a refused tap leaves the cell open: the quote is said, then why the tap was refused", () => {
    expect(label(tap({ cell: "1010:50", state: "rejected", reason: "insufficient_funds" }))).toMatch(
      /multiplier 2, your bet: 1 at 6\.7261, rejected \(insufficient_funds\)$/,
    );
  });
});

describe("the list of taps", () => {
  const html = (taps: Record<string, Tap>) => renderToStaticMarkup(createElement(Taps, { taps, stepCents: 1000n }));

  it("is a polite live region before the first tap, so that each tap's state is announced", () => {
    expect(html({})).toMatch(/^<div[^>]*aria-live="polite"/);
    expect(html({ a: tap({ state: "confirmed" }) })).toMatch(/^<div[^>]*aria-live="polite"/);
  });
  it("names the band by its prices and the window in UTC, not by a row number", () => {
    const out = html({ a: tap({ state: "confirmed", payout: "6.7261" }) });
    expect(out).toContain("22:27:15 UTC · 67110.00–67120.00 · 1 × 6.7261");
    expect(out).not.toContain("row 6711");
  });
  it("a tap that never reached the server during a drop reads 'not sent', never 'refused'", () => {
    const out = html({ a: tap({ state: "unsent", reason: "No bet was placed: your history has no bet on this cell; nothing was charged." }) });
    expect(out).toMatch(/<strong class="state">not sent<\/strong>/);
    expect(out).not.toMatch(/refused/i);
    expect(out).toContain("nothing was charged");
  });
  it("says why a tap is unknown, and what to do about insufficient funds", () => {
    expect(html({ a: tap({ state: "unknown" }) })).toContain("connection dropped before the server answered");
    expect(html({ a: tap({ state: "rejected", reason: "insufficient_funds" }) })).toContain("deposit in Account");
  });
});

describe("a cell id in words", () => {
  it("is the window in UTC and the band's prices, as the history and the list of taps show it", () => {
    expect(cellText("1796682435:6711", 1000n)).toBe("22:27:15 UTC · 67110.00–67120.00");
    expect(cellText("1796682435:6711", null)).toBe("22:27:15 UTC · row 6711");
  });
});
