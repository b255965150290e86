// The grid: a canvas for speed (price line, columns, bands, quotes, own bets) and, on top of it,
// a layer of real buttons — one per cell — for touch, keyboard (arrows + Enter) and screen readers.
import { memo, useEffect, useLayoutEffect, useMemo, useRef, useState, type FocusEvent, type KeyboardEvent } from "react";
import { parsePriceCents } from "../money";
import {
  bandText,
  columnStart,
  columnTimeLabels,
  fmtTime,
  geometry,
  refocusCell,
  rowEdgeLabels,
  tabStopCell,
  xOf,
  yOfCents,
  yOfRow,
  type EdgeLabel,
  type Geometry,
} from "../layout";
import { perf, record } from "../perf";
import type { PriceSeries } from "../series";
import { HOLDS_CELL, priceIsStale, quotesStale, type State, type Tap, type TapState } from "../store";
import type { GridSettings } from "../wire";

export const STATE_LABEL: Record<TapState, string> = {
  sending: "sending",
  pending: "pending",
  confirmed: "confirmed",
  rejected: "rejected",
  error: "refused",
  unknown: "unknown",
  unsent: "not sent",
  won: "won",
  lost: "lost",
  void: "void",
};
/** Drawn in the cell next to the colour, so no state is told by colour alone. */
const STATE_MARK: Record<TapState, string> = {
  sending: "…",
  pending: "…",
  confirmed: "✓",
  rejected: "✕",
  error: "✕",
  unknown: "?",
  unsent: "✕",
  won: "WON",
  lost: "LOST",
  void: "VOID",
};
const STATE_FILL: Record<TapState, string> = {
  sending: "#f5b942",
  pending: "#f5b942",
  confirmed: "#3b82f6",
  rejected: "#ef4444",
  error: "#ef4444",
  unknown: "#a855f7",
  unsent: "#94a3b8",
  won: "#22c55e",
  lost: "#6b7280",
  void: "#9ca3af",
};

interface Props {
  state: State;
  series: PriceSeries;
  onTap: (cell: string) => void;
  /** A new value asks for the focus on the grid's tab stop (after a sign-in removed the focused button),
   *  unless the focus is already somewhere on the page. */
  focusRequest: number;
}

type QuoteMap = Map<string, string | null>;

function quoteMap(state: State): QuoteMap {
  const m: QuoteMap = new Map();
  const g = state.grid;
  if (!g) return m;
  g.columns.forEach((t, i) => g.rows.forEach((r, j) => m.set(`${t}:${r}`, g.quotes[i]?.[j] ?? null)));
  return m;
}

/** The canvas shows two decimals (truncated: never more than the quote); the cell's name has all four. */
function shortQuote(q: string, narrow: boolean): string {
  const [w = q, f = ""] = q.split(".");
  // Narrow columns (phones): whole numbers from 10 up, one decimal below; always truncated.
  const keep = narrow ? (w.length >= 2 ? 0 : 1) : 2;
  const frac = f.slice(0, keep).replace(/0+$/, "");
  return (frac ? `${w}.${frac}` : w) + (narrow ? "" : "×");
}


/** The axes' labels: the price of each band edge down the left, each window's start (UTC) along the top. */
const AXIS_PX = 11;
const AXIS_FONT = `${AXIS_PX}px "Liberation Sans", Arial, sans-serif`;
let axisWidths: { time: number; utc: number } | null = null;
/** How wide a time label and the "UTC" tag are, measured once. */
function axisMetrics(ctx: CanvasRenderingContext2D): { time: number; utc: number } {
  if (!axisWidths) {
    ctx.font = AXIS_FONT;
    axisWidths = { time: Math.ceil(ctx.measureText("00:00:00").width) + 3, utc: Math.ceil(ctx.measureText("UTC").width) };
  }
  return axisWidths;
}

interface Frame {
  g: Geometry;
  /** The price axis's labels; they change when the bands move, not every frame. */
  edges: EdgeLabel[];
  nowSec: number;
  centerRow: number;
  quotes: QuoteMap;
  taps: Record<string, Tap>;
  settings: GridSettings;
  series: PriceSeries;
  minLead: number;
  /** The quotes are out of date (quotesStale): drawn dimmed, the layer says so in words. */
  stale: boolean;
  /** The last price is not live (priceIsStale): its line runs on to "now" dashed, the dot hollow. */
  priceStale: boolean;
}

function draw(ctx: CanvasRenderingContext2D, f: Frame, t: number): void {
  const { g, nowSec, centerRow } = f;
  const cs = g.columnSeconds;
  const nowCol = columnStart(nowSec, cs);
  ctx.clearRect(0, 0, g.width, g.height);
  ctx.fillStyle = "#0b1220";
  ctx.fillRect(0, 0, g.width, g.height);

  // bands; the current band (the one the last price is in) highlighted
  const last = f.series.last();
  const curRow = last ? Math.floor(last.cents / g.stepCents) : centerRow;
  for (let k = -g.rowsEach; k <= g.rowsEach; k++) {
    const row = centerRow + k;
    const y = yOfRow(g, row, centerRow);
    ctx.fillStyle = row === curRow ? "#1e3a5f" : k % 2 === 0 ? "#0f172a" : "#111a2e";
    ctx.fillRect(0, y, g.width, g.rowH);
  }

  // cells: locked columns (current + lead) and placeable ones with their quotes
  const narrow = g.colW < 48;
  const fontPx = Math.max(10, Math.min(13, Math.floor(g.colW / (narrow ? 2.6 : 4.2))));
  ctx.font = `${fontPx}px "Liberation Sans", Arial, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let c = 0; c < g.columns; c++) {
    const tCol = nowCol + c * cs;
    const x = xOf(g, tCol, nowSec);
    const locked = c < f.minLead;
    if (locked) {
      ctx.fillStyle = "rgba(148,163,184,0.10)";
      ctx.fillRect(x, 0, g.colW, g.height);
    }
    for (let k = -g.rowsEach; k <= g.rowsEach; k++) {
      const row = centerRow + k;
      const y = yOfRow(g, row, centerRow);
      const cell = `${tCol}:${row}`;
      const tap = f.taps[cell];
      if (tap) continue; // drawn below
      if (locked) continue;
      const q = f.quotes.get(cell);
      ctx.fillStyle = q && !f.stale ? "#cbd5e1" : "#475569";
      ctx.fillText(q ? shortQuote(q, narrow) : q === null ? "—" : "", x + g.colW / 2, y + g.rowH / 2);
    }
    ctx.strokeStyle = "rgba(148,163,184,0.18)";
    ctx.beginPath();
    ctx.moveTo(x + 0.5, 0);
    ctx.lineTo(x + 0.5, g.height);
    ctx.stroke();
    if (locked) {
      // the word, written down the column: shading alone would tell it by colour only
      ctx.save();
      ctx.translate(x + g.colW / 2, g.top + g.rowH * 2);
      ctx.rotate(Math.PI / 2);
      ctx.fillStyle = "#94a3b8";
      ctx.fillText("locked", 0, 0);
      ctx.restore();
    }
  }

  // own bets, including those whose window is running or past (they slide into the history)
  const pulse = 0.45 + 0.35 * Math.sin(t / 160);
  for (const tap of Object.values(f.taps)) {
    const [ts, rs] = tap.cell.split(":");
    const tCol = Number(ts);
    const row = Number(rs);
    const x = xOf(g, tCol, nowSec);
    if (x + g.colW < 0 || x > g.width || Math.abs(row - centerRow) > g.rowsEach) continue;
    const y = yOfRow(g, row, centerRow);
    ctx.globalAlpha = tap.state === "pending" || tap.state === "sending" ? pulse : 0.9;
    ctx.fillStyle = STATE_FILL[tap.state];
    ctx.fillRect(x + 1, y + 1, g.colW - 2, g.rowH - 2);
    ctx.globalAlpha = 1;
    if (tap.state === "unknown") {
      ctx.strokeStyle = "#f5f3ff";
      ctx.setLineDash([3, 3]);
      ctx.strokeRect(x + 2, y + 2, g.colW - 4, g.rowH - 4);
      ctx.setLineDash([]);
    }
    ctx.fillStyle = "#0b1220";
    ctx.fillText(STATE_MARK[tap.state], x + g.colW / 2, y + g.rowH / 2);
  }

  // the price line: history left of "now" (from the last price before its left edge: with no newer
  // price, e.g. while the socket is down, the last one stays drawn), extended to now — dashed, with a
  // hollow dot, once that price is not live
  const fromMs = (nowSec - g.histW / g.pxPerSec - 1) * 1000;
  ctx.strokeStyle = "#facc15";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  let lastX = 0;
  let lastY = 0;
  for (let k = f.series.indexFrom(fromMs); k < f.series.length; k++) {
    lastX = xOf(g, f.series.tsAt(k) / 1000, nowSec);
    lastY = yOfCents(g, f.series.centsAt(k), centerRow);
    if (started) ctx.lineTo(lastX, lastY);
    else ctx.moveTo(lastX, lastY);
    started = true;
  }
  if (started) {
    if (f.priceStale) {
      ctx.stroke();
      ctx.beginPath();
      ctx.setLineDash([4, 4]);
      ctx.moveTo(Math.min(lastX, g.histW), lastY);
    }
    ctx.lineTo(g.histW, lastY);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.arc(g.histW, lastY, 4, 0, Math.PI * 2);
    if (f.priceStale) {
      ctx.fillStyle = "#0b1220";
      ctx.fill();
      ctx.stroke();
    } else {
      ctx.fillStyle = "#facc15";
      ctx.fill();
    }
  }
  ctx.lineWidth = 1;

  // the price axis, in the history left of "now" (no cells there): each band edge's price, on its edge.
  // Over the price line, each with a rim of the background: the line always runs through the labels
  // around the current price, and on a phone's narrow strip it would make them unreadable.
  ctx.font = AXIS_FONT;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 3;
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#0b1220";
  ctx.fillStyle = "#94a3b8";
  for (const e of f.edges) {
    ctx.fillRect(0, e.y - 0.5, 4, 1);
    ctx.strokeText(e.text, 6, e.y);
    ctx.fillText(e.text, 6, e.y);
  }
  ctx.lineWidth = 1;

  ctx.strokeStyle = "rgba(250,204,21,0.5)";
  ctx.beginPath();
  ctx.moveTo(g.histW + 0.5, 0);
  ctx.lineTo(g.histW + 0.5, g.height);
  ctx.stroke();

  // the time axis, a strip of its own over the bands: each window's start as the cells name it (UTC)
  const widths = axisMetrics(ctx);
  ctx.fillStyle = "#020617";
  ctx.fillRect(0, 0, g.width, g.top);
  ctx.font = AXIS_FONT;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#94a3b8";
  ctx.fillText("UTC", 4, g.top / 2);
  for (const l of columnTimeLabels(g, nowSec, widths.time, widths.utc + 10)) {
    ctx.fillRect(l.x, 0, 1, g.top);
    ctx.fillText(l.text, l.x + 3, g.top / 2);
  }
}

export function Grid({ state, series, onTap, focusRequest }: Props) {
  const wrap = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const layer = useRef<HTMLDivElement>(null);
  const [size, setSize] = useState({ w: 0, h: 0 });
  const settings = state.settings;
  const quotes = useMemo(() => quoteMap(state), [state.grid]);
  const stepCents = settings ? parsePriceCents(settings.price_step) : 1000n;
  const centerRow =
    state.grid?.current_row ??
    (state.price ? Number(parsePriceCents(state.price.price) / stepCents) : 0);
  const g = settings && size.w > 0 ? geometry(size.w, size.h, settings, Number(stepCents)) : null;
  const edges = useMemo(
    () => (g ? rowEdgeLabels(g, centerRow, stepCents, AXIS_PX) : []),
    // g is rebuilt each render; these are its inputs
    [size.w, size.h, settings, centerRow, stepCents],
  );
  const nowSecOf = () => (Date.now() + state.clockOffsetMs) / 1000;
  const [layerCol, setLayerCol] = useState(() => (settings ? columnStart(nowSecOf(), settings.column_seconds) : 0));
  const [stale, setStale] = useState(false);
  /** The cell the keyboard is on (the layer's tab stop); null until a cell gets the focus. */
  const [focusCell, setFocusCell] = useState<string | null>(null);

  // What the animation loop reads: the latest props without restarting the loop.
  const frame = useRef<Frame | null>(null);
  frame.current =
    g && settings
      ? { g, edges, nowSec: 0, centerRow, quotes, taps: state.taps, settings, series, minLead: settings.min_lead_columns, stale, priceStale: false }
      : null;
  // Read by the animation loop, which checks every frame whether the quotes have gone out of date.
  const latest = useRef(state);
  latest.current = state;
  const staleRef = useRef(stale);
  staleRef.current = stale;
  const offset = useRef(state.clockOffsetMs);
  offset.current = state.clockOffsetMs;
  const layerColRef = useRef(layerCol);
  layerColRef.current = layerCol;

  // A sign-in removes the button that had the focus, and the browser puts it on <body>: a keyboard user
  // would start again from the top of the page. The grid's tab stop takes it, once the grid is shown.
  const focusHandled = useRef(0);
  const layerShown = g !== null;
  useEffect(() => {
    if (focusRequest === focusHandled.current || !layerShown) return;
    focusHandled.current = focusRequest;
    const active = document.activeElement;
    if (active && active !== document.body) return; // the trader is somewhere already: left there
    layer.current?.querySelector<HTMLElement>('[tabindex="0"]')?.focus({ preventScroll: true });
  }, [focusRequest, layerShown]);

  useEffect(() => {
    const el = wrap.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setSize({ w: el.clientWidth, h: el.clientHeight }));
    ro.observe(el);
    setSize({ w: el.clientWidth, h: el.clientHeight });
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    const c = canvas.current;
    if (!c || !g) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.round(g.width * dpr);
    c.height = Math.round(g.height * dpr);
    c.getContext("2d")?.setTransform(dpr, 0, 0, dpr, 0, 0);
  }, [g?.width, g?.height]);

  useEffect(() => {
    let raf = 0;
    let prev = 0;
    const loop = (t: number) => {
      raf = requestAnimationFrame(loop);
      const f = frame.current;
      const ctx = canvas.current?.getContext("2d");
      if (!f || !ctx) return;
      const start = performance.now();
      const nowSec = (Date.now() + offset.current) / 1000;
      f.nowSec = nowSec;
      f.priceStale = priceIsStale(latest.current, Date.now());
      draw(ctx, f, t);
      const col = columnStart(nowSec, f.g.columnSeconds);
      if (col !== layerColRef.current) setLayerCol(col);
      const isStale = quotesStale(latest.current, Date.now());
      if (isStale !== staleRef.current) setStale(isStale);
      if (layer.current) {
        const dx = xOf(f.g, layerColRef.current, nowSec);
        layer.current.style.transform = `translate3d(${dx.toFixed(1)}px,0,0)`;
      }
      record(perf.draw, performance.now() - start);
      if (prev) record(perf.gaps, t - prev);
      prev = t;
    };
    raf = requestAnimationFrame(loop);
    return () => cancelAnimationFrame(raf);
  }, []);

  return (
    <div className="grid-wrap" ref={wrap}>
      <canvas ref={canvas} className="grid-canvas" aria-hidden="true" style={{ width: size.w, height: size.h }} />
      {g && settings && (
        <CellLayer
          layerRef={layer}
          g={g}
          settings={settings}
          layerCol={layerCol}
          centerRow={centerRow}
          quotes={quotes}
          taps={state.taps}
          stepCents={stepCents}
          stale={stale}
          focusCell={focusCell}
          onFocusCell={setFocusCell}
          onTap={onTap}
        />
      )}
      {stale && state.grid && (
        <p className="grid-stale" role="status" data-testid="quotes-stale">
          Quotes out of date: no update for a few seconds. Taps are paused until fresh quotes arrive.
        </p>
      )}
    </div>
  );
}

interface LayerProps {
  layerRef: React.RefObject<HTMLDivElement | null>;
  g: Geometry;
  settings: GridSettings;
  layerCol: number;
  centerRow: number;
  quotes: QuoteMap;
  taps: Record<string, Tap>;
  stepCents: bigint;
  stale: boolean;
  /** The cell the keyboard is on, or null: it is the layer's one tab stop while it is shown. */
  focusCell: string | null;
  onFocusCell: (cell: string) => void;
  onTap: (cell: string) => void;
}

/** A blur this recent, with nowhere as its target, was the focused cell's removal. */
const REFOCUS_WITHIN_MS = 100;

function move(e: KeyboardEvent<HTMLDivElement>): void {
  const el = e.target as HTMLElement;
  const c = Number(el.dataset["col"]);
  const r = Number(el.dataset["row"]);
  if (Number.isNaN(c)) return;
  const d: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
  const step = d[e.key];
  if (!step) return;
  e.preventDefault();
  const next = e.currentTarget.querySelector<HTMLElement>(`[data-col="${c + step[0]}"][data-row="${r + step[1]}"]`);
  next?.focus();
}

export const CellLayer = memo(function CellLayer(p: LayerProps) {
  const { g, settings } = p;
  const cs = settings.column_seconds;
  const tabStop = tabStopCell(p.focusCell, p.layerCol, settings, p.centerRow);
  const { layerRef, focusCell, onFocusCell } = p;
  // The focused cell leaves the layer when its column has run out or the bands move with the price;
  // the browser then drops the focus on <body>, and a keyboard user would start again from the top.
  // Chrome reports that as a blur (no relatedTarget) during the removal, Firefox reports nothing: the
  // focus goes on to the nearest cell then, not when the trader had left the grid earlier.
  const blurredAt = useRef<number | null>(null);
  useLayoutEffect(() => {
    const el = layerRef.current;
    if (!el || !focusCell || el.querySelector(`[data-cell="${focusCell}"]`)) return;
    const active = document.activeElement;
    if (active && active !== document.body) return;
    const left = blurredAt.current;
    if (left !== null && performance.now() - left > REFOCUS_WITHIN_MS) return; // left the grid before
    const next = refocusCell(focusCell, p.layerCol, settings, p.centerRow);
    el.querySelector<HTMLElement>(`[data-cell="${next}"]`)?.focus({ preventScroll: true });
  }, [layerRef, focusCell, p.layerCol, p.centerRow, settings]);
  const onFocus = (e: FocusEvent<HTMLDivElement>) => {
    const cell = e.target.dataset["cell"];
    blurredAt.current = null;
    if (cell) onFocusCell(cell);
  };
  const onBlur = (e: FocusEvent<HTMLDivElement>) => {
    const to = e.relatedTarget;
    if (to instanceof Node && e.currentTarget.contains(to)) return; // from cell to cell
    // Elsewhere on the page: never pulled back. Nowhere (a removal, or out of the window): maybe.
    blurredAt.current = to ? -Infinity : performance.now();
  };
  const cells = [];
  for (let c = 0; c < g.columns; c++) {
    const t = p.layerCol + c * cs;
    for (let k = g.rowsEach; k >= -g.rowsEach; k--) {
      const row = p.centerRow + k;
      const cell = `${t}:${row}`;
      const q = p.quotes.get(cell);
      const tap = p.taps[cell];
      // By time as the canvas draws it: the last grid message may still quote a column that has just locked.
      const locked = c < settings.min_lead_columns || q === undefined;
      const parts = [`${fmtTime(t)} to ${fmtTime(t + cs)} UTC`, `band ${bandText(row, p.stepCents)}`];
      // A cell with a bet on it is named by the bet (its stake and multiplier), not by today's quote.
      const held = tap !== undefined && HOLDS_CELL.includes(tap.state);
      if (!held) parts.push(locked ? "locked" : q === null ? "not offered" : p.stale ? `multiplier ${q}, out of date` : `multiplier ${q}`);
      if (tap) {
        const won = tap.state === "won" && tap.payout ? `, paid ${tap.payout}` : "";
        parts.push(`your bet: ${tap.stake} at ${tap.multiplier}, ${STATE_LABEL[tap.state]}${won}${tap.reason ? ` (${tap.reason})` : ""}`);
      }
      cells.push(
        <button
          key={cell}
          type="button"
          className="cell"
          data-cell={cell}
          data-col={c}
          data-row={row}
          data-state={tap ? tap.state : locked ? "locked" : q === null ? "unquoted" : p.stale ? "stale" : "open"}
          data-history={tap ? tap.history.join(",") : undefined}
          aria-label={parts.join(", ")}
          aria-disabled={locked || q === null || p.stale || undefined}
          tabIndex={cell === tabStop ? 0 : -1}
          style={{ left: c * g.colW, top: yOfRow(g, row, p.centerRow), width: g.colW, height: g.rowH }}
          onClick={() => p.onTap(cell)}
        />,
      );
    }
  }
  return (
    <div
      className="cell-layer"
      ref={p.layerRef}
      role="group"
      aria-label="Betting grid: columns are time windows, rows are price bands; arrow keys move, Enter bets"
      onKeyDown={move}
      onFocus={onFocus}
      onBlur={onBlur}
    >
      {cells}
    </div>
  );
});
