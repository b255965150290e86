// The console's glue: polls GET /api/v1/admin/overview (the full 15 minutes once, then `?window=10`
// each second, merged in the store), and the operator's actions (halt, reopen, integrity-check).
import { Api, ApiFailure } from "../api";
import { parseBettingActionResult, parseIntegrityState, parseMe, parseOverview, type BettingActionResult } from "../wire";
import { AdminStore } from "./state";

export const POLL_MS = 1000;

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
  private running = false;
  private full = true;
  /** Bumped by every start/stop: a poll of an older generation stops instead of rescheduling. */
  private gen = 0;

  constructor(
    private readonly api: Api,
    private readonly token: () => string | null,
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
    this.full = true;
    const gen = ++this.gen;
    this.store.dispatch({ type: "reset" });
    try {
      const me = await this.api.call("GET", "/api/v1/me", parseMe, this.auth());
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
  }

  private fail(e: unknown): void {
    if (e instanceof ApiFailure && e.status === 403) {
      this.store.dispatch({ type: "access", access: "forbidden" });
      this.stop();
      return;
    }
    this.store.dispatch({ type: "pollFailed", error: e instanceof Error ? e.message : String(e) });
  }

  private async poll(gen: number): Promise<void> {
    if (!this.running || gen !== this.gen) return;
    try {
      const overview = await this.api.call(
        "GET",
        `/api/v1/admin/overview?window=${this.full ? 900 : 10}`,
        parseOverview,
        this.auth(),
      );
      if (gen !== this.gen) return;
      this.full = false;
      this.store.dispatch({ type: "overview", overview, now: Date.now() });
    } catch (e) {
      if (gen !== this.gen) return;
      this.fail(e);
    }
    if (this.running && gen === this.gen) this.timer = setTimeout(() => void this.poll(gen), POLL_MS);
  }

  /** Poll now (after an action), instead of waiting for the next tick. */
  private async refresh(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (!this.running) return;
    await this.poll(++this.gen); // a poll still in flight is of the old generation: dropped
  }

  async setBetting(open: boolean, reason: string | null): Promise<boolean> {
    try {
      const body = open ? { open: true, ...(reason ? { reason } : {}) } : { open: false, reason };
      const st = await this.api.call("POST", "/api/v1/admin/betting", parseBettingActionResult, { ...this.auth(), body });
      this.store.dispatch({ type: "message", ...bettingMessage(st) });
      await this.refresh();
      return true;
    } catch (e) {
      this.store.dispatch({ type: "message", level: "error", text: e instanceof Error ? e.message : String(e) });
      return false;
    }
  }

  async runIntegrityCheck(): Promise<void> {
    try {
      const run = await this.api.call("POST", "/api/v1/admin/integrity-check", parseIntegrityState, this.auth());
      this.store.dispatch({ type: "integrity", run });
      this.store.dispatch({ type: "message", level: "ok", text: "Integrity-check started." });
    } catch (e) {
      this.store.dispatch({ type: "message", level: "error", text: e instanceof Error ? e.message : String(e) });
    }
  }
}
