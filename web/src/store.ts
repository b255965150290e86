// The app's state in one place: a pure reducer (unit-tested) plus a tiny store around it.
// A tap's life: sending → pending (bet:accepted) → confirmed → won | lost | void,
// or error (bet:error) / rejected (bet:rejected); a socket drop while sending/pending → unknown,
// and unsent when it is found never to have been placed (not sent at all, or lost in the drop);
// and the truth (GET /api/v1/bets/<id>) replaces unknown after the reconnect. A bet that moved while
// the socket was down (e.g. confirmed → won) is caught up by `resume` with lastEventId, or re-read
// when the server cannot replay everything (docs/API.md "Resuming after a reconnect"). What the server reports
// only moves a tap forward (pending → confirmed → won | lost | void; rejected is final too): a late
// answer never undoes a newer event. An unknown tap without a bet id is re-sent (same signed body =
// same bet); a refusal of the re-send that the server gives before its nonce lookup (saysNothingOfFirstSend)
// keeps it unknown, and the controller re-sends again or reads the trader's history for its cell.
import { displayMoney, parseMoney } from "./money";
import { compareEventIds, type BetRecord, type BetRequest, type BetStatus, type FeedState, type GridQuotes, type GridSettings, type Hex, type ServerMsg } from "./wire";

export type TapState = "sending" | "pending" | "confirmed" | "rejected" | "error" | "unknown" | "unsent" | "won" | "lost" | "void";

export interface Tap {
  req: string;
  cell: string;
  stake: string;
  /** The quote shown when tapped; replaced by the server's multiplier once accepted. */
  multiplier: string;
  payout: string | null;
  betId: string | null;
  state: TapState;
  reason: string | null;
  /** Every state this tap went through, in order (shown in the DOM for tests and support). */
  history: TapState[];
  /** The signed body, kept so the identical request can be re-sent after a drop (same nonce = same bet);
   *  null for a bet this tab did not send (read back from the server after a reload or a new sign-in). */
  body: BetRequest | null;
  /** When it was sent (local ms), or placed (server ms) for a bet read back from the server. */
  sentAt: number;
  /** When the identical body was last re-sent after a drop (local ms); null: never re-sent. */
  resentAt: number | null;
}

/** Refusals that, for a re-sent body, say nothing certain about the first send: the session and `ts`
 *  come before the nonce (SPEC §6); the per-wallet, in-flight and queue limits answer a re-sent body
 *  only when its nonce was not accepted when looked up, and the first send may still be in flight;
 *  `nonce_busy`: attempts of this body kept claiming the nonce and losing it, one may yet be placed;
 *  `recovering`: Redis lost its data (the nonce of a first send with it) and the server is rebuilding
 *  what it knows from its database: the bet, if placed, is found once it has. */
const BEFORE_NONCE: readonly string[] = [
  "invalid_session",
  "missing_authorization",
  "invalid_authorization",
  "ts_out_of_window",
  "rate_limited",
  "too_many_in_flight",
  "overloaded",
  "dependency_unavailable",
  "nonce_busy",
  "recovering",
];
export function saysNothingOfFirstSend(status: number, code: string): boolean {
  return status === 429 || BEFORE_NONCE.includes(code);
}

export const SLIPPAGES = ["10", "25", "any"] as const;
export type Slippage = (typeof SLIPPAGES)[number];

export type ConnState = "connecting" | "open" | "reconnecting";

/** The trader's view: the grid, or the Account (deposit, withdrawal, history, ledger). */
export type View = "trade" | "account";

export interface Session {
  token: string;
  address: Hex;
  sessionKey: Hex;
  expiresAt: number;
}

export interface State {
  settings: GridSettings | null;
  grid: GridQuotes | null;
  /** server_time − Date.now(), from the last GET /grid; signed `ts` uses server time. */
  clockOffsetMs: number;
  price: { price: string; ts: number } | null;
  feed: { feed: FeedState; betting: boolean; reason: string | null };
  /** `downSince`: when the socket last stopped being open (local ms); null while open, or before it
   *  ever was — the figures pushed over it (price, balance) are not live from then on. */
  conn: { state: ConnState; attempt: number; retryAt: number | null; downSince: number | null };
  session: Session | null;
  signedOutReason: string | null;
  balance: string | null;
  /** When the balance shown was last known to be current (local ms): its event, or a /me answer. */
  balanceAt: number | null;
  /** Counts websocket `balance` events: a /me answer requested before the latest one is older than it. */
  balanceEvents: number;
  /** The session's wallet is an operator's (`GET /api/v1/me` `is_admin`): the header links to /admin. */
  isAdmin: boolean;
  stake: string | null;
  /** How far below the shown quote the trader still accepts (SLIPPAGES); "any" sends the 1.01 floor. */
  slippage: Slippage;
  taps: Record<string, Tap>; // by cell: one bet per cell (SPEC §1)
  /** Bumped whenever the trader's committed bets (`bets`: a confirmation, a settlement, a bet re-read
   *  after a drop) or ledger (`ledger`: a balance change) may have changed: the Account view refetches
   *  what it shows then (Controller.watchAccount), never on a timer. */
  accountSeq: { bets: number; ledger: number };
  /** The newest owner-event id seen (`"<ms>-<seq>"`), sent as `resume` after a reconnect; null: none yet. */
  lastEventId: string | null;
  notice: Notice | null;
  /** The view the trader chose. Kept through a sign-out or an expired session (the sign-in shows the
   *  grid meanwhile): signing in again returns to it. */
  view: View;
}

/** Where a notice can take the trader, as a button in it: "account" (deposit there). */
export type NoticeAction = "account";
export interface Notice {
  text: string;
  at: number;
  action: NoticeAction | null;
}

export const initialState: State = {
  settings: null,
  grid: null,
  clockOffsetMs: 0,
  price: null,
  feed: { feed: "healthy", betting: true, reason: null },
  conn: { state: "connecting", attempt: 0, retryAt: null, downSince: null },
  session: null,
  signedOutReason: null,
  balance: null,
  balanceAt: null,
  balanceEvents: 0,
  isAdmin: false,
  stake: null,
  slippage: "10",
  taps: {},
  accountSeq: { bets: 0, ledger: 0 },
  lastEventId: null,
  notice: null,
  view: "trade",
};

export type Action =
  | { type: "settings"; settings: GridSettings; clockOffsetMs: number }
  | { type: "server"; msg: ServerMsg; now: number }
  | { type: "conn"; state: ConnState; attempt?: number; retryAt?: number | null; at: number }
  | { type: "signedIn"; session: Session }
  | { type: "signedOut"; reason: string | null }
  | { type: "balance"; balance: string; at: number }
  /** GET /api/v1/me answered (at `at`, local ms); `balanceEvents` is the state's count when the request was sent. */
  | { type: "me"; balance: string; isAdmin: boolean; balanceEvents: number; at: number }
  | { type: "stake"; stake: string }
  | { type: "slippage"; slippage: Slippage }
  | { type: "tapSent"; tap: Omit<Tap, "state" | "history" | "betId" | "payout" | "reason" | "resentAt"> }
  /** The identical signed body was sent again after a drop (same nonce = same bet). */
  | { type: "tapResent"; cell: string; at: number }
  /** The outcome is not known yet (the controller is finding it); `reason` says why. */
  | { type: "tapUnknown"; cell: string; reason: string }
  | { type: "truth"; cell: string; bet: BetRecord }
  /** The trader's open bets as the server lists them (after a reload, a new sign-in or a reconnect
   *  that could not resume): shown like taps of this tab, so their outcome is shown when it comes. */
  | { type: "restore"; bets: BetRecord[] }
  /** The tap never became a bet: the socket was closed when it was sent, or it was lost in a drop (the
   *  trader's history has no bet on its cell). "Not sent", not "refused": nobody refused it. */
  | { type: "tapLost"; cell: string; reason: string }
  | { type: "notice"; text: string; now: number; action?: NoticeAction }
  | { type: "clearNotice" }
  | { type: "view"; view: View };

/** States in which a cell counts as taken: a second tap there is refused before it is sent. */
export const HOLDS_CELL: readonly TapState[] = ["sending", "pending", "confirmed", "unknown", "won", "lost", "void"];

function move(t: Tap, state: TapState, patch: Partial<Tap> = {}): Tap {
  if (t.state === state && Object.keys(patch).length === 0) return t;
  return { ...t, ...patch, state, history: t.state === state ? t.history : [...t.history, state] };
}

/** A bet in one of these states never changes again. */
export function isFinal(state: TapState): boolean {
  return rank(state) === 3;
}

/** How far along a bet is: a server report never moves a tap to a lower rank (a late GET /bets/<id>
 *  or a retry's answer may be older than an event already applied). Final states never change. */
function rank(state: TapState): number {
  switch (state) {
    case "won":
    case "lost":
    case "void":
    case "rejected":
      return 3;
    case "confirmed":
      return 2;
    case "pending":
      return 1;
    default:
      return 0; // sending, unknown, unsent, error: the client's own states, which any server report replaces
  }
}

/** `move` for what the server reports: ignored when it would go backwards or leave a final state. */
function advance(t: Tap, state: TapState, patch: Partial<Tap> = {}): Tap {
  if (state !== t.state && (rank(t.state) === 3 || rank(state) < rank(t.state))) return t;
  return move(t, state, patch);
}

function findById(taps: Record<string, Tap>, betId: string): Tap | undefined {
  for (const t of Object.values(taps)) if (t.betId === betId) return t;
  return undefined;
}
/** The tap a `bet:confirmed` / `bet:rejected` is about: the one naming its bet, else the cell's tap
 *  while that names no bet yet (a re-sent tap's events may be replayed by `resume` before the answer
 *  that names the bet). Never a tap that names another bet. A `not_queued` rejection only by bet id:
 *  that bet was never queued, and the same signed body, re-sent, is placed as a new bet. */
function tapOfBet(taps: Record<string, Tap>, betId: string, cell: string, reason?: string): Tap | undefined {
  const t = findById(taps, betId);
  if (t || reason === "not_queued") return t;
  const atCell = taps[cell];
  return atCell && atCell.betId === null ? atCell : undefined;
}
/** A tap for a bet this tab did not send: it has a bet id, so it is never re-sent. */
function tapOfServerBet(b: { bet_id: string; cell: string; stake: string; multiplier: string; payout: string; reason?: string }, state: TapState, at: number): Tap {
  return {
    req: `bet-${b.bet_id}`,
    cell: b.cell,
    stake: b.stake,
    multiplier: b.multiplier,
    payout: b.payout,
    betId: b.bet_id,
    state,
    reason: b.reason ?? null,
    history: [state],
    body: null,
    sentAt: at,
    resentAt: null,
  };
}

function findByReq(taps: Record<string, Tap>, req: string): Tap | undefined {
  for (const t of Object.values(taps)) if (t.req === req) return t;
  return undefined;
}
function put(s: State, t: Tap): State {
  return s.taps[t.cell] === t ? s : { ...s, taps: { ...s.taps, [t.cell]: t } };
}

function fromStatus(status: BetStatus): TapState {
  return status; // BetStatus ⊂ TapState
}

function onServer(s: State, m: ServerMsg, now: number): State {
  switch (m.type) {
    case "price":
      return { ...s, price: { price: m.price, ts: m.ts } };
    case "grid": {
      const { type: _t, ...grid } = m;
      return { ...s, grid };
    }
    case "status":
      return { ...s, feed: { feed: m.feed, betting: m.betting, reason: m.reason ?? null } };
    case "balance":
      return { ...s, balance: m.balance, balanceAt: now, balanceEvents: s.balanceEvents + 1 };
    case "bet:accepted": {
      const t = findByReq(s.taps, m.req);
      if (!t) return s;
      // A re-sent request answers with the bet's current status (a retry of the same nonce).
      const state: TapState = m.status === "pending" ? "pending" : fromStatus(m.status);
      return put(s, advance(t, state, { betId: m.bet_id, multiplier: m.multiplier, payout: m.payout }));
    }
    case "bet:error": {
      const t = findByReq(s.taps, m.req);
      if (!t) return s;
      if (t.resentAt !== null && rank(t.state) === 0 && saysNothingOfFirstSend(m.status, m.error.code))
        // The first send may have been placed: still unknown, and the controller finds out.
        return put(s, move(t, "unknown", { reason: `Re-sent after a drop, answered “${m.error.message || m.error.code}”; checking whether the first send was placed…` }));
      return put(s, move(t, "error", { reason: m.error.message || m.error.code }));
    }
    case "bet:confirmed": {
      const t = tapOfBet(s.taps, m.bet_id, m.cell);
      // A bet of this wallet the tab has no tap for (placed before a reload, or in another tab): show it.
      if (!t) return s.taps[m.cell] ? s : put(s, tapOfServerBet(m, "confirmed", now));
      return put(s, advance(t, "confirmed", { betId: m.bet_id, multiplier: m.multiplier, payout: m.payout }));
    }
    case "bet:rejected": {
      const t = tapOfBet(s.taps, m.bet_id, m.cell, m.reason);
      if (!t) return s;
      return put(s, advance(t, "rejected", { betId: m.bet_id, reason: m.reason }));
    }
    case "bet:resolved": {
      const t = findById(s.taps, m.bet_id);
      if (!t) return s;
      return put(s, advance(t, m.status, { payout: m.payout }));
    }
    case "resumed":
      return s; // its `last` is folded into lastEventId by the reducer; the controller acts on `complete`
    case "error":
      return { ...s, notice: { text: m.error.message, at: now, action: null } };
    case "auth:ok":
      return s; // the socket reports "open" itself once authenticated
  }
}

/** Whether `a` (turning `s` into `next`) may have changed the trader's committed bets or ledger. */
function accountMoved(s: State, next: State, a: Action): { bets: boolean; ledger: boolean } {
  switch (a.type) {
    case "server":
      return {
        bets: a.msg.type === "bet:confirmed" || a.msg.type === "bet:resolved",
        ledger: a.msg.type === "balance",
      };
    case "truth":
    case "restore":
      return { bets: next.taps !== s.taps, ledger: false };
    case "balance":
    case "me":
      return { bets: false, ledger: next.balance !== s.balance };
    default:
      return { bets: false, ledger: false };
  }
}

export function reducer(s: State, a: Action): State {
  const next = step(s, a);
  const moved = accountMoved(s, next, a);
  if (!moved.bets && !moved.ledger) return next;
  const seq = next.accountSeq;
  return { ...next, accountSeq: { bets: seq.bets + (moved.bets ? 1 : 0), ledger: seq.ledger + (moved.ledger ? 1 : 0) } };
}

function step(s: State, a: Action): State {
  switch (a.type) {
    case "settings":
      return {
        ...s,
        settings: a.settings,
        clockOffsetMs: a.clockOffsetMs,
        stake: s.stake && a.settings.stake_presets.includes(s.stake) ? s.stake : (a.settings.stake_presets[0] ?? null),
      };
    case "server": {
      const next = onServer(s, a.msg, a.now);
      const id = a.msg.type === "resumed" ? a.msg.last : "id" in a.msg ? a.msg.id : undefined;
      if (!id || (next.lastEventId !== null && compareEventIds(id, next.lastEventId) <= 0)) return next;
      return { ...next, lastEventId: id };
    }
    case "conn": {
      const downSince = a.state === "open" ? null : s.conn.state === "open" ? a.at : s.conn.downSince;
      const conn = { state: a.state, attempt: a.attempt ?? 0, retryAt: a.retryAt ?? null, downSince };
      if (a.state === "open") return { ...s, conn };
      // The socket is gone: whatever was in flight has an unknown outcome until the server says.
      let taps = s.taps;
      for (const t of Object.values(s.taps)) {
        if (t.state === "sending" || t.state === "pending") taps = { ...taps, [t.cell]: move(t, "unknown") };
      }
      return { ...s, conn, taps };
    }
    case "signedIn":
      return { ...s, session: a.session, signedOutReason: null, taps: {}, lastEventId: null, balance: null, balanceAt: null, isAdmin: false };
    case "signedOut":
      return { ...s, session: null, signedOutReason: a.reason, taps: {}, lastEventId: null, balance: null, balanceAt: null, isAdmin: false };
    case "balance":
      return { ...s, balance: a.balance, balanceAt: a.at };
    case "me":
      if (!s.session) return s;
      // A balance event that arrived after the request was sent is newer than this answer.
      return a.balanceEvents === s.balanceEvents
        ? { ...s, balance: a.balance, balanceAt: a.at, isAdmin: a.isAdmin }
        : { ...s, isAdmin: a.isAdmin };
    case "stake":
      return { ...s, stake: a.stake };
    case "slippage":
      return { ...s, slippage: a.slippage };
    case "tapSent": {
      const prev = s.taps[a.tap.cell];
      if (prev && HOLDS_CELL.includes(prev.state)) return s; // one bet per cell
      const tap: Tap = { ...a.tap, state: "sending", history: ["sending"], betId: null, payout: null, reason: null, resentAt: null };
      return { ...s, taps: { ...s.taps, [tap.cell]: tap } };
    }
    case "truth": {
      const t = s.taps[a.cell];
      if (!t) return s;
      const b = a.bet;
      return put(
        s,
        advance(t, fromStatus(b.status), {
          betId: b.bet_id,
          multiplier: b.multiplier,
          payout: b.payout,
          reason: b.reason ?? null,
        }),
      );
    }
    case "restore": {
      let next = s;
      for (const b of a.bets) {
        const known = findById(next.taps, b.bet_id);
        const patch = { multiplier: b.multiplier, payout: b.payout, reason: b.reason ?? null };
        if (known) next = put(next, advance(known, fromStatus(b.status), patch));
        else if (!next.taps[b.cell]) next = put(next, tapOfServerBet(b, fromStatus(b.status), b.placed_at ?? 0));
      }
      return next;
    }
    case "tapLost": {
      // Not placed; never over what the server already said about this tap.
      const t = s.taps[a.cell];
      return t && rank(t.state) === 0 ? put(s, move(t, "unsent", { reason: a.reason })) : s;
    }
    case "tapResent": {
      const t = s.taps[a.cell];
      return t && rank(t.state) === 0 ? put(s, move(t, "unknown", { resentAt: a.at })) : s;
    }
    case "tapUnknown": {
      const t = s.taps[a.cell];
      return t && rank(t.state) === 0 ? put(s, move(t, "unknown", { reason: a.reason })) : s;
    }
    case "notice":
      return { ...s, notice: { text: a.text, at: a.now, action: a.action ?? null } };
    case "clearNotice":
      return { ...s, notice: null };
    case "view":
      return s.view === a.view ? s : { ...s, view: a.view };
  }
}

/** A grid message older than this (by server time) is out of date: the server sends one a second and
 *  refuses taps on a quote book older than TAP_QUOTE_MAX_AGE_S (2 s by default, `quotes_stale`). */
export const QUOTES_STALE_MS = 3000;

/** Whether the quotes shown are out of date at local time `nowMs` (grid messages stopped coming:
 *  a dropped connection, or a server that stopped publishing them). */
export function quotesStale(s: State, nowMs: number): boolean {
  return s.grid !== null && nowMs + s.clockOffsetMs - s.grid.ts > QUOTES_STALE_MS;
}

/** The quote of `cell` at local time `nowMs`: a multiplier, null (not offered) or undefined (locked).
 *  Locked also when the last grid message still quotes it but its column has since come within
 *  min_lead_columns of the current one: the message comes once a second, so for up to a second after
 *  each column boundary it still quotes the column that has just locked, which the server refuses. */
export function quoteAt(s: State, cell: string, nowMs: number): string | null | undefined {
  const g = s.grid;
  const st = s.settings;
  if (!g || !st) return undefined;
  const [t, r] = cell.split(":").map(Number);
  const cs = st.column_seconds;
  const nowCol = Math.floor((nowMs + s.clockOffsetMs) / 1000 / cs) * cs;
  if (t === undefined || r === undefined || t < nowCol + st.min_lead_columns * cs) return undefined;
  const i = g.columns.indexOf(t);
  const j = g.rows.indexOf(r);
  if (i < 0 || j < 0) return undefined;
  return g.quotes[i]?.[j];
}

/** The header's price is flagged as old once its last tick is this old on an open socket (ticks come ~4/s;
 *  a stalled feed also shows the feed banner), and at once while the socket is down. */
export const PRICE_STALE_MS = 5000;

/** The socket was lost and is being reconnected. Not "connecting": that is the first connection, or the
 *  new one a sign-in or sign-out opens right after closing the old (open again within a moment; flagging
 *  the figures then would flash, and tell a screen reader, at every sign-in). A first connection that
 *  fails turns "reconnecting" too. */
function socketLost(s: State): boolean {
  return s.conn.state === "reconnecting";
}

export interface FiguresFreshness {
  priceStale: boolean;
  /** Whole seconds since the last price's tick (server time); null: no price yet. */
  priceAgeS: number | null;
  /** The balance is not live: the socket that pushes its changes is down. */
  balanceStale: boolean;
  /** Whole seconds since the balance was last known current (its event, the drop, or a later /me). */
  balanceAgeS: number | null;
  /** For a screen reader's live region: changes only when the figures go stale or live again, not each second. */
  spoken: string | null;
}

/** Whether the last price is not live at local time `nowMs` (the socket is down, or no tick for a while). */
export function priceIsStale(s: State, nowMs: number): boolean {
  return s.price !== null && (socketLost(s) || nowMs + s.clockOffsetMs - s.price.ts > PRICE_STALE_MS);
}

/** How old the header's price and balance are at local time `nowMs`: while the socket is down nothing
 *  updates them, and the trader must not read a price or a balance from before the drop as current. */
export function figuresFreshness(s: State, nowMs: number): FiguresFreshness {
  const down = socketLost(s);
  const priceAgeMs = s.price ? Math.max(0, nowMs + s.clockOffsetMs - s.price.ts) : null;
  const priceStale = priceIsStale(s, nowMs);
  const balanceStale = down && s.session !== null && s.balance !== null;
  const since = Math.max(s.balanceAt ?? 0, s.conn.downSince ?? 0);
  const balanceAgeS = s.balance === null ? null : Math.floor(Math.max(0, nowMs - (since || nowMs)) / 1000);
  const spoken =
    priceStale && balanceStale
      ? "Price and balance are not live: the connection is lost. They show the last figures received."
      : priceStale
        ? down
          ? "The BTC price is not live: the connection is lost. It shows the last price received."
          : "The BTC price is not live: no update for a few seconds."
        : balanceStale
          ? "The balance is not live: the connection is lost. It shows the last balance received."
          : null;
  return {
    priceStale,
    priceAgeS: priceAgeMs === null ? null : Math.floor(priceAgeMs / 1000),
    balanceStale,
    balanceAgeS,
    spoken,
  };
}

/** Whether the balance shown is known not to cover the stake chosen. Unknown (not read yet): not
 *  short — the server is the authority and answers `insufficient_funds` if it is. A balance shown on an
 *  open socket is current within a moment (every change is pushed, and a reconnect resumes the events
 *  missed); stakes of taps not yet confirmed are not deducted: one of them may still be refused. */
export function balanceShort(s: State): boolean {
  if (s.balance === null || !s.stake) return false;
  try {
    return parseMoney(s.balance) < parseMoney(s.stake);
  } catch {
    return false; // not a money string: let the server decide
  }
}

/** A tap the page will not send: why, in words, and where the trader can act on it. */
export interface Refusal {
  text: string;
  action?: NoticeAction;
}

/** Why a tap on `cell` must not be sent now, or null when it may be. `quote` as `quoteAt` gives it;
 *  `stale` as `quotesStale` says. */
export function tapRefusal(s: State, cell: string, quote: string | null | undefined, stale = false): Refusal | null {
  const text = tapRefusalText(s, cell, quote, stale);
  if (text) return { text };
  if (balanceShort(s) && s.balance !== null && s.stake) {
    const fits = coveredPreset(s, s.balance);
    return {
      text: `Your balance (${displayMoney(s.balance)}) does not cover the stake (${s.stake}): deposit in Account${fits ? `, or pick a stake of ${fits} or less` : ""}.`,
      action: "account",
    };
  }
  return null;
}

/** The largest stake preset `balance` covers, or null. */
function coveredPreset(s: State, balance: string): string | null {
  const have = parseMoney(balance);
  let best: string | null = null;
  for (const p of s.settings?.stake_presets ?? []) {
    try {
      if (parseMoney(p) <= have && (best === null || parseMoney(p) > parseMoney(best))) best = p;
    } catch {
      /* not a money string: not offered */
    }
  }
  return best;
}

function tapRefusalText(s: State, cell: string, quote: string | null | undefined, stale: boolean): string | null {
  if (!s.session) return "Sign in to place bets.";
  if (s.conn.state !== "open") return "Not connected: taps are paused until the connection is back.";
  if (!s.feed.betting)
    return s.feed.reason ? `Betting is halted: ${s.feed.reason}` : "Betting is suspended right now.";
  const prev = s.taps[cell];
  if (prev && HOLDS_CELL.includes(prev.state)) return "You already have a bet on this cell.";
  if (quote === undefined) return "This cell is locked: it is too close or already running.";
  if (quote === null) return "This cell is not offered (a near-certain touch).";
  if (stale) return "The quotes are out of date (no update for a few seconds); wait for fresh ones.";
  if (!s.stake) return "Choose a stake first.";
  return null;
}

type Listener = () => void;

/** A minimal store: one state, one reducer, subscribers (useSyncExternalStore). The trader app's and
 *  the console's stores are both this, each with its own state and reducer. */
export class ReducerStore<S, A> {
  private state: S;
  private listeners = new Set<Listener>();
  constructor(
    private readonly reduce: (s: S, a: A) => S,
    initial: S,
  ) {
    this.state = initial;
  }
  get = (): S => this.state;
  dispatch = (a: A): void => {
    const next = this.reduce(this.state, a);
    if (next !== this.state) {
      this.state = next;
      for (const l of this.listeners) l();
    }
  };
  subscribe = (l: Listener): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };
}

/** The trader app's store. */
export class Store extends ReducerStore<State, Action> {
  constructor(initial: State = initialState) {
    super(reducer, initial);
  }
}
