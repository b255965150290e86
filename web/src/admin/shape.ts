// The console's data shaping, pure and unit-tested: rolling per-second series built from the small
// `?window=10` polls, time buckets for the plots, the exposure heat map's grid and scale, ratios as
// integer basis points. Money stays bigint micro-units; only plot coordinates are floats.
import { parseMoney } from "../money";
import type { AgeSeries, BettingState, ExposureColumn, TapsPanel, WeeksPanel, WriterPanel } from "../wire";

/** What the plots show: the last 15 minutes. */
export const KEEP_S = 900;

// ---- rolling series --------------------------------------------------------------------------------

/** Taps per second by outcome, merged by absolute second: `next` wins where they overlap (the
 * current second keeps growing), seconds older than `keep` before the newest are dropped.
 *
 * `sinceMs` is where `next`'s series begins (the answering worker's start, `series_since`): its
 * seconds before are 0 because that worker did not count them (a new worker after a SIGHUP), so there
 * the larger count is kept, `prev`'s from the previous worker, not overwritten by the new zeros. The
 * second the worker started in was seen only in part by each worker: the larger part is kept. */
export function mergeTaps(prev: TapsPanel | null, next: TapsPanel, keep = KEEP_S, sinceMs: number | null = null): TapsPanel {
  const end = Math.max(next.start + next.seconds, prev ? prev.start + prev.seconds : 0); // exclusive
  const start = Math.max(end - keep, Math.min(next.start, prev ? prev.start : next.start));
  const seconds = end - start;
  const outcomes = new Set([...Object.keys(next.by_outcome), ...(prev ? Object.keys(prev.by_outcome) : [])]);
  const by: Record<string, number[]> = {};
  for (const o of outcomes) {
    const out = new Array<number>(seconds).fill(0);
    for (const src of prev ? [prev, next] : [next]) {
      const series = src.by_outcome[o];
      const partial = src === next && sinceMs !== null; // next's seconds before sinceMs were not counted
      for (let i = 0; i < src.seconds; i++) {
        const k = src.start + i - start;
        if (k < 0 || k >= seconds) continue;
        const v = series?.[i] ?? 0;
        // next is applied after prev: it wins, but for the seconds its worker did not (fully) see
        out[k] = partial && (src.start + i) * 1000 < sinceMs ? Math.max(out[k] ?? 0, v) : v;
      }
    }
    if (out.some((n) => n > 0)) by[o] = out;
  }
  const totals: Record<string, number> = {};
  for (const [o, s] of Object.entries(by)) totals[o] = s.reduce((a, b) => a + b, 0);
  return { start, seconds, by_outcome: by, totals };
}

export type WriterSeries = WriterPanel["series"];

/** The writer's per-second samples merged by `at` (Unix s): `next` replaces equal seconds, older than
 * `keep` before the newest are dropped, the result sorted by time. */
export function mergeWriter(prev: WriterSeries | null, next: WriterSeries, keep = KEEP_S): WriterSeries {
  const rows = new Map<number, number>(); // at → index into a combined list
  const all: { src: WriterSeries; i: number }[] = [];
  for (const src of prev ? [prev, next] : [next]) {
    src.at.forEach((at, i) => {
      const k = rows.get(at);
      if (k === undefined) {
        rows.set(at, all.length);
        all.push({ src, i });
      } else all[k] = { src, i };
    });
  }
  const newest = Math.max(...rows.keys());
  const kept = [...rows.entries()].filter(([at]) => at > newest - keep).sort((a, b) => a[0] - b[0]);
  const out: WriterSeries = { at: [], commits: [], batch_mean: [], commit_p50_ms: [], commit_p99_ms: [], queue_depth: [] };
  for (const [at, k] of kept) {
    const r = all[k];
    if (!r) continue;
    out.at.push(at);
    out.commits.push(r.src.commits[r.i] ?? 0);
    out.batch_mean.push(r.src.batch_mean[r.i] ?? null);
    out.commit_p50_ms.push(r.src.commit_p50_ms[r.i] ?? null);
    out.commit_p99_ms.push(r.src.commit_p99_ms[r.i] ?? null);
    out.queue_depth.push(r.src.queue_depth[r.i] ?? 0);
  }
  return out;
}

// ---- buckets for the plots -------------------------------------------------------------------------

export interface Point {
  /** Unix seconds at the bucket's start. */
  t: number;
  /** null: no sample in the bucket (a gap is drawn, not a zero). */
  v: number | null;
}

/** Buckets of `bucketS` seconds from `from` (inclusive) to `to` (exclusive), aligned to multiples of
 * `bucketS`. */
export function bucketStarts(from: number, to: number, bucketS: number): number[] {
  const first = Math.floor(from / bucketS) * bucketS;
  const out: number[] = [];
  for (let t = first; t < to; t += bucketS) out.push(t);
  return out;
}

/** Mean rate per second of a dense per-second count series (`start` = Unix s of values[0]) in each
 * bucket: the bucket's sum over its seconds. Seconds outside the series count as 0, except buckets
 * that end before `measuredFrom` (Unix s; see `measuredFrom`): nobody counted them, a gap, not a 0. */
export function bucketRate(
  start: number,
  values: number[],
  from: number,
  to: number,
  bucketS: number,
  measuredFrom: number | null = null,
): Point[] {
  return bucketStarts(from, to, bucketS).map((t) => {
    if (measuredFrom !== null && t + bucketS <= measuredFrom) return { t, v: null };
    let sum = 0;
    for (let s = t; s < t + bucketS; s++) sum += values[s - start] ?? 0;
    return { t, v: sum / bucketS };
  });
}

/** The largest sample of a sparse series (`at` Unix s) in each bucket, null when it has none. */
export function bucketMax(at: number[], values: (number | null)[], from: number, to: number, bucketS: number): Point[] {
  const starts = bucketStarts(from, to, bucketS);
  const first = starts[0] ?? from;
  const out: Point[] = starts.map((t) => ({ t, v: null }));
  at.forEach((a, i) => {
    const v = values[i];
    if (v === null || v === undefined || a < first || a >= to) return;
    const p = out[Math.floor((a - first) / bucketS)];
    if (p && (p.v === null || v > p.v)) p.v = v;
  });
  return out;
}

// ---- which worker answered: per-process series begin at its start ------------------------------------

/** A worker the console has heard from: its pid and its start (the overview's `series_since`, Unix ms),
 * where its per-process series (taps, writer, the feed as it sees it) begin. */
export interface WorkerStart {
  pid: number | null;
  since: number;
}

/** More than this many reloads within the plots' 15 minutes is not expected: the oldest are let go. */
export const WORKERS_KEPT = 50;

/** The workers heard from, oldest start first, with the one that answered this poll. */
export function noteWorker(prev: WorkerStart[], pid: number | null, since: number): WorkerStart[] {
  if (prev.some((w) => w.pid === pid && w.since === since)) return prev;
  return [...prev, { pid, since }].sort((a, b) => a.since - b.since).slice(-WORKERS_KEPT);
}

/** The first second (Unix s) a worker the console heard from counted taps in (null: none yet). The
 * merged series' zeros before it were counted by nobody the console knows of: drawn as a gap. */
export function measuredFrom(workers: WorkerStart[]): number | null {
  const first = workers[0];
  return first === undefined ? null : Math.floor(first.since / 1000);
}

/** A vertical marker on a time chart. */
export interface Mark {
  /** Unix seconds (fractional). */
  t: number;
  label: string;
  /** What it means, for the operator and a screen reader. */
  text: string;
}

/** The worker starts inside a chart's span [from, to) (Unix s): where the per-process figures change
 * hands, so a drop to zero there reads as a reload, not a market event. */
export function workerMarks(workers: WorkerStart[], from: number, to: number): Mark[] {
  const out: Mark[] = [];
  workers.forEach((w, i) => {
    const t = w.since / 1000;
    if (t < from || t >= to) return;
    const who = `worker ${w.pid ?? "?"}`;
    const before = i > 0 ? "the previous worker's" : "not counted by any worker this console heard from";
    out.push({
      t,
      label: `${who} started`,
      text: `${who} started at ${utcTime(w.since)}: this process's figures begin there; before it they are ${before}.`,
    });
  });
  return out;
}

// ---- the writer's last batch ------------------------------------------------------------------------

/** The mean batch size of the last sampled second with commits, and that second (Unix s); null when no
 * second of the kept series had one. */
export function lastBatch(w: WriterSeries | null): { mean: number; at: number } | null {
  if (!w) return null;
  for (let i = w.at.length - 1; i >= 0; i--) {
    const mean = w.batch_mean[i];
    const at = w.at[i];
    if (mean !== null && mean !== undefined && at !== undefined) return { mean, at };
  }
  return null;
}

// ---- feed age per source: the server's per-second samples -------------------------------------------

/** Feed ages per source merged by `at` (Unix s) like the writer's samples: `next` replaces equal
 * seconds, older than `keep` before the newest are dropped, sorted by time. A source missing from a
 * poll is null in that poll's seconds (a gap in the plot, not a zero). */
export function mergeAges(prev: AgeSeries | null, next: AgeSeries, keep = KEEP_S): AgeSeries {
  const rows = new Map<number, { src: AgeSeries; i: number }>();
  for (const src of prev ? [prev, next] : [next]) src.at.forEach((at, i) => rows.set(at, { src, i }));
  if (rows.size === 0) return { at: [], sources: {} };
  const newest = Math.max(...rows.keys());
  const kept = [...rows.entries()].filter(([at]) => at > newest - keep).sort((a, b) => a[0] - b[0]);
  const names = new Set([...Object.keys(next.sources), ...(prev ? Object.keys(prev.sources) : [])]);
  const sources: Record<string, (number | null)[]> = {};
  for (const n of names) sources[n] = kept.map(([, r]) => r.src.sources[n]?.[r.i] ?? null);
  return { at: kept.map(([at]) => at), sources };
}

// ---- the exposure heat map -------------------------------------------------------------------------

export interface Heat {
  columns: number[];
  /** Rows top to bottom (highest price band first). */
  rows: number[];
  /** micros[c][r]: open potential payout of cell (columns[c], rows[r]) in micro-units. */
  micros: bigint[][];
  max: bigint;
}

/** The grid of the columns with their exposure: every row that holds liability in any column, plus
 * `pad` rows around them so a lone cell has context; rows are listed top (high) to bottom. */
export function heatGrid(columns: ExposureColumn[], pad = 1): Heat {
  const rowsWith = new Set<number>();
  for (const c of columns) for (const r of Object.keys(c.cells)) rowsWith.add(Number(r));
  const rows: number[] = [];
  if (rowsWith.size) {
    const lo = Math.min(...rowsWith) - pad;
    const hi = Math.max(...rowsWith) + pad;
    for (let r = hi; r >= lo; r--) rows.push(r);
  }
  let max = 0n;
  const micros = columns.map((c) =>
    rows.map((r) => {
      const m = c.cells[String(r)];
      const v = m === undefined ? 0n : parseMoney(m);
      if (v > max) max = v;
      return v;
    }),
  );
  return { columns: columns.map((c) => c.t_start), rows, micros, max };
}

export const HEAT_LEVELS = 5;

/** 0 for an empty cell, else 1..levels: the share of `max` rounded up, so any liability is visible. */
export function heatLevel(v: bigint, max: bigint, levels = HEAT_LEVELS): number {
  if (v <= 0n || max <= 0n) return 0;
  const l = (v * BigInt(levels) + max - 1n) / max;
  return Number(l > BigInt(levels) ? BigInt(levels) : l);
}

// ---- ratios ----------------------------------------------------------------------------------------

/** A ratio string with up to 4 decimals ("0.95", "-0.1234", "1.2") as integer basis points. */
export function ratioBp(s: string): bigint {
  const neg = s.startsWith("-");
  const m = /^(0|[1-9][0-9]*)(?:\.([0-9]{1,4}))?$/.exec(neg ? s.slice(1) : s);
  if (!m) throw new RangeError(`not a ratio: ${s}`);
  const bp = BigInt(m[1] ?? "0") * 10_000n + BigInt((m[2] ?? "").padEnd(4, "0"));
  return neg ? -bp : bp;
}

/** Basis points as a percentage with two decimals: 9500n → "95.00 %". */
export function pct(bp: bigint): string {
  const neg = bp < 0n;
  const a = neg ? -bp : bp;
  return `${neg ? "−" : ""}${(a / 100n).toString()}.${(a % 100n).toString().padStart(2, "0")} %`;
}

/** Money share of a cap in basis points (floored), from micro-units. */
export function shareBp(part: bigint, whole: bigint): bigint {
  return whole > 0n ? (part * 10_000n) / whole : 0n;
}

// ---- how old a panel's figures are -----------------------------------------------------------------

/** Unix ms as "HH:MM:SS UTC" ("—" for null). */
export function utcTime(ms: number | null): string {
  return ms === null ? "—" : new Date(ms).toISOString().slice(11, 19) + " UTC";
}

/** A duration for the operator: "12 s", "4 min", "3 h". */
export function ago(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h`;
}

/** The server's console worker samples the feed sources and the writer once a second; samples older
 * than this (at the answer's `server_time`) mean it has stopped, and their figures are old. */
export const SAMPLE_STALE_S = 3;

/** A warning when `what` was last sampled (Unix ms, null: never) well before the answer: the ages,
 * prices and latencies shown are from then, though the poll itself is fresh. */
export function samplerNote(what: string, sampledAtMs: number | null, serverMs: number): string | null {
  if (sampledAtMs === null) return `${what}: not sampled yet by the server.`;
  const lag = (serverMs - sampledAtMs) / 1000;
  if (lag <= SAMPLE_STALE_S) return null;
  return `${what} last sampled ${ago(lag)} ago (${utcTime(sampledAtMs)}): the server's sampler has stopped, these figures are from then.`;
}

/** What the betting panel says of the halt state it shows: the answering worker's copy of the switch,
 * re-read from Redis each second. Not read yet, a read that failed, or reads that stopped: the state
 * shown is unknown, or unconfirmed since `read_at`, and may have changed. null: read just now. */
export function haltReadNote(b: BettingState): { level: "warn" | "error"; text: string } | null {
  if (b.read_at === null)
    return {
      level: "error",
      text: `Halt state unknown: the server has not read it from Redis yet${b.read_error ? ` (${b.read_error})` : ""}.`,
    };
  const since = `${utcTime(b.read_at)} (${ago(b.read_age_s ?? 0)} ago)`;
  if (b.read_error)
    return {
      level: "error",
      text: `Halt state unknown since ${since}: Redis could not be read (${b.read_error}). Shown: the state read then; it may have changed.`,
    };
  if ((b.read_age_s ?? 0) > SAMPLE_STALE_S)
    return {
      level: "warn",
      text: `Halt state last read ${since}: the server's sampler has stopped re-reading it; it may have changed since.`,
    };
  return null;
}

/** What the weeks panel says of its archived weeks: the server lists the archive target in the
 * background, so they are as of `listed_at`, possibly unknown, possibly after a failed attempt. */
export function weeksNote(w: WeeksPanel): { level: "ok" | "warn" | "error"; text: string } {
  const retry = w.refreshing ? "retrying now" : "retried every 30 s";
  if (w.listed_at === null) {
    if (w.error) return { level: "error", text: `Archive listing failed: ${w.error}. Archived weeks unknown (${retry}).` };
    return { level: "warn", text: "Listing the archive… archived weeks not known yet." };
  }
  const asOf = `as of ${utcTime(w.listed_at)} (${ago(w.age_s ?? 0)} ago)`;
  if (w.error) return { level: "error", text: `Archive listing failed: ${w.error}. Archived weeks below are ${asOf}; ${retry}.` };
  return { level: "ok", text: `Archived weeks ${asOf}${w.refreshing ? ", refreshing" : ""}.` };
}
