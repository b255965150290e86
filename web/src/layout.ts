// Where things are on the grid: pure geometry shared by the canvas and the DOM cell layer.
import { formatFixed } from "./money";
import type { GridSettings } from "./wire";

export interface Geometry {
  width: number;
  height: number;
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
  const rowH = height / (2 * s.rows_each_side + 1);
  return {
    width,
    height,
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
export const yOfRow = (g: Geometry, row: number, centerRow: number): number => (centerRow + g.rowsEach - row) * g.rowH;

/** y of a price in cents. */
export const yOfCents = (g: Geometry, cents: number, centerRow: number): number =>
  (centerRow + g.rowsEach + 1 - cents / g.stepCents) * g.rowH;

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

/** The price band of `row`, e.g. "67110.00–67120.00". */
export function bandText(row: number, stepCents: bigint): string {
  const lo = BigInt(row) * stepCents;
  return `${formatFixed(lo, 2, 2)}–${formatFixed(lo + stepCents, 2, 2)}`;
}

/** A cell id ("1796682435:6711") as a trader reads it: "22:27:15 UTC · 67110.00–67120.00"; the row
 *  number only while the band height (settings' price_step) is not known yet. */
export function cellText(cell: string, stepCents: bigint | null): string {
  const [ts = "", row = ""] = cell.split(":");
  const band = stepCents !== null && /^-?\d+$/.test(row) ? bandText(Number(row), stepCents) : `row ${row}`;
  return `${fmtTime(Number(ts))} UTC · ${band}`;
}
