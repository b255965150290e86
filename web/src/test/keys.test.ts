// The keyboard of the stake and slippage radio groups and of the Account's tab list: one Tab stop per
// group, arrows move the choice (WAI-ARIA radio group and tabs patterns).
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Account } from "../components/Account";
import { Stakes } from "../components/Stakes";
import { Controller } from "../controller";
import { rovingIndex } from "../keys";
import type { GridSettings } from "../wire";

const settings: GridSettings = {
  column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
  stake_presets: ["1", "5", "10"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
};
const noop = () => undefined;

describe("arrows within a group", () => {
  it("move to the next and previous item, wrapping; Home and End to the ends; other keys: nothing", () => {
    expect(rovingIndex("ArrowRight", 0, 3)).toBe(1);
    expect(rovingIndex("ArrowDown", 2, 3)).toBe(0);
    expect(rovingIndex("ArrowLeft", 0, 3)).toBe(2);
    expect(rovingIndex("ArrowUp", 1, 3)).toBe(0);
    expect(rovingIndex("Home", 2, 3)).toBe(0);
    expect(rovingIndex("End", 0, 3)).toBe(2);
    expect(rovingIndex("Enter", 0, 3)).toBeNull();
    expect(rovingIndex("ArrowRight", 0, 0)).toBeNull();
  });
});

/** The tabindex of each element with `role` in `html`, in order. */
function tabIndexes(html: string, role: string): string[] {
  return [...html.matchAll(new RegExp(`<button[^>]*role="${role}"[^>]*>`, "g"))].map((m) => /tabindex="(-?\d+)"/.exec(m[0])?.[1] ?? "none");
}

describe("one Tab stop per group", () => {
  it("stake and slippage: the chosen item of each group, or its first while none is chosen", () => {
    const html = renderToStaticMarkup(createElement(Stakes, { settings, stake: "5", slippage: "25", onPick: noop, onSlippage: noop }));
    expect(tabIndexes(html, "radio")).toEqual(["-1", "0", "-1", "-1", "0", "-1"]);
    const none = renderToStaticMarkup(createElement(Stakes, { settings, stake: null, slippage: "10", onPick: noop, onSlippage: noop }));
    expect(tabIndexes(none, "radio").slice(0, 3)).toEqual(["0", "-1", "-1"]);
  });
  it("the Account's tabs: the selected one, which names the panel it controls", () => {
    const html = renderToStaticMarkup(createElement(Account, { ctl: new Controller("http://tap.test") }));
    expect(tabIndexes(html, "tab")).toEqual(["0", "-1"]);
    expect(html).toMatch(/role="tabpanel" aria-labelledby="account-tab-history"/);
  });
});
