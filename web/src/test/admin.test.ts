import { describe, expect, it } from "vitest";
import { adminReducer, initialAdmin } from "../admin/state";
import {
  KEEP_S,
  bucketMax,
  bucketRate,
  bucketStarts,
  heatGrid,
  heatLevel,
  mergeTaps,
  mergeAges,
  mergeWriter,
  pct,
  ratioBp,
  shareBp,
} from "../admin/shape";
import { bettingMessage } from "../admin/console";
import { parseBettingActionResult, parseOverview, WireError, type ExposureColumn, type TapsPanel } from "../wire";
import overview from "./overview.json";

const taps = (start: number, by: Record<string, number[]>): TapsPanel => {
  const seconds = Object.values(by)[0]?.length ?? 0;
  const totals: Record<string, number> = {};
  for (const [k, v] of Object.entries(by)) totals[k] = v.reduce((a, b) => a + b, 0);
  return { start, seconds, by_outcome: by, totals };
};

describe("the overview wire format", () => {
  it("parses a real answer of GET /api/v1/admin/overview (captured from gunicorn)", () => {
    const o = parseOverview(overview);
    expect(o.feed.sources[0]?.source).toBe("sim");
    expect(o.betting.actions.map((a) => a.action)).toEqual(["reopen", "halt"]);
    expect(o.exposure.largest_cells.length).toBeGreaterThan(0);
    expect(o.integrity?.state).toBe("ok");
    expect(o.house.target_return).toBe("0.95");
  });
  it("refuses money that is a number, and unknown run states", () => {
    const bad = structuredClone(overview) as { exposure: { total: unknown }; integrity: { state: string } };
    bad.exposure.total = 11.68;
    expect(() => parseOverview(bad)).toThrow(WireError);
    const bad2 = structuredClone(overview) as { integrity: { state: string } };
    bad2.integrity.state = "sleeping";
    expect(() => parseOverview(bad2)).toThrow(WireError);
  });
  it("reads the feed's age series per source, and refuses one whose lengths disagree", () => {
    const o = parseOverview(overview);
    expect(o.feed.age_series).toEqual({ at: [1795772796, 1795772798, 1795772799, 1795772800], sources: { sim: [null, 0.412, 0.09, 0.193] } });
    const bad = structuredClone(overview) as { feed: { age_series: { sources: Record<string, unknown> } } };
    bad.feed.age_series.sources["sim"] = [0.1];
    expect(() => parseOverview(bad)).toThrow(WireError);
    const bad2 = structuredClone(overview) as { feed: { age_series: { sources: Record<string, unknown> } } };
    bad2.feed.age_series.sources["sim"] = ["0.1", 1, 2, 3];
    expect(() => parseOverview(bad2)).toThrow(WireError);
  });
});

describe("halting and reopening", () => {
  const state = {
    open: false,
    halted: true,
    reason: "feed",
    by: "0xab",
    at: 1,
    breaker_open: false,
    read_at: 1,
    read_age_s: 0,
    read_error: null,
    actions: [],
  };
  it("tells the operator when the action is in effect but missing from the audit log", () => {
    expect(bettingMessage({ ...state, recorded: true })).toEqual({ level: "ok", text: "Betting halted: feed" });
    const unrecorded = bettingMessage({ ...state, recorded: false });
    expect(unrecorded.level).toBe("error");
    expect(unrecorded.text).toMatch(/^Betting halted: feed — in effect, but NOT recorded in the audit log/);
  });
  it("reads `recorded` from the answer, and refuses an answer without it", () => {
    expect(parseBettingActionResult({ ...state, recorded: false }).recorded).toBe(false);
    expect(() => parseBettingActionResult(state)).toThrow(WireError);
  });
});

describe("rolling series", () => {
  it("merges taps by absolute second; the newer poll wins the overlap; keeps the window", () => {
    const a = taps(100, { accepted: [1, 2, 3, 4] }); // 100..103
    const b = taps(102, { accepted: [5, 6, 7], betting_halted: [0, 1, 0] }); // 102..104
    const m = mergeTaps(a, b);
    expect(m.start).toBe(100);
    expect(m.seconds).toBe(5);
    expect(m.by_outcome["accepted"]).toEqual([1, 2, 5, 6, 7]);
    expect(m.by_outcome["betting_halted"]).toEqual([0, 0, 0, 1, 0]);
    expect(m.totals).toEqual({ accepted: 21, betting_halted: 1 });
    const kept = mergeTaps(m, taps(110, { accepted: [1] }), 7); // 104..110
    expect(kept.start).toBe(104);
    expect(kept.by_outcome["accepted"]).toEqual([7, 0, 0, 0, 0, 0, 1]);
    expect(kept.by_outcome["betting_halted"]).toBeUndefined(); // outside the window: gone
  });
  it("keeps the previous worker's taps for the seconds before a new worker started (a SIGHUP reload)", () => {
    // worker A counted 100..109; worker B started at 105.4 s and answers ?window=10 with 0 for the
    // seconds before it: not measured there, not quiet. Its count for 105 is the part after its start.
    const a = taps(100, { accepted: [3, 3, 3, 3, 3, 4, 0, 0, 0, 0] });
    const b = taps(101, { accepted: [0, 0, 0, 0, 1, 2, 2, 2, 2, 2], exposure_limit: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1] });
    const m = mergeTaps(a, b, KEEP_S, 105_400);
    expect(m.start).toBe(100);
    expect(m.by_outcome["accepted"]).toEqual([3, 3, 3, 3, 3, 4, 2, 2, 2, 2, 2]);
    expect(m.by_outcome["exposure_limit"]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    // the same worker's next poll: its counts win from its start on, as before
    const c = taps(102, { accepted: [0, 0, 0, 1, 5, 2, 2, 2, 2, 7] });
    expect(mergeTaps(m, c, KEEP_S, 105_400).by_outcome["accepted"]).toEqual([3, 3, 3, 3, 3, 4, 5, 2, 2, 2, 2, 7]);
    // no start given (an old server): next wins everywhere
    expect(mergeTaps(a, b).by_outcome["accepted"]).toEqual([3, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2]);
  });
  it("merges writer samples by time, sorted, newest replacing", () => {
    const s = (at: number[], p99: (number | null)[]) => ({
      at,
      commits: at.map(() => 1),
      batch_mean: at.map(() => 1),
      commit_p50_ms: p99,
      commit_p99_ms: p99,
      queue_depth: at.map(() => 0),
    });
    const m = mergeWriter(s([10, 12], [5, null]), s([12, 13], [25, 10]));
    expect(m.at).toEqual([10, 12, 13]);
    expect(m.commit_p99_ms).toEqual([5, 25, 10]);
    expect(mergeWriter(m, s([20], [1]), 8).at).toEqual([13, 20]);
  });
  it("appends the server's feed ages per source by second, the newer poll winning, within the window", () => {
    const full = { at: [100, 101, 103], sources: { sim: [0.2, 1.2, 0.1], binance: [null, 0.5, 2.5] } };
    const poll = { at: [103, 104], sources: { sim: [0.3, 0.4] } }; // binance gone from this worker
    const m = mergeAges(full, poll);
    expect(m.at).toEqual([100, 101, 103, 104]);
    expect(m.sources).toEqual({ sim: [0.2, 1.2, 0.3, 0.4], binance: [null, 0.5, null, null] });
    expect(mergeAges(m, { at: [110], sources: { sim: [0.9] } }, 8)).toEqual({
      at: [103, 104, 110],
      sources: { sim: [0.3, 0.4, 0.9], binance: [null, null, null] },
    });
    expect(mergeAges(null, { at: [], sources: {} })).toEqual({ at: [], sources: {} });
  });
});

describe("buckets", () => {
  it("aligns buckets to multiples of their width", () => {
    expect(bucketStarts(103, 131, 10)).toEqual([100, 110, 120, 130]);
  });
  it("turns per-second counts into a mean rate per bucket", () => {
    const pts = bucketRate(100, [10, 0, 0, 0, 0, 5, 5, 0, 0, 0, 3], 100, 120, 10);
    expect(pts).toEqual([
      { t: 100, v: 2 },
      { t: 110, v: 0.3 },
    ]);
  });
  it("leaves the buckets before any worker counted as gaps, not zeros", () => {
    const pts = bucketRate(100, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 100, 124, 10, 112);
    expect(pts).toEqual([
      { t: 100, v: null },
      { t: 110, v: 1 },
      { t: 120, v: 0 },
    ]);
  });
  it("takes the worst sample per bucket and leaves empty buckets as gaps", () => {
    const pts = bucketMax([100, 105, 125], [5, 25, null], 100, 130, 10);
    expect(pts).toEqual([
      { t: 100, v: 25 },
      { t: 110, v: null },
      { t: 120, v: null },
    ]);
  });
});

describe("the exposure heat map", () => {
  const col = (t: number, cells: Record<string, string>): ExposureColumn => ({
    t_start: t,
    placeable: true,
    closed: false,
    liability: "0",
    used: "0",
    cells,
  });
  it("lays out rows with liability (and one around) top to bottom, in micro-units", () => {
    const h = heatGrid([col(10, { "5": "4.0606" }), col(15, { "7": "0.000001" }), col(20, {})]);
    expect(h.columns).toEqual([10, 15, 20]);
    expect(h.rows).toEqual([8, 7, 6, 5, 4]);
    expect(h.micros[0]).toEqual([0n, 0n, 0n, 4_060_600n, 0n]);
    expect(h.micros[1]?.[1]).toBe(1n);
    expect(h.max).toBe(4_060_600n);
  });
  it("scales to levels 1–5 of the largest cell, never 0 for a cell with liability", () => {
    expect(heatLevel(0n, 100n)).toBe(0);
    expect(heatLevel(1n, 1_000_000_000n)).toBe(1);
    expect(heatLevel(20n, 100n)).toBe(1);
    expect(heatLevel(21n, 100n)).toBe(2);
    expect(heatLevel(100n, 100n)).toBe(5);
    expect(heatLevel(5n, 0n)).toBe(0);
  });
  it("has no rows without liability", () => {
    expect(heatGrid([col(10, {})]).rows).toEqual([]);
  });
});

describe("ratios", () => {
  it("reads 4-decimal ratios as integer basis points and prints percentages", () => {
    expect(ratioBp("0.95")).toBe(9500n);
    expect(ratioBp("1.2345")).toBe(12345n);
    expect(ratioBp("-0.0001")).toBe(-1n);
    expect(pct(9500n)).toBe("95.00 %");
    expect(pct(-1n)).toBe("−0.01 %");
    expect(shareBp(1n, 3n)).toBe(3333n);
    expect(() => ratioBp("0.12345")).toThrow(RangeError);
  });
});

describe("the console's state", () => {
  it("accumulates polls and clears the error", () => {
    const o = parseOverview(overview);
    let s = adminReducer(initialAdmin, { type: "pollFailed", error: "down", now: 1 });
    s = adminReducer(s, { type: "overview", overview: o, now: 1 });
    expect(s.access).toBe("allowed");
    expect(s.error).toBeNull();
    expect(s.taps?.totals).toEqual({ accepted: 3, betting_halted: 1 });
    expect(s.ages?.at).toEqual([1795772796, 1795772798, 1795772799, 1795772800]);
    expect(adminReducer(s, { type: "access", access: "forbidden" }).access).toBe("forbidden");
  });
  it("plots feed ages from the full window, then appends each ?window=10 poll", () => {
    const full = parseOverview(overview);
    let s = adminReducer(initialAdmin, { type: "overview", overview: full, now: 1 });
    const poll = structuredClone(full);
    poll.server_time += 2000;
    poll.feed.age_series = { at: [1795772800, 1795772801, 1795772802], sources: { sim: [0.5, 0.25, 0.125] } };
    s = adminReducer(s, { type: "overview", overview: poll, now: 2 });
    expect(s.ages).toEqual({
      at: [1795772796, 1795772798, 1795772799, 1795772800, 1795772801, 1795772802],
      sources: { sim: [null, 0.412, 0.09, 0.5, 0.25, 0.125] },
    });
  });
});
