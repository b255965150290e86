// Small SVG plots for the console: a line chart over time and an exposure heat map. Each has a
// heading, a text summary (aria) and the numbers behind it in a table under a <details>.
import { useEffect, useRef, useState, type ReactNode, type RefObject } from "react";
import { displayMoney } from "../../money";
import { formatMoney } from "../../money";
import { heatLevel, HEAT_LEVELS, type Heat, type Mark, type Point } from "../../admin/shape";

export interface Line {
  name: string;
  points: Point[];
  color: string;
  /** SVG dash pattern: lines differ by pattern as well as colour. */
  dash?: string;
}

const H = 150;

/** The element's width in CSS pixels, followed as it resizes (plots draw at 1:1, text undistorted). */
function useWidth(fallback: number): [RefObject<HTMLDivElement | null>, number] {
  const ref = useRef<HTMLDivElement | null>(null);
  const [w, setW] = useState(fallback);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(([e]) => {
      if (e) setW(Math.max(200, Math.floor(e.contentRect.width)));
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return [ref, w];
}
const PAD = { l: 44, r: 8, t: 8, b: 20 };

function hhmm(t: number): string {
  return new Date(t * 1000).toISOString().slice(11, 19);
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** A polyline per run of non-null points (a gap is a gap, not a zero); a lone point is a dot. */
function paths(points: Point[], x: (t: number) => number, y: (v: number) => number): [number, number][][] {
  const out: [number, number][][] = [];
  let cur: [number, number][] = [];
  for (const p of points) {
    if (p.v === null) {
      if (cur.length) out.push(cur);
      cur = [];
      continue;
    }
    cur.push([x(p.t), y(p.v)]);
  }
  if (cur.length) out.push(cur);
  return out;
}

export function LineChart(props: {
  id: string;
  title: string;
  unit: string;
  lines: Line[];
  from: number;
  to: number;
  summary: string;
  /** Lowest top of the y axis (e.g. 1 so an idle chart is not all noise). */
  minTop?: number;
  /** Vertical markers (a worker's start: its per-process figures begin there), drawn and described. */
  marks?: Mark[];
}) {
  const { id, title, unit, lines, from, to } = props;
  const marks = props.marks ?? [];
  const described = marks.length ? `${props.summary}. ${marks.map((m) => m.text).join(" ")}` : props.summary;
  const [ref, W] = useWidth(560);
  let top = props.minTop ?? 1;
  for (const l of lines) for (const p of l.points) if (p.v !== null && p.v > top) top = p.v;
  const x = (t: number) => PAD.l + ((t - from) / Math.max(1, to - from)) * (W - PAD.l - PAD.r);
  const y = (v: number) => PAD.t + (1 - v / top) * (H - PAD.t - PAD.b);
  const times = lines[0]?.points.map((p) => p.t) ?? [];
  return (
    <figure className="plot" aria-labelledby={`${id}-t`} data-testid={id}>
      <figcaption id={`${id}-t`}>
        {title} <span className="unit">({unit})</span>
      </figcaption>
      <div ref={ref} className="plot-box">
      <svg width={W} height={H} viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${described}`}>
        <line x1={PAD.l} x2={W - PAD.r} y1={y(0)} y2={y(0)} className="axis" />
        <line x1={PAD.l} x2={W - PAD.r} y1={y(top)} y2={y(top)} className="gridline" />
        <text x={PAD.l - 4} y={y(top) + 4} className="tick" textAnchor="end">
          {fmt(top)}
        </text>
        <text x={PAD.l - 4} y={y(0)} className="tick" textAnchor="end">
          0
        </text>
        <text x={PAD.l} y={H - 4} className="tick">
          {hhmm(from)}
        </text>
        <text x={W - PAD.r} y={H - 4} className="tick" textAnchor="end">
          {hhmm(to)} UTC
        </text>
        {marks.map((m) => (
          <g key={`mark-${m.t}`} className="worker-mark" data-testid="worker-mark" data-t={m.t}>
            <line x1={x(m.t)} x2={x(m.t)} y1={PAD.t} y2={H - PAD.b} strokeDasharray="3 3" />
            <text x={x(m.t) + 3} y={PAD.t + 10}>
              {m.label}
            </text>
          </g>
        ))}
        {lines.map((l) =>
          paths(l.points, x, y).map((run, k) =>
            run.length === 1 ? (
              <circle key={`${l.name}-${k}`} cx={run[0]?.[0]} cy={run[0]?.[1]} r={2.5} fill={l.color} />
            ) : (
              <polyline
                key={`${l.name}-${k}`}
                points={run.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}
                fill="none"
                stroke={l.color}
                strokeWidth={1.6}
                strokeDasharray={l.dash}
              />
            ),
          ),
        )}
      </svg>
      </div>
      <ul className="legend">
        {lines.map((l) => (
          <li key={l.name}>
            <svg width="22" height="8" aria-hidden="true">
              <line x1="0" x2="22" y1="4" y2="4" stroke={l.color} strokeWidth={2} strokeDasharray={l.dash} />
            </svg>
            {l.name}
          </li>
        ))}
      </ul>
      {marks.length > 0 && (
        <ul className="marks" data-testid={`${id}-marks`}>
          {marks.map((m) => (
            <li key={m.t}>┆ {m.text}</li>
          ))}
        </ul>
      )}
      <details>
        <summary>Numbers</summary>
        <table>
          <caption className="sr-only">{title}</caption>
          <thead>
            <tr>
              <th scope="col">from (UTC)</th>
              {lines.map((l) => (
                <th scope="col" key={l.name}>
                  {l.name}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {times.map((t, i) => (
              <tr key={t}>
                <td>{hhmm(t)}</td>
                {lines.map((l) => {
                  const v = l.points[i]?.v;
                  return <td key={l.name}>{v === null || v === undefined ? "—" : fmt(v)}</td>;
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

const HEAT_FILL = ["transparent", "#1e3a8a", "#2563eb", "#b45309", "#c2410c", "#b91c1c"];

export function HeatMap({ heat, cellCap, columnSeconds }: { heat: Heat; cellCap: string; columnSeconds: number | null }) {
  const cw = 40;
  const rh = 20;
  const left = 64;
  const topPad = 18;
  const w = left + heat.columns.length * cw + 4;
  const h = topPad + heat.rows.length * rh + 4;
  const nonEmpty = heat.micros.flat().filter((v) => v > 0n).length;
  const summary = heat.rows.length
    ? `${nonEmpty} cells with open liability over ${heat.columns.length} columns; the largest ${displayMoney(formatMoney(heat.max))}.`
    : "No open liability.";
  let body: ReactNode;
  if (!heat.rows.length) body = <p className="hint">No open liability on the grid.</p>;
  else
    body = (
      <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label={`Open liability heat map: ${summary}`}>
        {heat.columns.map((t, c) => (
          <text key={t} x={left + c * cw + cw / 2} y={12} className="tick" textAnchor="middle">
            {new Date(t * 1000).toISOString().slice(14, 19)}
          </text>
        ))}
        {heat.rows.map((r, k) => (
          <text key={r} x={left - 4} y={topPad + k * rh + 13} className="tick" textAnchor="end">
            row {r}
          </text>
        ))}
        {heat.micros.map((col, c) =>
          col.map((v, k) => {
            const level = heatLevel(v, heat.max);
            const row = heat.rows[k] ?? 0;
            const col0 = heat.columns[c] ?? 0;
            return (
              <g key={`${c}-${k}`} data-testid={level ? "heat-cell" : undefined} data-cell={`${col0}:${row}`} data-level={level}>
                <rect x={left + c * cw} y={topPad + k * rh} width={cw - 2} height={rh - 2} fill={HEAT_FILL[level]} className="heat-rect">
                  <title>{`${col0}:${row}: ${displayMoney(formatMoney(v))}`}</title>
                </rect>
                {level > 0 && (
                  <text x={left + c * cw + cw / 2 - 1} y={topPad + k * rh + 13} textAnchor="middle" className="heat-mark">
                    {level}
                  </text>
                )}
              </g>
            );
          }),
        )}
      </svg>
    );
  return (
    <figure className="plot heat" aria-labelledby="heat-t" data-testid="heatmap">
      <figcaption id="heat-t">Open liability per cell (columns × price rows)</figcaption>
      {body}
      <p className="hint">
        Shade and digit 1–{HEAT_LEVELS}: fifths of the largest cell shown ({displayMoney(formatMoney(heat.max))}); the
        cap per cell is {displayMoney(cellCap)}.{columnSeconds ? ` Columns are ${columnSeconds} s wide.` : ""}
      </p>
    </figure>
  );
}

/** Horizontal bars of ratios (basis points) against a target line. */
export function ReturnBars({ rows, targetBp }: { rows: { label: string; bp: bigint | null }[]; targetBp: bigint }) {
  const w = 420;
  const rh = 20;
  const left = 110;
  let maxBp = (targetBp * 3n) / 2n;
  for (const r of rows) if (r.bp !== null && r.bp > maxBp) maxBp = r.bp;
  const x = (bp: bigint) => left + (Number(bp) / Number(maxBp)) * (w - left - 60);
  const h = rows.length * rh + 20;
  return (
    <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label="Realised return to players against the target" data-testid="return-plot">
      {rows.map((r, k) => (
        <g key={r.label}>
          <text x={left - 6} y={k * rh + 14} textAnchor="end" className="tick">
            {r.label}
          </text>
          {r.bp !== null && r.bp > 0n && (
            <rect x={left} y={k * rh + 4} width={Math.max(1, x(r.bp) - left)} height={rh - 8} className={r.bp > targetBp ? "bar over" : "bar"} />
          )}
          <text x={(r.bp !== null && r.bp > 0n ? x(r.bp) : left) + 4} y={k * rh + 14} className="tick">
            {r.bp === null ? "no bets" : `${(Number(r.bp) / 100).toFixed(2)} %${r.bp > targetBp ? " ▲ above target" : ""}`}
          </text>
        </g>
      ))}
      <line x1={x(targetBp)} x2={x(targetBp)} y1={0} y2={h - 14} className="target" strokeDasharray="4 3" />
      <text x={x(targetBp)} y={h - 2} textAnchor="middle" className="tick">
        target {(Number(targetBp) / 100).toFixed(2)} %
      </text>
    </svg>
  );
}
