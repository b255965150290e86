// The grid's axes: the price of each band edge down the left, the start of each window along the top,
// drawn on the canvas with the same words the accessible layer of cells uses.
import { createElement, createRef } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { CellLayer } from "../components/Grid";
import { AXIS_H, bandText, columnStart, columnTimeLabels, edgeText, geometry, rowEdgeLabels, yOfRow } from "../layout";
import type { GridSettings } from "../wire";

const settings: GridSettings = {
  column_seconds: 5, price_step: "10.00", columns_ahead: 12, min_lead_columns: 2, rows_each_side: 10, house_edge: "0.05",
  stake_presets: ["1"], min_stake: "1", max_stake: "1000", chain_id: 1, siwe_domain: "tap.test",
};
const CENTER = 6711;
const NOW = 1796682437.5; // 22:27:17.5 UTC, in the column that starts at 22:27:15
const desktop = geometry(1280, 640, settings, 1000);
const phone = geometry(390, 523, settings, 1000);

describe("the price axis", () => {
  it("labels each band edge with its price, formatted from integer cents, where the edge is", () => {
    const labels = rowEdgeLabels(desktop, CENTER, 1000n, 11);
    expect(labels).toHaveLength(2 * settings.rows_each_side); // the edges between the 21 bands
    for (const l of labels) {
      expect(l.text).toBe(edgeText(l.row, 1000n));
      expect(l.y).toBeCloseTo(yOfRow(desktop, l.row, CENTER) + desktop.rowH); // the bottom edge of band `row`
    }
    expect(labels.find((l) => l.row === CENTER)?.text).toBe("67110.00");
    expect(edgeText(123456789, 1000n)).toBe("1234567890.00"); // bigint: no float rounding at any price
  });
  it("uses the prices the cells' names use: an edge is the top of the band below and the bottom of the one above", () => {
    const edge = rowEdgeLabels(desktop, CENTER, 1000n, 11).find((l) => l.row === CENTER)!.text;
    expect(bandText(CENTER, 1000n).startsWith(`${edge}–`)).toBe(true);
    expect(bandText(CENTER - 1, 1000n).endsWith(`–${edge}`)).toBe(true);
  });
  it("on a phone's narrow history strip drops the cents of whole-dollar edges, so the labels leave the line room", () => {
    const phone375 = geometry(375, 413, settings, 1000);
    expect(phone375.histW).toBeLessThan(70);
    const labels = rowEdgeLabels(phone375, CENTER, 1000n, 11);
    expect(labels.find((l) => l.row === CENTER)?.text).toBe("67110");
    // 5 digits at 11 px (≤ 0.6 em each) after the 6 px tick: under half of the strip
    for (const l of labels) expect(6 + l.text.length * 11 * 0.6).toBeLessThan(phone375.histW / 2 + 6);
    // bands with cents keep them, on every edge alike
    expect(rowEdgeLabels(phone375, 134221, 50n, 11).find((l) => l.row === 134221)?.text).toBe("67110.50");
    expect(rowEdgeLabels(phone375, 134222, 50n, 11).find((l) => l.row === 134222)?.text).toBe("67111.00");
  });
  it("on short bands labels every other edge, the same edges whatever the band the price is in", () => {
    const short = geometry(1280, 300, settings, 1000);
    const rows = (center: number) => rowEdgeLabels(short, center, 1000n, 11).map((l) => l.row);
    expect(rows(CENTER).every((r) => r % 2 === 0)).toBe(true);
    expect(rows(CENTER).length).toBe(10);
    expect(rows(CENTER + 1).every((r) => r % 2 === 0)).toBe(true);
  });
});

describe("the time axis", () => {
  it("puts each window's start, HH:MM:SS UTC as the cells and the list of taps say it, over its column", () => {
    const labels = columnTimeLabels(desktop, NOW, 44, 24);
    const nowCol = columnStart(NOW, 5);
    const last = nowCol + 11 * 5;
    const shownColumns = labels.filter((l) => l.t >= nowCol).map((l) => l.t);
    expect(shownColumns).toEqual(Array.from({ length: 12 }, (_, i) => nowCol + 5 * i));
    expect(labels.find((l) => l.t === nowCol)?.text).toBe("22:27:15");
    expect(labels.every((l) => l.t <= last && l.x >= 24 && l.x + 44 <= desktop.width)).toBe(true);
    // the history to the left of "now" has its past windows marked too
    expect(labels.some((l) => l.t < nowCol)).toBe(true);
  });
  it("on a phone's narrow columns labels every other window, anchored in time: labels do not hop as columns pass", () => {
    const at = (now: number) => columnTimeLabels(phone, now, 44, 24).map((l) => l.t);
    expect(at(NOW).every((t) => (t / 5) % 2 === 0)).toBe(true);
    expect(at(NOW).length).toBeGreaterThanOrEqual(5);
    expect(at(NOW + 5).every((t) => (t / 5) % 2 === 0)).toBe(true);
    const labels = columnTimeLabels(phone, NOW, 44, 24);
    for (let i = 1; i < labels.length; i++) expect(labels[i]!.x - labels[i - 1]!.x).toBeGreaterThanOrEqual(44);
  });
  it("has a strip of its own: the bands start under it, so no label covers a quote", () => {
    expect(yOfRow(desktop, CENTER + settings.rows_each_side, CENTER)).toBe(AXIS_H);
    expect(yOfRow(desktop, CENTER - settings.rows_each_side, CENTER) + desktop.rowH).toBeCloseTo(desktop.height);
  });
});

describe("the accessible layer says what the axes show", () => {
  it("a cell's name starts with its column's label and names its band by the two edge labels", () => {
    const layerCol = columnStart(NOW, 5);
    const html = renderToStaticMarkup(
      createElement(CellLayer, {
        layerRef: createRef<HTMLDivElement>(), g: desktop, settings, layerCol, centerRow: CENTER, quotes: new Map([[`${layerCol + 15}:${CENTER}`, "2"]]),
        taps: {}, stepCents: 1000n, stale: false, focusCell: null, onFocusCell: () => undefined, onTap: () => undefined,
      }),
    );
    const t = layerCol + 15;
    const time = columnTimeLabels(desktop, NOW, 44, 24).find((l) => l.t === t)!.text;
    const edges = rowEdgeLabels(desktop, CENTER, 1000n, 11);
    const lo = edges.find((l) => l.row === CENTER)!.text;
    const hi = edges.find((l) => l.row === CENTER + 1)!.text;
    const label = new RegExp(`data-cell="${t}:${CENTER}"[^>]*aria-label="([^"]*)"`).exec(html)?.[1];
    expect(label).toBe(`${time} to 22:27:35 UTC, band ${lo}–${hi}, multiplier 2`);
  });
});
