// Where things are on the grid: pure geometry shared by the canvas and the DOM cell layer.
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
