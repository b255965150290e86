// The grid's accessible layer, rendered to markup (no DOM needed): one tab stop, and where the
// keyboard goes when its cell leaves the layer.
import { createElement, createRef } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { CellLayer } from "../components/Grid";
import { geometry, refocusCell, tabStopCell } from "../layout";
import type { GridSettings } from "../wire";

const settings: GridSettings = {
  column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
  stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
};

function layer(focusCell: string | null): string {
  const g = geometry(1280, 640, settings, 1000);
  return renderToStaticMarkup(
    createElement(CellLayer, {
      layerRef: createRef<HTMLDivElement>(), g, settings, layerCol: 1000, centerRow: 50, quotes: new Map([["1010:50", "2"]]),
      taps: {}, stepCents: 1000n, stale: false, focusCell, onFocusCell: () => undefined, onTap: () => undefined,
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

