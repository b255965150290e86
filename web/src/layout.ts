// Where things are on the grid: pure geometry shared by the canvas and the DOM cell layer.
import { formatFixed } from "./money";
import type { GridSettings } from "./wire";

/** Height of the strip along the top of the grid that holds the time axis (each window's start). */
export const AXIS_H = 16;

export interface Geometry {
  width: number;
  height: number;
  /** Where the bands start: under the time axis. */
  top: number;
  /** Width of the price history to the left of "now". */
  histW: number;
  colW: number;
  rowH: number;
  pxPerSec: number;
  columnSeconds: number;
  columns: number; // columns_ahead, drawn from the current column on
  rowsEach: number;
  stepCents: number;
}

export function geometry(width: number, height: number, s: GridSettings, stepCents: number): Geometry {
  const histW = Math.round(width * (width < 600 ? 0.18 : 0.25));
  const colW = (width - histW) / s.columns_ahead;
  const rowH = (height - AXIS_H) / (2 * s.rows_each_side + 1);
  return {
    width,
    height,
    top: AXIS_H,
    histW,
    colW,
    rowH,
    pxPerSec: colW / s.column_seconds,
    columnSeconds: s.column_seconds,
    columns: s.columns_ahead,
    rowsEach: s.rows_each_side,
    stepCents,
  };
}

/** x of time `tSec` (seconds, fractional) when "now" is `nowSec`. */
export const xOf = (g: Geometry, tSec: number, nowSec: number): number => g.histW + (tSec - nowSec) * g.pxPerSec;

/** Top y of `row` when the grid is centred on `centerRow`. */
export const yOfRow = (g: Geometry, row: number, centerRow: number): number =>
  g.top + (centerRow + g.rowsEach - row) * g.rowH;

/** y of a price in cents. */
export const yOfCents = (g: Geometry, cents: number, centerRow: number): number =>
  g.top + (centerRow + g.rowsEach + 1 - cents / g.stepCents) * g.rowH;

export const columnStart = (nowSec: number, columnSeconds: number): number =>
  Math.floor(nowSec / columnSeconds) * columnSeconds;

export function fmtTime(tSec: number): string {
  const d = new Date(tSec * 1000);
  return d.toISOString().slice(11, 19);
}

/** The one cell of the grid's layer that is in the Tab order (a roving tab stop: the grid is one stop,
 *  arrows move inside it): the cell the keyboard was last on while it is still shown, else the first
 *  placeable column at the current band. */
export function tabStopCell(
  focused: string | null,
  layerCol: number,
  s: Pick<GridSettings, "column_seconds" | "columns_ahead" | "min_lead_columns" | "rows_each_side">,
  centerRow: number,
): string {
  if (focused) {
    const [t, row] = focused.split(":").map(Number);
    const last = layerCol + (s.columns_ahead - 1) * s.column_seconds;
    if (t !== undefined && row !== undefined && t >= layerCol && t <= last && Math.abs(row - centerRow) <= s.rows_each_side)
      return focused;
  }
  return `${layerCol + s.min_lead_columns * s.column_seconds}:${centerRow}`;
}

/** Where the keyboard goes when the focused cell leaves the layer (its column ran out, or the bands
 *  moved with the price): the nearest shown cell, same band if it is still shown, else the nearest
 *  band, in the current column if its own has passed. */
export function refocusCell(
  lost: string,
  layerCol: number,
  s: Pick<GridSettings, "column_seconds" | "columns_ahead" | "rows_each_side">,
  centerRow: number,
): string {
  const [t = layerCol, row = centerRow] = lost.split(":").map(Number);
  const last = layerCol + (s.columns_ahead - 1) * s.column_seconds;
  const col = Math.min(Math.max(t, layerCol), last);
  const band = Math.min(Math.max(row, centerRow - s.rows_each_side), centerRow + s.rows_each_side);
  return `${col}:${band}`;
}

/** The price at the bottom edge of band `row` (the top of `row - 1`), e.g. "67110.00": integer cents
 *  formatted as a decimal string, never through a float. `whole`: "67110", for bands of whole dollars
 *  (every edge then is one), where the axis is narrow. */
export function edgeText(row: number, stepCents: bigint, whole = false): string {
  return whole && stepCents % 100n === 0n
    ? (BigInt(row) * (stepCents / 100n)).toString()
    : formatFixed(BigInt(row) * stepCents, 2, 2);
}

/** A price history narrower than this (a phone's: 18 % of the width) labels the price axis without
 *  cents where it can: "67110.00" at 11 px would take most of the strip, over the price line's
 *  latest stretch and the "now" dot. */
export const WHOLE_EDGES_BELOW_PX = 120;

/** The price band of `row`, e.g. "67110.00–67120.00": its two edges as the price axis labels them. */
export function bandText(row: number, stepCents: bigint): string {
  return `${edgeText(row, stepCents)}–${edgeText(row + 1, stepCents)}`;
}

/** A label of the price axis: the price `text` of the bottom edge of band `row`, at height `y`. */
export interface EdgeLabel {
  row: number;
  y: number;
  text: string;
}

/** The price axis: the edges between the bands shown, each with its price (without cents on a narrow
 *  strip, WHOLE_EDGES_BELOW_PX). Where bands are shorter than
 *  a label, every n-th edge — chosen by its price (row % n), so the same edges keep their labels as the
 *  bands move with the price. Computed when the bands move, not every frame. */
export function rowEdgeLabels(g: Geometry, centerRow: number, stepCents: bigint, fontPx: number): EdgeLabel[] {
  const stride = Math.max(1, Math.ceil((fontPx + 3) / g.rowH));
  const whole = g.histW < WHOLE_EDGES_BELOW_PX;
  const out: EdgeLabel[] = [];
  // From the top: the edge under the highest band down to the one over the lowest.
  for (let row = centerRow + g.rowsEach; row > centerRow - g.rowsEach; row--) {
    if (((row % stride) + stride) % stride !== 0) continue;
    out.push({ row, y: yOfRow(g, row, centerRow) + g.rowH, text: edgeText(row, stepCents, whole) });
  }
  return out;
}

/** A label of the time axis: the start `t` (Unix s) of a window as `text` (HH:MM:SS, UTC), at `x`. */
export interface TimeLabel {
  t: number;
  x: number;
  text: string;
}

const timeTexts = new Map<number, string>();
/** fmtTime, remembered: the axis names the same few windows frame after frame. */
function timeText(t: number): string {
  let text = timeTexts.get(t);
  if (text === undefined) {
    if (timeTexts.size > 256) timeTexts.clear();
    text = fmtTime(t);
    timeTexts.set(t, text);
  }
  return text;
}

/** The time axis at `nowSec`: the start of each window from the left edge (the price history's past
 *  windows) to the last column, as the cells name it (UTC; the axis says "UTC" once, left of `minX`).
 *  Where columns are narrower than a label (`labelW` px), every n-th window — chosen by its time, so the
 *  labels stay on their windows as the grid slides instead of hopping from one to the next. */
export function columnTimeLabels(g: Geometry, nowSec: number, labelW: number, minX: number): TimeLabel[] {
  const cs = g.columnSeconds;
  const stride = Math.max(1, Math.ceil((labelW + 6) / g.colW));
  const last = columnStart(nowSec, cs) + (g.columns - 1) * cs;
  const out: TimeLabel[] = [];
  for (let t = columnStart(nowSec - g.histW / g.pxPerSec, cs); t <= last; t += cs) {
    if ((((t / cs) % stride) + stride) % stride !== 0) continue;
    const x = xOf(g, t, nowSec);
    if (x < minX || x + labelW > g.width) continue;
    out.push({ t, x, text: timeText(t) });
  }
  return out;
}

/** A cell id ("1796682435:6711") as a trader reads it: "22:27:15 UTC · 67110.00–67120.00"; the row
 *  number only while the band height (settings' price_step) is not known yet. */
export function cellText(cell: string, stepCents: bigint | null): string {
  const [ts = "", row = ""] = cell.split(":");
  const band = stepCents !== null && /^-?\d+$/.test(row) ? bandText(Number(row), stepCents) : `row ${row}`;
  return `${fmtTime(Number(ts))} UTC · ${band}`;
}
