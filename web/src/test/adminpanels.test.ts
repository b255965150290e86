// The console's panels as the operator reads them (rendered to static markup, no browser): a worker's
// reload marked on the charts and its zeros not taken for a quiet market, the halt state that Redis could
// not confirm, the last batch size with its time.
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Api } from "../api";
import { AdminConsole } from "../admin/console";
import { haltReadNote, lastBatch, measuredFrom, noteWorker, workerMarks } from "../admin/shape";
import { adminReducer, initialAdmin, type AdminState } from "../admin/state";
import { Betting, Taps, Writer } from "../components/admin/Console";
import { parseOverview, type BettingState, type Overview } from "../wire";
import overview from "./overview.json";

const full = parseOverview(overview);
const NOW_S = Math.floor(full.server_time / 1000);

/** An answer of worker `pid`, started at `sinceS` (Unix s), at `nowS`, with `accepted` taps per second
 * over the last `accepted.length` seconds up to `nowS`. */
function answer(pid: number, sinceS: number, nowS: number, accepted: number[]): Overview {
  const o = structuredClone(full);
  o.worker = pid;
  o.series_since = sinceS * 1000;
  o.server_time = nowS * 1000 + 500;
  o.taps = {
    start: nowS - accepted.length + 1,
    seconds: accepted.length,
    by_outcome: { accepted },
    totals: { accepted: accepted.reduce((a, b) => a + b, 0) },
  };
  o.writer.series = { at: [], commits: [], batch_mean: [], commit_p50_ms: [], commit_p99_ms: [], queue_depth: [] };
  o.feed.age_series = { at: [], sources: {} };
  return o;
}

describe("a worker's reload (SIGHUP) on the console", () => {
  // Worker 1 started long ago and counted 5 taps a second; worker 2 starts at NOW_S - 4 and answers the
  // next ?window=10 poll with 0 for the 5 seconds before its start.
  const old = answer(1, NOW_S - 86_400, NOW_S - 1, new Array<number>(20).fill(5));
  const reloaded = answer(2, NOW_S - 4, NOW_S, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
  let s: AdminState = adminReducer(initialAdmin, { type: "overview", overview: old, now: 1_000 });
  s = adminReducer(s, { type: "overview", overview: reloaded, now: 2_000 });

  it("keeps the old worker's counts for the seconds before the new one started", () => {
    const t = s.taps;
    expect(t?.start).toBe(NOW_S - 20);
    expect(t?.by_outcome["accepted"]).toEqual([...new Array<number>(16).fill(5), 1, 1, 1, 1, 1]);
  });

  it("remembers which workers answered, oldest start first, once each", () => {
    expect(s.workers).toEqual([
      { pid: 1, since: (NOW_S - 86_400) * 1000 },
      { pid: 2, since: (NOW_S - 4) * 1000 },
    ]);
    expect(noteWorker(s.workers, 2, (NOW_S - 4) * 1000)).toBe(s.workers);
    expect(measuredFrom(s.workers)).toBe(NOW_S - 86_400);
  });

  it("marks the new worker's start on the charts, saying whose figures come before it", () => {
    const marks = workerMarks(s.workers, NOW_S - 899, NOW_S + 1);
    expect(marks).toHaveLength(1); // the old worker started before the 15 minutes shown
    expect(marks[0]?.t).toBe(NOW_S - 4);
    expect(marks[0]?.text).toMatch(/^worker 2 started at \d\d:\d\d:\d\d UTC: this process's figures begin there; before it they are the previous worker's\.$/);
    const html = renderToStaticMarkup(createElement(Taps, { state: s, now: NOW_S }));
    expect(html).toContain('data-testid="worker-mark"');
    expect(html).toContain("worker 2 started</text>");
    expect(html).toContain('data-testid="plot-taps-marks"');
    expect(html).toMatch(/aria-label="Taps per second by outcome, 10 s means: [^"]*worker 2 started at/);
    const writer = renderToStaticMarkup(createElement(Writer, { state: s, o: reloaded, now: NOW_S }));
    expect(writer).toContain('data-testid="worker-mark"');
  });

  it("draws the seconds no worker counted as a gap, and marks a first worker that started in view", () => {
    const fresh = adminReducer(initialAdmin, {
      type: "overview",
      overview: answer(3, NOW_S - 95, NOW_S, new Array<number>(900).fill(0).map((_, i) => (i >= 805 ? 2 : 0))),
      now: 1,
    });
    const marks = workerMarks(fresh.workers, NOW_S - 899, NOW_S + 1);
    expect(marks.map((m) => m.text)).toEqual([
      expect.stringMatching(/before it they are not counted by any worker this console heard from\.$/),
    ]);
    const html = renderToStaticMarkup(createElement(Taps, { state: fresh, now: NOW_S }));
    const table = html.slice(html.indexOf("<tbody>"));
    // buckets wholly before the start: "—" (no figure); from its start on, the rate
    expect(table).toContain("<td>—</td>");
    expect(table).toContain("<td>2.00</td>");
  });
});

describe("the halt state the betting panel shows", () => {
  const admin = new AdminConsole(new Api("http://test", () => undefined), () => "token");
  const read = (b: Partial<BettingState>): BettingState => ({ ...full.betting, ...b });
  const panel = (b: BettingState) => renderToStaticMarkup(createElement(Betting, { admin, betting: b }));
  const at = Date.UTC(2026, 11, 7, 21, 0, 5);

  it("is plain while the server read it from Redis just now", () => {
    expect(haltReadNote(read({ read_at: at, read_age_s: 0.4, read_error: null }))).toBeNull();
    const html = panel(read({ read_at: at, read_age_s: 0.4, read_error: null }));
    expect(html).not.toContain('data-testid="betting-read"');
    expect(html).toContain('data-confirmed="true"');
    expect(html).toContain("Betting OPEN");
  });

  it("says it is unknown since the last read when Redis could not be read", () => {
    const b = read({ read_at: at, read_age_s: 42, read_error: "ConnectionError: Error 111 connecting to 127.0.0.1:6379." });
    expect(haltReadNote(b)).toEqual({
      level: "error",
      text: "Halt state unknown since 21:00:05 UTC (42 s ago): Redis could not be read (ConnectionError: Error 111 connecting to 127.0.0.1:6379.). Shown: the state read then; it may have changed.",
    });
    const html = panel(b);
    expect(html).toContain('data-testid="betting-read"');
    expect(html).toContain('data-confirmed="false"');
    expect(html).toContain("Betting OPEN (as of 21:00:05 UTC, unconfirmed since)");
  });

  it("says so when the reads have stopped, and when there has been none", () => {
    expect(haltReadNote(read({ read_at: at, read_age_s: 600, read_error: null }))?.text).toBe(
      "Halt state last read 21:00:05 UTC (10 min ago): the server's sampler has stopped re-reading it; it may have changed since.",
    );
    const none = read({ read_at: null, read_age_s: null, read_error: null });
    expect(haltReadNote(none)?.text).toBe("Halt state unknown: the server has not read it from Redis yet.");
    expect(panel(none)).toContain("? Betting UNKNOWN");
  });

  it("reads the switch's read time and error from the wire", () => {
    expect([full.betting.read_at, full.betting.read_age_s, full.betting.read_error]).toEqual([1795772800134, 0.558, null]);
    expect(full.series_since).toBe(1795772790111);
  });
});

describe("the writer's last batch size", () => {
  it("comes with the second it was measured in and its age", () => {
    const series = {
      at: [NOW_S - 300, NOW_S - 200, NOW_S - 1],
      commits: [3, 2, 0],
      batch_mean: [4.5, 2, null],
      commit_p50_ms: [1, 1, null],
      commit_p99_ms: [2, 2, null],
      queue_depth: [0, 0, 0],
    };
    expect(lastBatch(series)).toEqual({ mean: 2, at: NOW_S - 200 });
    expect(lastBatch(null)).toBeNull();
    const s = { ...initialAdmin, writer: series };
    const html = renderToStaticMarkup(createElement(Writer, { state: s, o: full, now: NOW_S }));
    const when = new Date((NOW_S - 200) * 1000).toISOString().slice(11, 19);
    expect(html).toMatch(new RegExp(`data-testid="batch-last"[^>]*>2 / 100 <span class="hint">\\(mean of ${when} UTC, 3 min ago\\)</span>`));
    const none = renderToStaticMarkup(createElement(Writer, { state: { ...s, writer: null }, o: full, now: NOW_S }));
    expect(none).toContain("(no commit in the last 15 minutes)");
  });
});
