// The console's glue: polls GET /api/v1/admin/overview (the full 15 minutes once, then the seconds
// since the last answer, at least 10, each second, merged in the store), and the operator's actions
// (halt, reopen, integrity-check). Every request has a timeout: a server that takes a request and never
// answers shows as a failure (and the figures' age grows on screen, `freshness`), and polling goes on.
import { Api, ApiFailure, noAnswer } from "../api";
import { parseBettingActionResult, parseIntegrityState, parseMe, parseOverview, type BettingActionResult } from "../wire";
import { AdminStore, pollWindow } from "./state";

export const POLL_MS = 1000;
/** A poll (and /me) without an answer by then is given up, and the next one scheduled. */
export const POLL_TIMEOUT_MS = 5000;
/** Halt, reopen, integrity-check: the server may take up to 5 s to record a halt. */
export const ACTION_TIMEOUT_MS = 10_000;
/** How often the figures' age on screen is brought up to date, whatever the polls do. */
export const TICK_MS = 1000;

/** What the operator is told when a halt or reopen got no answer: it may have taken effect. */
export function bettingNoAnswer(open: boolean, e: ApiFailure): string {
  const what = open ? "The reopen" : "The halt";
  return `${e.message} ${what} may or may not have taken effect: the Betting panel shows the server's state once it answers again.`;
}

/** What the operator is told after halting or reopening: an action that is in effect but missing from
 *  the audit log is an error to act on, not a success. */
export function bettingMessage(st: BettingActionResult): { level: "ok" | "error"; text: string } {
  const done = st.halted ? `Betting halted: ${st.reason ?? ""}` : "Betting reopened.";
  if (st.recorded) return { level: "ok", text: done };
  return {
    level: "error",
    text: `${done} — in effect, but NOT recorded in the audit log (the database did not take it): note who did it and why, and check the server's log.`,
  };
}

export class AdminConsole {
  readonly store = new AdminStore();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  /** Cancels the poll in flight (a stop, or a poll that an action's refresh replaces). */
  private inflight: AbortController | null = null;
  private running = false;
  /** Bumped by every start/stop: a poll of an older generation stops instead of rescheduling. */
  private gen = 0;

  constructor(
    private readonly api: Api,
    private readonly token: () => string | null,
    private readonly clock: () => number = Date.now,
  ) {}

  private auth(): { token: string } {
    const token = this.token();
    if (!token) throw new ApiFailure(401, { code: "unauthorized", message: "Sign in first." });
    return { token };
  }

  /** Check the session's rights, then poll until `stop()`. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const gen = ++this.gen;
    this.store.dispatch({ type: "reset" });
    this.ticker = setInterval(() => this.store.dispatch({ type: "tick", now: this.clock() }), TICK_MS);
    try {
      const me = await this.api.call("GET", "/api/v1/me", parseMe, { ...this.auth(), timeoutMs: POLL_TIMEOUT_MS });
      if (gen !== this.gen) return;
      if (!me.is_admin) {
        this.store.dispatch({ type: "access", access: "forbidden" });
        this.stop();
        return;
      }
    } catch (e) {
      if (gen !== this.gen) return;
      this.fail(e);
      if (!this.running) return;
    }
    await this.poll(gen);
  }

  stop(): void {
    this.running = false;
    this.gen++;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.inflight?.abort();
    this.inflight = null;
  }

  private fail(e: unknown): void {
    if (e instanceof ApiFailure && e.status === 403) {
      this.store.dispatch({ type: "access", access: "forbidden" });
      this.stop();
      return;
    }
    this.store.dispatch({ type: "pollFailed", error: e instanceof Error ? e.message : String(e), now: this.clock() });
  }

  private async poll(gen: number): Promise<void> {
    if (!this.running || gen !== this.gen) return;
    const ctl = new AbortController();
    this.inflight = ctl;
    try {
      const window = pollWindow(this.store.get().polledAt, this.clock());
      const overview = await this.api.call("GET", `/api/v1/admin/overview?window=${window}`, parseOverview, {
        ...this.auth(),
        timeoutMs: POLL_TIMEOUT_MS,
        signal: ctl.signal,
      });
      if (gen !== this.gen) return;
      this.store.dispatch({ type: "overview", overview, now: this.clock() });
    } catch (e) {
      if (gen !== this.gen) return;
      this.fail(e);
    } finally {
      if (this.inflight === ctl) this.inflight = null;
    }
    if (this.running && gen === this.gen) this.timer = setTimeout(() => void this.poll(gen), POLL_MS);
  }

  /** Poll now (after an action), instead of waiting for the next tick. */
  private async refresh(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (!this.running) return;
    this.inflight?.abort(); // a poll still in flight is of the old generation: dropped
    await this.poll(++this.gen);
  }

  async setBetting(open: boolean, reason: string | null): Promise<boolean> {
    try {
      const body = open ? { open: true, ...(reason ? { reason } : {}) } : { open: false, reason };
      const st = await this.api.call("POST", "/api/v1/admin/betting", parseBettingActionResult, {
        ...this.auth(),
        body,
        timeoutMs: ACTION_TIMEOUT_MS,
      });
      this.store.dispatch({ type: "message", ...bettingMessage(st) });
      await this.refresh();
      return true;
    } catch (e) {
      if (noAnswer(e)) {
        this.store.dispatch({ type: "message", level: "error", text: bettingNoAnswer(open, e) });
        void this.refresh();
        return false;
      }
      this.store.dispatch({ type: "message", level: "error", text: e instanceof Error ? e.message : String(e) });
      return false;
    }
  }

  async runIntegrityCheck(): Promise<void> {
    try {
      const run = await this.api.call("POST", "/api/v1/admin/integrity-check", parseIntegrityState, {
        ...this.auth(),
        timeoutMs: ACTION_TIMEOUT_MS,
      });
      this.store.dispatch({ type: "integrity", run });
      this.store.dispatch({ type: "message", level: "ok", text: "Integrity-check started." });
    } catch (e) {
      const text = noAnswer(e)
        ? `${e.message} The integrity-check may or may not have started: the Integrity-check panel shows it once the server answers again.`
        : e instanceof Error
          ? e.message
          : String(e);
      this.store.dispatch({ type: "message", level: "error", text });
    }
  }
}
