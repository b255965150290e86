// The console's polling against a fake fetch that can answer, or take the request and never answer
// (aborted only by the caller's signal, as a real fetch is). Timers and Date are fake: nothing sleeps.
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Api, ApiFailure } from "../api";
import { AdminConsole, POLL_MS, POLL_TIMEOUT_MS } from "../admin/console";
import { ago, samplerNote, weeksNote } from "../admin/shape";
import { adminReducer, freshness, initialAdmin, pollWindow, STALE_MS, type AdminState } from "../admin/state";
import { Freshness, Weeks } from "../components/admin/Console";
import { parseOverview, WireError, type WeeksPanel } from "../wire";
import overview from "./overview.json";

const T0 = 1_795_772_800_692; // the fixture's server_time
const ME = { address: "0x1563915e194D8CfBA1943570603F7606A3115508", balance: "0", open_stakes: "0", open_bets: 0, is_admin: true };

interface Sent {
  path: string;
  method: string;
  signal: AbortSignal | null;
}

/** How the fake server treats each request: answer with a body, or hang until the caller aborts. */
type Reply = { status: number; body: unknown } | "hang";
let sent: Sent[] = [];
let reply: (path: string, method: string) => Reply = () => "hang";

function abortError(): DOMException {
  return new DOMException("The operation was aborted.", "AbortError");
}

function fakeFetch(input: string, init?: RequestInit): Promise<Response> {
  const url = new URL(input);
  const signal = init?.signal ?? null;
  const method = init?.method ?? "GET";
  sent.push({ path: url.pathname + url.search, method, signal });
  const r = reply(url.pathname, method);
  if (r === "hang")
    return new Promise((_, reject) => {
      if (signal?.aborted) reject(abortError());
      signal?.addEventListener("abort", () => reject(abortError()));
    });
  return Promise.resolve(new Response(JSON.stringify(r.body), { status: r.status }));
}

/** Let the awaited promises settle (fetch, json, the reducer) without moving the clock. */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

function overviewAt(ms: number): unknown {
  const o = structuredClone(overview) as { server_time: number };
  o.server_time = ms;
  return o;
}

function polls(): string[] {
  return sent.filter((s) => s.path.startsWith("/api/v1/admin/overview")).map((s) => s.path);
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  vi.setSystemTime(T0);
  sent = [];
  reply = (path) => (path === "/api/v1/me" ? { status: 200, body: ME } : "hang");
  vi.stubGlobal("fetch", fakeFetch);
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("a request with a timeout", () => {
  it("is aborted and fails as 'no answer' when the server takes it and never answers", async () => {
    const api = new Api("http://test", () => undefined);
    const call = api.call("GET", "/api/v1/admin/overview", parseOverview, { timeoutMs: 5000 });
    const failure = call.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(4999);
    expect(sent[0]?.signal?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const e = await failure;
    expect(e).toBeInstanceOf(ApiFailure);
    expect(e instanceof ApiFailure && [e.status, e.error.code, e.message]).toEqual([0, "timeout", "The server did not answer within 5 s."]);
    expect(sent[0]?.signal?.aborted).toBe(true);
  });
  it("also gives up on an answer whose body stops arriving", async () => {
    let stream: ReadableStreamDefaultController<Uint8Array> | null = null;
    vi.stubGlobal("fetch", (_input: string, init?: RequestInit) => {
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          stream = c;
          c.enqueue(new TextEncoder().encode('{"server_time": '));
        },
      });
      init?.signal?.addEventListener("abort", () => stream?.error(abortError()));
      return Promise.resolve(new Response(body, { status: 200 }));
    });
    const api = new Api("http://test", () => undefined);
    const failure = api.call("GET", "/x", (v) => v, { timeoutMs: 2000 }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(2000);
    const e = await failure;
    expect(e instanceof ApiFailure && e.error.code).toBe("timeout");
  });
  it("answers normally within the time, and a caller's abort is 'aborted', not a timeout", async () => {
    reply = () => ({ status: 200, body: { ok: 1 } });
    const api = new Api("http://test", () => undefined);
    await expect(api.call("GET", "/x", (v) => v, { timeoutMs: 1000 })).resolves.toEqual({ ok: 1 });
    reply = () => "hang";
    const ctl = new AbortController();
    const failure = api.call("GET", "/x", (v) => v, { timeoutMs: 1000, signal: ctl.signal }).catch((e: unknown) => e);
    ctl.abort();
    const e = await failure;
    expect(e instanceof ApiFailure && e.error.code).toBe("aborted");
  });
});

describe("the console's polling", () => {
  it("goes on polling past a request that never answers, and says how old the figures are", async () => {
    let answer = true;
    reply = (path) => {
      if (path === "/api/v1/me") return { status: 200, body: ME };
      if (!answer) return "hang";
      return { status: 200, body: overviewAt(Date.now()) };
    };
    const admin = new AdminConsole(new Api("http://test", () => undefined), () => "t".repeat(43));
    void admin.start();
    await settle();
    expect(admin.store.get().polledAt).toBe(T0);
    expect(freshness(admin.store.get())).toMatchObject({ stale: false, ageS: 0, text: "Live." });

    answer = false; // the server takes every request from now on and never answers
    await vi.advanceTimersByTimeAsync(POLL_MS); // the second poll goes out, and hangs
    expect(polls()).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(STALE_MS); // no answer, but the clock ticks on screen
    let f = freshness(admin.store.get());
    expect(f.stale).toBe(true);
    expect(f.text).toBe("Data 4 s old — waiting for the server's answer. Every figure below is from then; still retrying.");

    await vi.advanceTimersByTimeAsync(POLL_TIMEOUT_MS - STALE_MS); // the hung poll is given up ...
    expect(sent.filter((r) => r.path.startsWith("/api/v1/admin/overview"))[1]?.signal?.aborted).toBe(true);
    expect(admin.store.get().error).toBe("The server did not answer within 5 s.");
    await vi.advanceTimersByTimeAsync(POLL_MS); // ... and the next one goes out: polling did not stop
    expect(polls()).toHaveLength(3);
    f = freshness(admin.store.get());
    expect(f.text).toMatch(/^Data 7 s old — server not answering \(last refresh: The server did not answer within 5 s\.\)/);

    // a minute without answers: the next poll asks for every second since the last answer
    await vi.advanceTimersByTimeAsync(60_000);
    answer = true;
    await vi.advanceTimersByTimeAsync(POLL_TIMEOUT_MS + POLL_MS);
    const last = polls().at(-1) ?? "";
    const gap = Number(new URLSearchParams(last.split("?")[1]).get("window"));
    expect(gap).toBeGreaterThanOrEqual(67); // the seconds since the last answer, not the usual 10
    expect(freshness(admin.store.get()).stale).toBe(false);
    admin.stop();
  });

  it("stops: the poll in flight is aborted, and nothing more is sent or ticked", async () => {
    reply = (path) => (path === "/api/v1/me" ? { status: 200, body: ME } : "hang");
    const admin = new AdminConsole(new Api("http://test", () => undefined), () => "t".repeat(43));
    void admin.start();
    await settle();
    expect(polls()).toEqual(["/api/v1/admin/overview?window=900"]);
    admin.stop();
    await settle();
    expect(sent.at(-1)?.signal?.aborted).toBe(true);
    const before = admin.store.get();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(polls()).toHaveLength(1);
    expect(admin.store.get()).toBe(before);
  });

  it("tells the operator that an unanswered halt may or may not be in effect, and polls on", async () => {
    reply = (path, method) => {
      if (path === "/api/v1/me") return { status: 200, body: ME };
      if (method === "POST") return "hang";
      return { status: 200, body: overviewAt(Date.now()) };
    };
    const admin = new AdminConsole(new Api("http://test", () => undefined), () => "t".repeat(43));
    void admin.start();
    await settle();
    const halting = admin.setBetting(false, "feed looks wrong");
    await vi.advanceTimersByTimeAsync(10_000);
    expect(await halting).toBe(false); // the button is usable again
    const m = admin.store.get().message;
    expect(m?.level).toBe("error");
    expect(m?.text).toMatch(/^The server did not answer within 10 s\. The halt may or may not have taken effect/);
    const n = polls().length;
    await vi.advanceTimersByTimeAsync(POLL_MS * 3);
    expect(polls().length).toBeGreaterThan(n);
    admin.stop();
  });
});

describe("how old the figures are", () => {
  const loaded: AdminState = adminReducer(initialAdmin, { type: "overview", overview: parseOverview(overview), now: 1_000 });
  it("is live up to the stale threshold, then flagged with the reason", () => {
    expect(freshness(adminReducer(loaded, { type: "tick", now: 1_000 + STALE_MS })).stale).toBe(false);
    const waiting = adminReducer(loaded, { type: "tick", now: 13_500 });
    expect(freshness(waiting)).toEqual({
      stale: true,
      ageS: 12,
      text: "Data 12 s old — waiting for the server's answer. Every figure below is from then; still retrying.",
      spoken: "The console's figures are old — waiting for the server's answer.",
    });
    expect(freshness(adminReducer(waiting, { type: "tick", now: 14_500 })).spoken).toBe(freshness(waiting).spoken);
    const failed = adminReducer(waiting, { type: "pollFailed", error: "The server cannot be reached.", now: 14_000 });
    expect(freshness(failed).text).toBe(
      "Data 13 s old — server not answering (last refresh: The server cannot be reached.). Every figure below is from then; still retrying.",
    );
    expect(freshness(adminReducer(failed, { type: "overview", overview: parseOverview(overview), now: 15_000 })).stale).toBe(false);
  });
  it("has nothing to say before the first answer but the failure", () => {
    expect(freshness(initialAdmin)).toMatchObject({ stale: false, ageS: null, text: "No data yet." });
    expect(freshness(adminReducer(initialAdmin, { type: "pollFailed", error: "down", now: 5 })).text).toBe("No data yet: down");
  });
  it("is shown as an alert in the header once old", () => {
    const html = (s: AdminState) => renderToStaticMarkup(createElement(Freshness, { state: s }));
    expect(html(loaded)).not.toContain('role="alert"');
    const old = html(adminReducer(loaded, { type: "pollFailed", error: "The server did not answer within 5 s.", now: 13_000 }));
    expect(old).toContain('data-testid="stale"');
    expect(old).toContain("Data 12 s old — server not answering");
  });
  it("asks for the seconds missed since the last answer, at least 10, at most 900", () => {
    expect(pollWindow(null, 5)).toBe(900);
    expect(pollWindow(1_000, 2_000)).toBe(10);
    expect(pollWindow(1_000, 61_000)).toBe(62);
    expect(pollWindow(1_000, 61_001)).toBe(63);
    expect(pollWindow(0, 3_600_000)).toBe(900);
  });
  it("warns when the server's sampler has stopped, though the poll is fresh", () => {
    expect(samplerNote("Source health", T0 - 900, T0)).toBeNull();
    expect(samplerNote("Source health", T0 - 3000, T0)).toBeNull();
    const at = T0 - 42_000;
    expect(samplerNote("Source health", at, T0)).toBe(
      `Source health last sampled 42 s ago (${new Date(at).toISOString().slice(11, 19)} UTC): the server's sampler has stopped, these figures are from then.`,
    );
    expect(samplerNote("Writer latency", null, T0)).toBe("Writer latency: not sampled yet by the server.");
    expect(ago(59)).toBe("59 s");
    expect(ago(600)).toBe("10 min");
    expect(ago(7200)).toBe("2 h");
  });
});

describe("the weeks panel", () => {
  const base: WeeksPanel = {
    error: null,
    local: [{ week: "2026_48", file: "bets_2026_48.db", size: 81920, state: "current" }],
    archived: [],
    target: null,
    listed_at: null,
    age_s: null,
    refreshing: true,
  };
  const listed: WeeksPanel = {
    ...base,
    archived: [{ week: "2026_01", compressed_size: 4096, raw_size: null, last_modified: null, restored: false }],
    target: "s3://b/",
    listed_at: Date.UTC(2026, 11, 7, 21, 0, 5),
    age_s: 95,
    refreshing: false,
  };
  it("says the archived weeks are not known yet rather than showing none", () => {
    expect(weeksNote(base)).toEqual({ level: "warn", text: "Listing the archive… archived weeks not known yet." });
    expect(weeksNote({ ...base, refreshing: false, error: "S3 down" })).toEqual({
      level: "error",
      text: "Archive listing failed: S3 down. Archived weeks unknown (retried every 30 s).",
    });
  });
  it("dates the archived weeks, and keeps them beside a later failure", () => {
    expect(weeksNote(listed)).toEqual({ level: "ok", text: "Archived weeks as of 21:00:05 UTC (95 s ago)." });
    const failed = weeksNote({ ...listed, error: "Read timeout", refreshing: true });
    expect(failed.level).toBe("error");
    expect(failed.text).toBe("Archive listing failed: Read timeout. Archived weeks below are as of 21:00:05 UTC (95 s ago); retrying now.");
    const html = renderToStaticMarkup(createElement(Weeks, { w: { ...listed, error: "Read timeout" } }));
    expect(html).toContain('data-level="error"');
    expect(html).toContain("2026_01");
  });
  it("reads the listing's time from the wire, and refuses a panel without `refreshing`", () => {
    const o = parseOverview(overview);
    expect([o.weeks.listed_at, o.weeks.age_s, o.weeks.refreshing, o.weeks.error]).toEqual([1795772788120, 12.572, false, null]);
    expect(o.feed.sources_at).toBe(1795772800134);
    const bad = structuredClone(overview) as { weeks: Record<string, unknown> };
    delete bad.weeks["refreshing"];
    expect(() => parseOverview(bad)).toThrow(WireError);
  });
});
