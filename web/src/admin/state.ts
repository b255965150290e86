// The console's state in one place: a pure reducer over what the polls bring, plus a small store.
import type { AgeSeries, IntegrityRun, Overview, TapsPanel } from "../wire";
import { ReducerStore } from "../store";
import { mergeAges, mergeTaps, mergeWriter, type WriterSeries } from "./shape";

export type Access = "checking" | "allowed" | "forbidden";

export interface AdminState {
  access: Access;
  overview: Overview | null;
  /** The last 15 minutes, merged from the polls (the overview carries only the last few seconds). */
  taps: TapsPanel | null;
  writer: WriterSeries | null;
  /** Feed age per source, per second (the server samples it; the page need not have been open). */
  ages: AgeSeries | null;
  /** When the last poll answered (client ms) and the last failure, if the latest poll failed. */
  polledAt: number | null;
  error: string | null;
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
  polledAt: null,
  error: null,
  integrity: null,
  message: null,
};

export type AdminAction =
  | { type: "access"; access: Access }
  | { type: "overview"; overview: Overview; now: number }
  | { type: "pollFailed"; error: string }
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
        taps: mergeTaps(s.taps, o.taps),
        writer: mergeWriter(s.writer, o.writer.series),
        ages: mergeAges(s.ages, o.feed.age_series),
        polledAt: a.now,
        error: null,
        integrity: o.integrity,
      };
    }
    case "pollFailed":
      return { ...s, error: a.error };
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

/** The console's store: the trader app's store class with the console's state and reducer. */
export class AdminStore extends ReducerStore<AdminState, AdminAction> {
  constructor() {
    super(adminReducer, initialAdmin);
  }
}
