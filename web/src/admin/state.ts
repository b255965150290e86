// The console's state in one place: a pure reducer over what the polls bring, plus a small store.
// How old the figures on screen are is derived here too (`freshness`), from the client's clock ticks,
// so a poll that never answers still shows the operator that the numbers have stopped moving.
import type { AgeSeries, IntegrityRun, Overview, TapsPanel } from "../wire";
import { ReducerStore } from "../store";
import { KEEP_S, mergeAges, mergeTaps, mergeWriter, noteWorker, type WorkerStart, type WriterSeries } from "./shape";

export type Access = "checking" | "allowed" | "forbidden";

/** The console polls each second: figures older than this are flagged as old. */
export const STALE_MS = 3000;

export interface AdminState {
  access: Access;
  overview: Overview | null;
  /** The last 15 minutes, merged from the polls (the overview carries only the last few seconds). */
  taps: TapsPanel | null;
  writer: WriterSeries | null;
  /** Feed age per source, per second (the server samples it; the page need not have been open). */
  ages: AgeSeries | null;
  /** The workers that answered, by start (oldest first): per-process series change hands at a start
   *  (a SIGHUP reload), which the merges respect and the charts mark. */
  workers: WorkerStart[];
  /** When the last poll answered (client ms) and the last failure, if the latest poll failed. */
  polledAt: number | null;
  error: string | null;
  /** The client's clock at the last tick, answer or failure (ms): what ages on screen are measured at. */
  now: number | null;
  integrity: IntegrityRun | null;
  /** A message after an action (halt, reopen, integrity-check), for the live region. */
  message: { text: string; level: "ok" | "error" } | null;
}

export const initialAdmin: AdminState = {
  access: "checking",
  overview: null,
  taps: null,
  writer: null,
  ages: null,
  workers: [],
  polledAt: null,
  error: null,
  now: null,
  integrity: null,
  message: null,
};

export type AdminAction =
  | { type: "access"; access: Access }
  | { type: "overview"; overview: Overview; now: number }
  | { type: "pollFailed"; error: string; now: number }
  | { type: "tick"; now: number }
  | { type: "integrity"; run: IntegrityRun | null }
  | { type: "message"; text: string; level: "ok" | "error" }
  | { type: "clearMessage" }
  | { type: "reset" };

export function adminReducer(s: AdminState, a: AdminAction): AdminState {
  switch (a.type) {
    case "access":
      return { ...s, access: a.access };
    case "overview": {
      const o = a.overview;
      return {
        ...s,
        access: "allowed",
        overview: o,
        taps: mergeTaps(s.taps, o.taps, KEEP_S, o.series_since),
        workers: noteWorker(s.workers, o.worker, o.series_since),
        writer: mergeWriter(s.writer, o.writer.series),
        ages: mergeAges(s.ages, o.feed.age_series),
        polledAt: a.now,
        now: a.now,
        error: null,
        integrity: o.integrity,
      };
    }
    case "pollFailed":
      return { ...s, error: a.error, now: a.now };
    case "tick":
      return s.now === a.now ? s : { ...s, now: a.now };
    case "integrity":
      return { ...s, integrity: a.run };
    case "message":
      return { ...s, message: { text: a.text, level: a.level } };
    case "clearMessage":
      return s.message ? { ...s, message: null } : s;
    case "reset":
      return initialAdmin;
  }
}

export interface Freshness {
  /** The figures are older than `STALE_MS`: say so, loudly. */
  stale: boolean;
  /** Whole seconds since the last answer (null: none yet). */
  ageS: number | null;
  /** What the operator reads (changes each second while stale). */
  text: string;
  /** The same without the growing age, for a screen reader's live region (announced when it changes). */
  spoken: string;
}

/** How old the figures on screen are, and why, in words for the operator. */
export function freshness(s: AdminState): Freshness {
  if (s.polledAt === null) {
    const text = s.error ? `No data yet: ${s.error}` : "No data yet.";
    return { stale: false, ageS: null, text, spoken: text };
  }
  const ageMs = Math.max(0, (s.now ?? s.polledAt) - s.polledAt);
  const ageS = Math.floor(ageMs / 1000);
  if (ageMs <= STALE_MS) return { stale: false, ageS, text: "Live.", spoken: "Live." };
  const why = s.error ? `server not answering (last refresh: ${s.error})` : "waiting for the server's answer";
  return {
    stale: true,
    ageS,
    text: `Data ${ageS} s old — ${why}. Every figure below is from then; still retrying.`,
    spoken: `The console's figures are old — ${why}.`,
  };
}

/** The `?window=` for the next poll: the full 15 minutes at first, then enough seconds to cover the time
 * since the last answer (2 s spare), never under 10. After a gap of a minute the short 10 s window left
 * the missing seconds out, and the merged taps series counted them as 0 taps: a quiet minute that was
 * never measured. */
export function pollWindow(polledAt: number | null, now: number): number {
  if (polledAt === null) return 900;
  const gapS = Math.ceil(Math.max(0, now - polledAt) / 1000) + 2;
  return Math.min(900, Math.max(10, gapS));
}

/** The console's store: the trader app's store class with the console's state and reducer. */
export class AdminStore extends ReducerStore<AdminState, AdminAction> {
  constructor() {
    super(adminReducer, initialAdmin);
  }
}
