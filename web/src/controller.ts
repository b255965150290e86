// The glue between the store, the HTTP API, the websocket and the wallet. Components call these
// methods; every outcome lands in the store through an action.
import { Api, ApiFailure } from "./api";
import { minMultiplierFor, normaliseMoneyInput } from "./money";
import { PriceSeries } from "./series";
import { buildSiweMessage, newSessionKey, randomNonce, sessionKeyFrom, signBet, type SessionKey } from "./signing";
import { TapSocket } from "./socket";
import { isFinal, quoteAt, quotesStale, Store, tapRefusal, type Session, type Slippage, type View } from "./store";
import type { DiscoveredWallet } from "./wallet";
import { ensureChain, personalSign, requestAccount } from "./wallet";
import {
  parseBetPage,
  parseBetRecord,
  parseGridResponse,
  parseLedgerPage,
  parseLogin,
  parseMe,
  parseMoneyMove,
  parseNonce,
  type BetPage,
  type BetStatus,
  type Hex,
  type LedgerPage,
  type MoneyMove,
  type ServerMsg,
} from "./wire";

const STORAGE_KEY = "tap-trading.session";
/** The view the trader was on, so that a reload of this tab returns to it. */
const VIEW_KEY = "tap-trading.view";
/** Slippage accepted between the quote shown and the one at acceptance, in basis points. The grid
 * message comes once a second and quotes of near cells can move tens of per cent in that time; the
 * bet always gets the server's quote, never less than min_multiplier. "any" sends the 1.01 floor. */
export const SLIPPAGE_BP: Record<Slippage, bigint> = { "10": 1000n, "25": 2500n, any: 10_000n };
/** A request re-sent after a drop must still pass the server's 30 s `ts` window. */
const RESEND_WITHIN_MS = 25_000;
/** A bet is committed or rejected within 10 s of its acceptance (docs/API.md), so this long after the
 *  last send of a body the trader's history says whether it was placed (plus a margin for latency). */
const HISTORY_SETTLED_MS = 12_000;
/** How far back (before the signed `ts`) the history is searched for a tap's cell. */
const HISTORY_LOOKBACK_MS = 60_000;
const HISTORY_MAX_PAGES = 5;
/** A `grid` message whose `ts` (server time when sent, once a second) is further than this from the
 *  server time this page reckons (Date.now() + clockOffsetMs) means the browser's clock has been set
 *  since the offset was measured: the offset is measured again (GET /grid). Well above a message's
 *  usual delivery time, so a healthy page never asks. */
export const CLOCK_DRIFT_MS = 2_000;
/** After measuring the offset again, that many `grid` messages (about 10 s) are not checked: a server
 *  or network that delivers them seconds late asks once every ten seconds, not once a second. */
const CLOCK_CHECK_PAUSE = 10;
/** Open bets are at most a screenful of cells (columns_ahead × rows); 200 a page. */
const OPEN_BETS_MAX_PAGES = 3;
/** The Account view refetches its lists at most this often, and only after an event changed them: a
 *  bet's confirmation and its balance, or a column of bets settling, make one request, not one each. */
export const ACCOUNT_REFRESH_MS = 750;
/** A page of history or ledger, as the trader pages back with "Older". */
export const ACCOUNT_PAGE = 20;
/** The most rows GET /bets and GET /ledger give in one page (docs/API.md `limit` 1–200). */
export const API_MAX_LIMIT = 200;
/** A refresh re-reads as many rows as are shown, in pages of API_MAX_LIMIT, up to this many (five
 *  requests): a trader who paged back further sees the newest this many again, and is told so. */
export const REREAD_MAX_ROWS = 1000;

/** The newest `rows` of a cursor-paged list, newest first, in requests of at most API_MAX_LIMIT rows:
 *  `next` is where the next older page starts (null: there is none). */
export async function readNewest<T>(
  page: (cursor: string | null, limit: number) => Promise<{ items: T[]; next: string | null }>,
  rows: number,
): Promise<{ items: T[]; next: string | null }> {
  rows = Math.max(1, rows);
  const items: T[] = [];
  let next: string | null = null;
  do {
    const p = await page(next, Math.min(API_MAX_LIMIT, rows - items.length));
    items.push(...p.items);
    next = p.next;
  } while (next !== null && items.length < rows);
  return { items, next };
}

interface Stored extends Session {
  sessionKeyPrivate: Hex;
}

/** The session this tab kept, "expired" if it has run out since (the trader is told), else null. */
function load(): Stored | "expired" | null {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Partial<Stored>;
    if (typeof s.token !== "string" || typeof s.address !== "string" || typeof s.sessionKeyPrivate !== "string") return null;
    if (typeof s.expiresAt !== "number") return null;
    if (s.expiresAt <= Date.now()) return "expired";
    return s as Stored;
  } catch {
    return null;
  }
}

function readView(): View | null {
  try {
    const v = sessionStorage.getItem(VIEW_KEY);
    return v === "trade" || v === "account" ? v : null;
  } catch {
    return null;
  }
}

export class Controller {
  readonly store = new Store();
  readonly series = new PriceSeries();
  readonly api: Api;
  readonly socket: TapSocket;
  private key: SessionKey | null = null;
  private signing = new Set<string>();
  private reqSeq = 0;
  /** A `resume` was sent on this socket and its `resumed` has not arrived yet. */
  private resuming = false;
  /** `grid` messages still to let pass before the next clock check (checkClock). */
  private clockCheckPause = 0;

  constructor(private readonly origin: string = window.location.origin) {
    this.api = new Api(origin, () => this.expire("Your session has ended (signed out elsewhere or expired). Sign in again."));
    const wsUrl = origin.replace(/^http/, "ws") + "/ws";
    this.socket = new TapSocket(wsUrl, {
      onMessage: (m) => this.onMessage(m),
      onState: (state, attempt, retryAt) => this.store.dispatch({ type: "conn", state, attempt, retryAt, at: Date.now() }),
      onUnauthorized: () => this.expire("Your session is no longer valid. Sign in again."),
      onOpen: () => void this.resync(),
    });
  }

  private get session(): Session | null {
    return this.store.get().session;
  }

  async start(): Promise<void> {
    const view = readView();
    if (view) this.store.dispatch({ type: "view", view });
    const stored = load();
    if (stored === "expired") {
      sessionStorage.removeItem(STORAGE_KEY);
      this.store.dispatch({ type: "signedOut", reason: "Your session has expired. Sign in again." });
    } else if (stored) {
      this.key = sessionKeyFrom(stored.sessionKeyPrivate);
      const { sessionKeyPrivate: _k, ...session } = stored;
      this.store.dispatch({ type: "signedIn", session });
    }
    await this.loadGrid().catch((e: unknown) => this.notice(e));
    void this.backfill();
    this.socket.start(this.session?.token ?? null);
    // Over HTTP at once: the socket's re-sync reads it too, but a socket that cannot get through
    // (a proxy that drops websockets, a server restarting) must not leave the balance unknown.
    void this.refreshMe();
  }

  /** The trader picks a view; it outlives a sign-out and a reload of this tab. */
  setView(view: View): void {
    this.store.dispatch({ type: "view", view });
    try {
      sessionStorage.setItem(VIEW_KEY, view);
    } catch {
      /* storage refused (private mode): the view is kept until a reload */
    }
  }

  private notice(e: unknown): void {
    const text = e instanceof Error ? e.message : String(e);
    this.store.dispatch({ type: "notice", text, now: Date.now() });
  }

  async loadGrid(): Promise<void> {
    const t0 = Date.now();
    const g = await this.api.call("GET", "/api/v1/grid", parseGridResponse);
    const t1 = Date.now();
    this.store.dispatch({ type: "settings", settings: g.settings, clockOffsetMs: g.server_time - Math.round((t0 + t1) / 2) });
    this.store.dispatch({ type: "server", msg: g.feed, now: t1 });
    if (g.price !== null) {
      const { server_time: _s, feed: _f, settings: _st, ...quotes } = g;
      this.store.dispatch({ type: "server", msg: { type: "grid", ...quotes }, now: t1 });
    }
  }

  private async backfill(): Promise<void> {
    try {
      // Server time: a browser clock minutes ahead would ask for prices that do not exist yet.
      const since = Date.now() + this.store.get().clockOffsetMs - 120_000;
      const body = await this.api.call("GET", `/api/v1/prices?since=${since}`, (v) => v);
      const prices = (body as { prices?: unknown }).prices;
      if (Array.isArray(prices))
        for (const p of prices as { price?: unknown; ts?: unknown }[])
          if (typeof p.price === "string" && typeof p.ts === "number") this.series.push(p.ts, p.price);
    } catch {
      /* the live stream fills the chart anyway */
    }
  }

  private onMessage(m: ServerMsg): void {
    if (m.type === "price") this.series.push(m.ts, m.price);
    if (m.type === "grid") this.checkClock(m.ts);
    this.store.dispatch({ type: "server", msg: m, now: Date.now() });
    if (m.type === "bet:accepted") {
      // A retry answered: the confirmation may have been published while we were away.
      const t = this.store.get().taps[m.cell];
      if (t && t.req === m.req && t.resentAt !== null) void this.truth(m.cell, m.bet_id);
    }
    if (m.type === "bet:error") {
      // A re-sent tap refused before the server looked its nonce up stays unknown (the reducer): find out.
      const t = Object.values(this.store.get().taps).find((x) => x.req === m.req);
      if (t && t.state === "unknown") this.findOut(t.cell, m.retry_after);
    }
    if (m.type === "bet:resolved") void this.refreshMe();
    if (m.type === "resumed") {
      this.resuming = false;
      // Events after `after` may have been trimmed: what they said is only in the server's records.
      if (!m.complete) void this.recheckAll();
    } else if (m.type === "error" && this.resuming) {
      // The resume was refused (e.g. dependency_unavailable): nothing was replayed.
      this.resuming = false;
      void this.recheckAll();
    }
  }

  /** The offset to server time is measured at each (re)connect; a browser clock set after that (an NTP
   *  step, the trader fixing it, a laptop waking with a corrected clock) would otherwise skew it until the
   *  next reconnect: set ahead, every quote looks out of date and each tap is refused in the page; set
   *  back, locked columns look open; either way, by more than 30 s, the signed `ts` is refused. */
  private checkClock(serverTs: number): void {
    if (this.clockCheckPause > 0) {
      this.clockCheckPause--;
      return;
    }
    if (Math.abs(serverTs - (Date.now() + this.store.get().clockOffsetMs)) <= CLOCK_DRIFT_MS) return;
    this.clockCheckPause = CLOCK_CHECK_PAUSE;
    void this.loadGrid().catch(() => undefined);
  }

  /** After every (re)connect: the missed events (`resume`), settings and quotes, balance, and the
   *  truth about unknown taps. */
  private async resync(): Promise<void> {
    // First, before any live event can move lastEventId past what this client missed while away.
    const { session, lastEventId } = this.store.get();
    this.resuming = session !== null && lastEventId !== null && this.socket.send({ type: "resume", after: lastEventId });
    // No event seen yet (or the resume not sent): a bet may have moved unseen; re-read them all.
    const recheck = session !== null && !this.resuming;
    await this.loadGrid().catch(() => undefined);
    if (!this.session) return;
    await this.refreshMe();
    if (recheck) {
      this.recheckBets();
      // This tab may not know every open bet (a reload, a new sign-in): list them, so each shows its fate.
      await this.loadOpenBets();
    }
    const now = Date.now();
    for (const t of Object.values(this.store.get().taps)) {
      if (t.state !== "unknown") continue;
      if (t.betId) {
        if (!recheck) void this.truth(t.cell, t.betId);
      } else if (now - t.sentAt < RESEND_WITHIN_MS) {
        this.resend(t.cell);
      } else {
        // Too old to re-send (its `ts` would be refused): the outcome is in the trader's history.
        this.store.dispatch({ type: "tapUnknown", cell: t.cell, reason: "The connection dropped before the server answered; checking your history…" });
        this.findOut(t.cell);
      }
    }
  }

  /** The server may or may not have this tap: the identical signed request (same nonce) returns the
   *  same bet if it does, and places it if it does not (SPEC §6 idempotency). */
  private resend(cell: string): void {
    const t = this.store.get().taps[cell];
    if (!t || t.state !== "unknown" || t.betId || !t.body) return;
    if (this.socket.send({ type: "bet", req: t.req, ...t.body })) this.store.dispatch({ type: "tapResent", cell, at: Date.now() });
  }

  /** An unknown tap without a bet id: re-send it after `retryAfterS` while its `ts` is still fresh,
   *  else read the trader's history once it is authoritative. */
  private findOut(cell: string, retryAfterS?: number): void {
    const t = this.store.get().taps[cell];
    if (!t || t.state !== "unknown" || t.betId) return;
    const session = this.session;
    const stillOurs = () => this.session === session && this.store.get().taps[cell]?.req === t.req;
    if (retryAfterS !== undefined) {
      const waitMs = Math.max(0, retryAfterS) * 1000;
      if (Date.now() + waitMs - t.sentAt < RESEND_WITHIN_MS) {
        setTimeout(() => {
          if (stillOurs()) this.resend(cell); // not open: the next reconnect's resync takes over
        }, waitMs);
        return;
      }
    }
    const waitMs = Math.max(0, (t.resentAt ?? t.sentAt) + HISTORY_SETTLED_MS - Date.now());
    setTimeout(() => {
      if (stillOurs()) void this.lookUpByCell(cell);
    }, waitMs);
  }

  /** Whether the trader's history has a bet on `cell` (one bet per cell): its truth, or "not sent" (unsent).
   *  The history lists committed bets only; a rejected one never moved money. */
  private async lookUpByCell(cell: string): Promise<void> {
    const t = this.store.get().taps[cell];
    const token = this.session?.token;
    if (!t || t.state !== "unknown" || t.betId || !token) return;
    try {
      let cursor: string | null = null;
      for (let page = 0; page < HISTORY_MAX_PAGES; page++) {
        const q = new URLSearchParams({ limit: "100" });
        if (cursor) q.set("cursor", cursor);
        const p: BetPage = await this.api.call("GET", `/api/v1/bets?${q.toString()}`, parseBetPage, { token });
        const hit = p.bets.find((b) => b.cell === cell);
        if (hit) {
          this.store.dispatch({ type: "truth", cell, bet: hit });
          return;
        }
        const oldest = p.bets[p.bets.length - 1]?.placed_at ?? null;
        cursor = p.next_cursor;
        if (!cursor || (oldest !== null && oldest < (t.body?.ts ?? t.sentAt) - HISTORY_LOOKBACK_MS)) {
          this.store.dispatch({ type: "tapLost", cell, reason: "No bet was placed: your history has no bet on this cell; nothing was charged." });
          return;
        }
      }
      this.store.dispatch({ type: "tapUnknown", cell, reason: "Outcome not found in your recent history; see History." });
    } catch (e) {
      this.store.dispatch({ type: "tapUnknown", cell, reason: "Could not check the outcome; see History." });
      this.notice(e);
    }
  }

  /** The trader's open (confirmed) bets, newest first, into the store. An owner event that arrives
   *  while the list is read may be older news than the list (a bet settled just after it was read):
   *  then the bets that may still change are re-read one by one. */
  private async loadOpenBets(): Promise<void> {
    const token = this.session?.token;
    if (!token) return;
    const eventBefore = this.store.get().lastEventId;
    try {
      let cursor: string | null = null;
      for (let page = 0; page < OPEN_BETS_MAX_PAGES; page++) {
        const q = new URLSearchParams({ status: "confirmed", limit: "200" });
        if (cursor) q.set("cursor", cursor);
        const p: BetPage = await this.api.call("GET", `/api/v1/bets?${q.toString()}`, parseBetPage, { token });
        if (this.session?.token !== token) return;
        this.store.dispatch({ type: "restore", bets: p.bets });
        cursor = p.next_cursor;
        if (!cursor) break;
      }
    } catch (e) {
      if (!(e instanceof ApiFailure && e.status === 401)) this.notice(e);
      return;
    }
    if (this.store.get().lastEventId !== eventBefore) this.recheckBets();
  }

  /** The truth of every bet this client knows that may still change, and the balance. */
  private async recheckAll(): Promise<void> {
    this.recheckBets();
    await this.refreshMe();
  }

  private recheckBets(): void {
    for (const t of Object.values(this.store.get().taps)) if (t.betId && !isFinal(t.state)) void this.truth(t.cell, t.betId);
  }

  private async truth(cell: string, betId: string): Promise<void> {
    const token = this.session?.token;
    if (!token) return;
    try {
      const bet = await this.api.call("GET", `/api/v1/bets/${encodeURIComponent(betId)}`, parseBetRecord, { token });
      this.store.dispatch({ type: "truth", cell, bet });
    } catch (e) {
      this.notice(e);
    }
  }

  async refreshMe(): Promise<void> {
    const token = this.session?.token;
    if (!token) return;
    const balanceEvents = this.store.get().balanceEvents;
    try {
      const me = await this.api.call("GET", "/api/v1/me", parseMe, { token });
      if (this.session?.token !== token) return; // signed out (or in again) meanwhile
      this.store.dispatch({ type: "me", balance: me.balance, isAdmin: me.is_admin, balanceEvents, at: Date.now() });
    } catch (e) {
      if (!(e instanceof ApiFailure && e.status === 401)) this.notice(e);
    }
  }

  // ---- sign-in ---------------------------------------------------------------------------------

  async signIn(wallet: DiscoveredWallet): Promise<void> {
    let settings = this.store.get().settings;
    if (!settings) {
      await this.loadGrid();
      settings = this.store.get().settings;
      if (!settings) throw new Error("The server's settings are not available yet.");
    }
    const p = wallet.provider;
    const address = await requestAccount(p);
    await ensureChain(p, settings.chain_id);
    const nonce = await this.api.call("GET", "/api/v1/auth/nonce", parseNonce);
    const key = newSessionKey();
    const issuedAt = new Date(Date.now() + this.store.get().clockOffsetMs);
    const message = buildSiweMessage({
      domain: settings.siwe_domain,
      protocol: window.location.protocol,
      address,
      chainId: settings.chain_id,
      nonce,
      sessionKey: key.account.address,
      issuedAt,
      expirationTime: new Date(issuedAt.getTime() + 24 * 3600 * 1000),
    });
    const signature = await personalSign(p, address, message);
    const login = await this.api.call("POST", "/api/v1/auth/login", parseLogin, { body: { message, signature } });
    const session: Session = { token: login.token, address: login.address, sessionKey: key.account.address, expiresAt: login.expires_at };
    this.key = key;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ ...session, sessionKeyPrivate: key.privateKey } satisfies Stored));
    this.store.dispatch({ type: "signedIn", session });
    this.socket.restart(session.token);
    void this.refreshMe();
  }

  private expire(reason: string): void {
    if (!this.session) return;
    sessionStorage.removeItem(STORAGE_KEY);
    this.key = null;
    this.store.dispatch({ type: "signedOut", reason });
    this.socket.restart(null);
  }

  async signOut(): Promise<void> {
    const token = this.session?.token;
    sessionStorage.removeItem(STORAGE_KEY);
    this.key = null;
    this.store.dispatch({ type: "signedOut", reason: null });
    this.socket.restart(null);
    if (token) await this.api.call("POST", "/api/v1/auth/logout", (v) => v, { token }).catch(() => undefined);
  }

  // ---- taps ------------------------------------------------------------------------------------

  quoteOf(cell: string): string | null | undefined {
    return quoteAt(this.store.get(), cell, Date.now());
  }

  /** One tap = one signed bet over the websocket (SPEC §8a). Returns the refusal, or null if sent. */
  async tap(cell: string): Promise<string | null> {
    const s = this.store.get();
    const quote = this.quoteOf(cell);
    const refusal = this.signing.has(cell)
      ? { text: "You already have a bet on this cell." }
      : tapRefusal(s, cell, quote, quotesStale(s, Date.now()));
    if (refusal || !s.session || !s.settings || !s.stake || !quote || !this.key) {
      const text = refusal?.text ?? "Sign in to place bets.";
      this.store.dispatch({ type: "notice", text, now: Date.now(), action: refusal?.action });
      return text;
    }
    this.signing.add(cell);
    try {
      const body = await signBet(
        this.key,
        { domain: s.settings.siwe_domain, chainId: s.settings.chain_id, address: s.session.address },
        {
          cell,
          stake: s.stake,
          min_multiplier: minMultiplierFor(quote, SLIPPAGE_BP[s.slippage]),
          nonce: randomNonce(),
          ts: Date.now() + s.clockOffsetMs,
        },
      );
      const req = `t${Date.now().toString(36)}${(this.reqSeq++).toString(36)}`;
      this.store.dispatch({
        type: "tapSent",
        tap: { req, cell, stake: body.stake, multiplier: quote, body, sentAt: Date.now() },
      });
      if (!this.socket.send({ type: "bet", req, ...body })) {
        this.store.dispatch({ type: "tapLost", cell, reason: "Not connected: the tap was not sent." });
        return "Not connected: the tap was not sent.";
      }
      return null;
    } finally {
      this.signing.delete(cell);
    }
  }

  // ---- account ---------------------------------------------------------------------------------

  private token(): string {
    const t = this.session?.token;
    if (!t) throw new Error("Sign in first.");
    return t;
  }

  /** Calls `onChange` once the trader's committed bets (or ledger) have changed, ACCOUNT_REFRESH_MS after
   *  the first event of a burst; nothing while nothing happens (no polling). Returns the unsubscribe. */
  watchAccount(kind: "bets" | "ledger", onChange: () => void): () => void {
    let seen = this.store.get().accountSeq[kind];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const unsubscribe = this.store.subscribe(() => {
      const seq = this.store.get().accountSeq[kind];
      if (seq === seen) return;
      seen = seq;
      timer ??= setTimeout(() => {
        timer = null;
        onChange();
      }, ACCOUNT_REFRESH_MS);
    });
    return () => {
      unsubscribe();
      if (timer !== null) clearTimeout(timer);
    };
  }

  history(status: BetStatus | "", cursor: string | null, limit = ACCOUNT_PAGE): Promise<BetPage> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (status) q.set("status", status);
    if (cursor) q.set("cursor", cursor);
    return this.api.call("GET", `/api/v1/bets?${q.toString()}`, parseBetPage, { token: this.token() });
  }

  ledger(cursor: string | null, limit = ACCOUNT_PAGE): Promise<LedgerPage> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.api.call("GET", `/api/v1/ledger?${q.toString()}`, parseLedgerPage, { token: this.token() });
  }

  /** The newest `rows` bets (REREAD_MAX_ROWS at most): what the history shows, read again. */
  async newestBets(status: BetStatus | "", rows: number): Promise<BetPage> {
    const r = await readNewest(
      (cursor, limit) => this.history(status, cursor, limit).then((p) => ({ items: p.bets, next: p.next_cursor })),
      Math.min(rows, REREAD_MAX_ROWS),
    );
    return { bets: r.items, next_cursor: r.next };
  }

  /** The newest `rows` ledger entries (REREAD_MAX_ROWS at most): what the ledger shows, read again. */
  async newestLedger(rows: number): Promise<LedgerPage> {
    const r = await readNewest(
      (cursor, limit) => this.ledger(cursor, limit).then((p) => ({ items: p.entries, next: p.next_cursor })),
      Math.min(rows, REREAD_MAX_ROWS),
    );
    return { entries: r.items, next_cursor: r.next };
  }

  /** Deposit (dev-mode mock rail) or withdrawal; `amount` as typed, sent as a money string. */
  async move(kind: "deposits" | "withdrawals", amountText: string, idempotencyKey: string): Promise<MoneyMove> {
    const amount = normaliseMoneyInput(amountText);
    if (amount === null) throw new Error("Enter a positive amount with at most 6 decimals, e.g. 100 or 2.5.");
    const r = await this.api.call("POST", `/api/v1/${kind}`, parseMoneyMove, {
      token: this.token(),
      body: { amount },
      headers: { "Idempotency-Key": idempotencyKey },
    });
    if (r.balance !== undefined) this.store.dispatch({ type: "balance", balance: r.balance, at: Date.now() });
    return r;
  }
}
