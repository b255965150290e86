// The wire contract (SPEC §5–§8a, docs/API.md) in one module: types and strict parsers.
// Everything that arrives from the server goes through a parser here; nothing is `any`.
import { isMoney } from "./money";

export type FeedState = "healthy" | "degraded" | "critical";
export type BetStatus = "pending" | "confirmed" | "rejected" | "won" | "lost" | "void";
export type Hex = `0x${string}`;

export interface GridSettings {
  column_seconds: number;
  price_step: string;
  columns_ahead: number;
  min_lead_columns: number;
  rows_each_side: number;
  house_edge: string;
  stake_presets: string[];
  min_stake: string;
  max_stake: string;
  chain_id: number;
  siwe_domain: string;
}

export interface GridQuotes {
  ts: number;
  price: string | null;
  current_row: number | null;
  column_seconds: number;
  price_step: string;
  columns: number[];
  rows: number[];
  /** quotes[i][j] is the multiplier of cell `${columns[i]}:${rows[j]}`; null: not offered. */
  quotes: (string | null)[][];
}

export interface StatusMsg {
  type: "status";
  feed: FeedState;
  betting: boolean;
  reason?: string;
}

export interface GridResponse extends GridQuotes {
  server_time: number;
  feed: StatusMsg;
  settings: GridSettings;
}

export interface ApiError {
  code: string;
  message: string;
}

export interface BetFields {
  cell: string;
  stake: string;
  multiplier: string;
  payout: string;
}

/** The trader's own events (`bet:confirmed`, `bet:rejected`, `bet:resolved`, `balance`) carry `id`, a
 *  Redis Stream id `"<ms>-<seq>"` (docs/API.md "Resuming after a reconnect"); compare with compareEventIds. */
export interface EventId {
  id?: string;
}

export type ServerMsg =
  | { type: "price"; price: string; ts: number }
  | ({ type: "grid" } & GridQuotes)
  | StatusMsg
  | ({ type: "balance"; balance: string } & EventId)
  | ({ type: "bet:accepted"; req: string; bet_id: string; status: BetStatus } & BetFields)
  | { type: "bet:error"; req: string; status: number; error: ApiError; retry_after?: number }
  | ({ type: "bet:confirmed"; bet_id: string; status: "confirmed" } & BetFields & EventId)
  | ({ type: "bet:rejected"; bet_id: string; cell: string; reason: string } & EventId)
  | ({ type: "bet:resolved"; bet_id: string; status: "won" | "lost" | "void"; payout: string } & EventId)
  /** The answer to `resume`: the missed events came first; `complete: false` means some may have been trimmed. */
  | { type: "resumed"; after: string; last: string | null; complete: boolean }
  | { type: "error"; error: ApiError }
  | { type: "auth:ok"; address: Hex };

/** Client → server over the websocket (SPEC §8, §8a). */
export interface BetRequest {
  cell: string;
  stake: string;
  min_multiplier: string;
  nonce: string;
  ts: number;
  signature: Hex;
}
export type ClientMsg =
  | { type: "auth"; token: string }
  | ({ type: "bet"; req: string } & BetRequest)
  /** Replay the trader's events after `after` (the last event id seen), once authenticated. */
  | { type: "resume"; after: string };

export interface LoginResponse {
  token: string;
  address: Hex;
  session_key: Hex | null;
  expires_at: number;
}

export interface Me {
  address: Hex;
  balance: string;
  open_stakes: string;
  open_bets: number;
  is_admin: boolean;
}

export interface BetRecord extends BetFields {
  bet_id: string;
  status: BetStatus;
  potential_payout: string;
  placed_at: number | null;
  settled_at: number | null;
  reason?: string;
}

export interface BetPage {
  bets: BetRecord[];
  next_cursor: string | null;
}

export interface LedgerEntry {
  id: number | string;
  amount: string;
  balance_after: string;
  ref_type: string;
  ref_id: string | null;
  created_at: number;
}

export interface LedgerPage {
  entries: LedgerEntry[];
  next_cursor: string | null;
}

export interface MoneyMove {
  balance?: string;
  amount?: string;
  ref_id?: string;
  status?: string;
}

// ---- parsing -------------------------------------------------------------------------------------

export class WireError extends Error {
  override name = "WireError";
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new WireError(`${what}: not an object`);
  return v as Obj;
}
function str(o: Obj, k: string): string {
  const v = o[k];
  if (typeof v !== "string") throw new WireError(`${k}: expected a string`);
  return v;
}
function optStr(o: Obj, k: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new WireError(`${k}: expected a string`);
  return v;
}
function int(o: Obj, k: string): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new WireError(`${k}: expected an integer`);
  return v;
}
function optInt(o: Obj, k: string): number | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  return int(o, k);
}
function bool(o: Obj, k: string): boolean {
  const v = o[k];
  if (typeof v !== "boolean") throw new WireError(`${k}: expected a boolean`);
  return v;
}
function money(o: Obj, k: string): string {
  const v = str(o, k);
  if (!isMoney(v)) throw new WireError(`${k}: not a money string: ${v}`);
  return v;
}
function signedMoney(o: Obj, k: string): string {
  const v = str(o, k);
  if (!isMoney(v.startsWith("-") ? v.slice(1) : v)) throw new WireError(`${k}: not a money string: ${v}`);
  return v;
}
const DECIMAL = /^(0|[1-9][0-9]*)(\.[0-9]+)?$/;
function decimal(o: Obj, k: string): string {
  const v = str(o, k);
  if (!DECIMAL.test(v)) throw new WireError(`${k}: not a decimal string: ${v}`);
  return v;
}
function intArray(o: Obj, k: string): number[] {
  const v = o[k];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isSafeInteger(x)))
    throw new WireError(`${k}: expected integers`);
  return v as number[];
}
function hex(o: Obj, k: string): Hex {
  const v = str(o, k);
  if (!/^0x[0-9a-fA-F]+$/.test(v)) throw new WireError(`${k}: not hex`);
  return v as Hex;
}
const FEEDS: readonly FeedState[] = ["healthy", "degraded", "critical"];
const STATUSES: readonly BetStatus[] = ["pending", "confirmed", "rejected", "won", "lost", "void"];
function betStatus(o: Obj, k: string): BetStatus {
  const v = str(o, k);
  if (!(STATUSES as readonly string[]).includes(v)) throw new WireError(`${k}: unknown bet status ${v}`);
  return v as BetStatus;
}

export function parseApiError(v: unknown): ApiError {
  const e = obj(obj(v, "error body")["error"], "error");
  return { code: str(e, "code"), message: str(e, "message") };
}

export function parseStatus(v: unknown): StatusMsg {
  const o = obj(v, "status");
  const feed = str(o, "feed");
  if (!(FEEDS as readonly string[]).includes(feed)) throw new WireError(`feed: unknown state ${feed}`);
  const reason = optStr(o, "reason");
  return { type: "status", feed: feed as FeedState, betting: bool(o, "betting"), ...(reason ? { reason } : {}) };
}

export function parseGridQuotes(v: unknown): GridQuotes {
  const o = obj(v, "grid");
  const columns = intArray(o, "columns");
  const rows = intArray(o, "rows");
  const q = o["quotes"];
  if (!Array.isArray(q) || q.length !== columns.length) throw new WireError("quotes: one line per column expected");
  const quotes = q.map((line: unknown) => {
    if (!Array.isArray(line) || line.length !== rows.length) throw new WireError("quotes: one entry per row expected");
    return line.map((m: unknown) => {
      if (m === null) return null;
      if (typeof m !== "string" || !DECIMAL.test(m)) throw new WireError("quotes: multiplier must be a decimal string");
      return m;
    });
  });
  const price = o["price"] === null ? null : decimal(o, "price");
  return {
    ts: int(o, "ts"),
    price,
    current_row: optInt(o, "current_row"),
    column_seconds: int(o, "column_seconds"),
    price_step: decimal(o, "price_step"),
    columns,
    rows,
    quotes,
  };
}

export function parseSettings(v: unknown): GridSettings {
  const o = obj(v, "settings");
  const presets = o["stake_presets"];
  if (!Array.isArray(presets) || !presets.every((p) => typeof p === "string" && isMoney(p)))
    throw new WireError("stake_presets: money strings expected");
  return {
    column_seconds: int(o, "column_seconds"),
    price_step: decimal(o, "price_step"),
    columns_ahead: int(o, "columns_ahead"),
    min_lead_columns: int(o, "min_lead_columns"),
    rows_each_side: int(o, "rows_each_side"),
    house_edge: decimal(o, "house_edge"),
    stake_presets: presets as string[],
    min_stake: money(o, "min_stake"),
    max_stake: money(o, "max_stake"),
    chain_id: int(o, "chain_id"),
    siwe_domain: str(o, "siwe_domain"),
  };
}

export function parseGridResponse(v: unknown): GridResponse {
  const o = obj(v, "grid response");
  // An empty book (no price yet) has no ts/column data: fill from settings.
  const settings = parseSettings(o["settings"]);
  const base = o["price"] === null
    ? { ts: int(o, "server_time"), price: null, current_row: null, column_seconds: settings.column_seconds,
        price_step: settings.price_step, columns: [], rows: [], quotes: [] }
    : parseGridQuotes(o);
  return { ...base, server_time: int(o, "server_time"), feed: parseStatus(o["feed"]), settings };
}

const EVENT_ID = /^([0-9]+)-([0-9]+)$/;
function eventIdParts(id: string): [bigint, bigint] {
  const m = EVENT_ID.exec(id);
  if (!m) throw new WireError(`not an event id: ${id}`);
  return [BigInt(m[1] ?? "0"), BigInt(m[2] ?? "0")];
}
function eventId(o: Obj, k: string): string {
  const v = str(o, k);
  eventIdParts(v);
  return v;
}
/** The optional `id` of an owner event, as `{ id }` to spread, or nothing. */
function optEventId(o: Obj): EventId {
  return o["id"] === undefined || o["id"] === null ? {} : { id: eventId(o, "id") };
}
/** Order two event ids `"<ms>-<seq>"` as (ms, seq) integer pairs: < 0, 0 or > 0. */
export function compareEventIds(a: string, b: string): number {
  const [am, as] = eventIdParts(a);
  const [bm, bs] = eventIdParts(b);
  if (am !== bm) return am < bm ? -1 : 1;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

function betFields(o: Obj): BetFields {
  return { cell: str(o, "cell"), stake: money(o, "stake"), multiplier: decimal(o, "multiplier"), payout: money(o, "payout") };
}

/** Parse one websocket text frame. Unknown types are a WireError (the caller logs and ignores them). */
export function parseServerMsg(text: string): ServerMsg {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new WireError("not JSON");
  }
  const o = obj(raw, "message");
  const type = str(o, "type");
  switch (type) {
    case "price":
      return { type, price: decimal(o, "price"), ts: int(o, "ts") };
    case "grid":
      return { type, ...parseGridQuotes(o) };
    case "status":
      return parseStatus(o);
    case "balance":
      return { type, balance: money(o, "balance"), ...optEventId(o) };
    case "bet:accepted":
      return { type, req: str(o, "req"), bet_id: str(o, "bet_id"), status: betStatus(o, "status"), ...betFields(o) };
    case "bet:error": {
      const retry = o["retry_after"];
      return {
        type,
        req: str(o, "req"),
        status: int(o, "status"),
        error: parseApiError(o),
        ...(typeof retry === "number" ? { retry_after: retry } : {}),
      };
    }
    case "bet:confirmed":
      return { type, bet_id: str(o, "bet_id"), status: "confirmed", ...betFields(o), ...optEventId(o) };
    case "bet:rejected":
      return { type, bet_id: str(o, "bet_id"), cell: str(o, "cell"), reason: str(o, "reason"), ...optEventId(o) };
    case "bet:resolved": {
      const status = str(o, "status");
      if (status !== "won" && status !== "lost" && status !== "void") throw new WireError(`status: ${status}`);
      return { type, bet_id: str(o, "bet_id"), status, payout: money(o, "payout"), ...optEventId(o) };
    }
    case "resumed":
      return {
        type,
        after: eventId(o, "after"),
        last: o["last"] === null || o["last"] === undefined ? null : eventId(o, "last"),
        complete: bool(o, "complete"),
      };
    case "error":
      return { type, error: parseApiError(o) };
    case "auth:ok":
      return { type, address: hex(o, "address") };
    default:
      throw new WireError(`unknown message type ${type}`);
  }
}

export function parseLogin(v: unknown): LoginResponse {
  const o = obj(v, "login");
  const sk = o["session_key"];
  return {
    token: str(o, "token"),
    address: hex(o, "address"),
    session_key: sk === null || sk === undefined ? null : hex(o, "session_key"),
    expires_at: int(o, "expires_at"),
  };
}

export function parseMe(v: unknown): Me {
  const o = obj(v, "me");
  return {
    address: hex(o, "address"),
    balance: money(o, "balance"),
    open_stakes: money(o, "open_stakes"),
    open_bets: int(o, "open_bets"),
    is_admin: o["is_admin"] === true,
  };
}

export function parseBetRecord(v: unknown): BetRecord {
  const o = obj(v, "bet");
  const reason = optStr(o, "reason");
  return {
    bet_id: str(o, "bet_id"),
    status: betStatus(o, "status"),
    ...betFields(o),
    potential_payout: o["potential_payout"] === undefined ? money(o, "payout") : money(o, "potential_payout"),
    placed_at: optInt(o, "placed_at"),
    settled_at: optInt(o, "settled_at"),
    ...(reason ? { reason } : {}),
  };
}

function cursor(o: Obj): string | null {
  const c = o["next_cursor"];
  if (c === null || c === undefined) return null;
  if (typeof c !== "string") throw new WireError("next_cursor: expected a string");
  return c;
}

export function parseBetPage(v: unknown): BetPage {
  const o = obj(v, "bets");
  const bets = o["bets"];
  if (!Array.isArray(bets)) throw new WireError("bets: expected a list");
  return { bets: bets.map(parseBetRecord), next_cursor: cursor(o) };
}

export function parseLedgerPage(v: unknown): LedgerPage {
  const o = obj(v, "ledger");
  const entries = o["entries"];
  if (!Array.isArray(entries)) throw new WireError("entries: expected a list");
  return {
    entries: entries.map((e: unknown) => {
      const r = obj(e, "entry");
      const id = r["id"];
      if (typeof id !== "number" && typeof id !== "string") throw new WireError("id: expected a number or string");
      return {
        id,
        amount: signedMoney(r, "amount"),
        balance_after: money(r, "balance_after"),
        ref_type: str(r, "ref_type"),
        ref_id: optStr(r, "ref_id") ?? null,
        created_at: int(r, "created_at"),
      };
    }),
    next_cursor: cursor(o),
  };
}

export function parseMoneyMove(v: unknown): MoneyMove {
  const o = obj(v, "movement");
  const out: MoneyMove = {};
  const b = optStr(o, "balance");
  if (b !== undefined) out.balance = money(o, "balance");
  const a = optStr(o, "amount");
  if (a !== undefined) out.amount = a;
  const r = optStr(o, "ref_id");
  if (r !== undefined) out.ref_id = r;
  const s = optStr(o, "status");
  if (s !== undefined) out.status = s;
  return out;
}

export function parseNonce(v: unknown): string {
  const n = str(obj(v, "nonce"), "nonce");
  if (!/^[A-Za-z0-9]{8,64}$/.test(n)) throw new WireError("nonce: not 8–64 alphanumerics");
  return n;
}

// ---- the operator console (SPEC §8b, §8c; docs/API.md "Admin (operator) routes") ------------------

export interface BreakerState {
  state: FeedState;
  betting: boolean;
  age_s: number | null;
  recovering: boolean;
  recovery_left_s: number | null;
}
export interface FeedSource {
  source: string;
  price: string | null;
  /** Seconds since its last price arrived (a float: a duration, not money). */
  age_s: number | null;
  fresh: boolean;
  median: string | null;
  /** Deviation from the median of the fresh sources, parts per million (an integer). */
  deviation_ppm: number | null;
}
export interface FeedTransition {
  at: number;
  feed: FeedState;
  betting: boolean;
  halted: boolean;
  reason: string | null;
}
/** Each source's age (seconds, null before its first price) per second the console worker sampled,
 * over the overview's `?window=`. */
export interface AgeSeries {
  /** Unix seconds, ascending. */
  at: number[];
  sources: Record<string, (number | null)[]>;
}
export interface FeedPanel {
  breaker: BreakerState;
  last_price: string | null;
  last_tick_ts: number | null;
  sources: FeedSource[];
  /** When the console worker sampled `sources` (Unix ms; null: never): their ages are as of then. */
  sources_at: number | null;
  age_series: AgeSeries;
  max_deviation: string;
  transitions: FeedTransition[];
}
export interface BettingAction {
  at: number;
  address: string;
  action: "halt" | "reopen";
  reason: string | null;
}
export interface BettingState {
  open: boolean;
  halted: boolean;
  reason: string | null;
  by: string | null;
  at: number | null;
  breaker_open: boolean;
  /** When the answering worker last read the switch from Redis (Unix ms): the state above is as of
   *  then. null: not read yet, so the state is unknown. */
  read_at: number | null;
  /** Seconds since `read_at`, at the answer. */
  read_age_s: number | null;
  /** Why the latest read failed (Redis unreachable): the state is unconfirmed since `read_at`. */
  read_error: string | null;
  actions: BettingAction[];
}
export interface WriterPanel {
  queue_depth: number;
  queue_max: number;
  batch_max: number;
  series: {
    at: number[];
    commits: number[];
    batch_mean: (number | null)[];
    commit_p50_ms: (number | null)[];
    commit_p99_ms: (number | null)[];
    queue_depth: number[];
  };
}
export interface TapsPanel {
  /** Unix seconds of the first entry of every series. */
  start: number;
  seconds: number;
  by_outcome: Record<string, number[]>;
  totals: Record<string, number>;
}
export interface ResolverPanel {
  oldest_open_window: number | null;
  lag_s: number;
}
export interface ExposureColumn {
  t_start: number;
  placeable: boolean;
  closed: boolean;
  liability: string;
  used: string | null;
  /** Row → open potential payout (money). */
  cells: Record<string, string>;
}
export interface ExposureCell {
  cell: string;
  liability: string;
  used: string | null;
  band: [string, string];
}
export interface ExposurePanel {
  cell_cap: string;
  column_cap: string;
  total: string;
  columns: ExposureColumn[];
  largest_cells: ExposureCell[];
}
export interface HouseSummary {
  bets: number;
  won: number;
  staked: string;
  paid: string;
  /** staked − paid: signed money. */
  house_result: string;
  /** paid / staked, 4 decimals floored; null with nothing staked. */
  realised_return: string | null;
  voided: number;
  refunded: string;
  day: string | null;
}
export interface HousePanel {
  target_return: string;
  today: HouseSummary & { buckets: Record<string, HouseSummary> };
  week: HouseSummary & { buckets: Record<string, HouseSummary> };
  days: HouseSummary[];
}
export interface LocalWeek {
  week: string;
  file: string;
  size: number;
  state: string;
}
export interface ArchivedWeek {
  week: string;
  compressed_size: number;
  raw_size: number | null;
  last_modified: string | null;
  restored: boolean;
}
export interface WeeksPanel {
  /** Why the last listing of the archive target failed (then `archived` is the older listing's). */
  error: string | null;
  local: LocalWeek[];
  /** As of `listed_at`: the server lists the archive target in the background, never on a poll. */
  archived: ArchivedWeek[];
  target: string | null;
  /** Unix ms of the last successful listing; null: none yet (`archived` is then unknown, not empty). */
  listed_at: number | null;
  /** Seconds since `listed_at`, at `server_time`. */
  age_s: number | null;
  /** A listing is running now. */
  refreshing: boolean;
}
export type IntegrityRunState = "running" | "ok" | "violations" | "failed" | "interrupted";
export interface IntegrityRun {
  id: string;
  state: IntegrityRunState;
  by: string | null;
  started_at: number | null;
  finished_at: number | null;
  files_done: number;
  files_total: number | null;
  current_file: string | null;
  violations: number;
  first_violations: string[];
  seconds: number | null;
  error: string | null;
}
export interface Overview {
  server_time: number;
  worker: number | null;
  /** When the answering worker started (Unix ms): its per-process series (taps, writer) begin then;
   *  its taps for earlier seconds are 0 because it did not count them, not because there were none. */
  series_since: number;
  feed: FeedPanel;
  betting: BettingState;
  writer: WriterPanel;
  taps: TapsPanel;
  websocket: { clients: number };
  resolver: ResolverPanel;
  exposure: ExposurePanel;
  house: HousePanel;
  weeks: WeeksPanel;
  integrity: IntegrityRun | null;
}

function num(o: Obj, k: string): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isFinite(v)) throw new WireError(`${k}: expected a number`);
  return v;
}
function optNum(o: Obj, k: string): number | null {
  const v = o[k];
  return v === undefined || v === null ? null : num(o, k);
}
function list<T>(o: Obj, k: string, each: (v: unknown) => T): T[] {
  const v = o[k];
  if (!Array.isArray(v)) throw new WireError(`${k}: expected a list`);
  return v.map(each);
}
function numList(o: Obj, k: string): number[] {
  return list(o, k, (x) => {
    if (typeof x !== "number" || !Number.isFinite(x)) throw new WireError(`${k}: numbers expected`);
    return x;
  });
}
function optNumList(o: Obj, k: string): (number | null)[] {
  return list(o, k, (x) => {
    if (x === null) return null;
    if (typeof x !== "number" || !Number.isFinite(x)) throw new WireError(`${k}: numbers or null expected`);
    return x;
  });
}
function feedState(o: Obj, k: string): FeedState {
  const v = str(o, k);
  if (!(FEEDS as readonly string[]).includes(v)) throw new WireError(`${k}: unknown feed state ${v}`);
  return v as FeedState;
}
/** A ratio such as realised_return: a decimal string, possibly negative, or null. */
function optRatio(o: Obj, k: string): string | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  const s = str(o, k);
  if (!DECIMAL.test(s.startsWith("-") ? s.slice(1) : s)) throw new WireError(`${k}: not a decimal string: ${s}`);
  return s;
}

function parseAgeSeries(v: unknown): AgeSeries {
  const o = obj(v, "age_series");
  const at = intArray(o, "at");
  const by = obj(o["sources"], "age_series.sources");
  const sources: Record<string, (number | null)[]> = {};
  for (const k of Object.keys(by)) {
    const series = optNumList(by, k);
    if (series.length !== at.length) throw new WireError(`age_series.sources.${k}: ${at.length} entries expected`);
    sources[k] = series;
  }
  return { at, sources };
}

function parseFeedPanel(v: unknown): FeedPanel {
  const o = obj(v, "feed");
  const b = obj(o["breaker"], "breaker");
  return {
    breaker: {
      state: feedState(b, "state"),
      betting: bool(b, "betting"),
      age_s: optNum(b, "age_s"),
      recovering: bool(b, "recovering"),
      recovery_left_s: optNum(b, "recovery_left_s"),
    },
    last_price: o["last_price"] === null ? null : decimal(o, "last_price"),
    last_tick_ts: optInt(o, "last_tick_ts"),
    sources: list(o, "sources", (x) => {
      const s = obj(x, "source");
      return {
        source: str(s, "source"),
        price: s["price"] === null ? null : decimal(s, "price"),
        age_s: optNum(s, "age_s"),
        fresh: bool(s, "fresh"),
        median: s["median"] === null || s["median"] === undefined ? null : decimal(s, "median"),
        deviation_ppm: optInt(s, "deviation_ppm"),
      };
    }),
    sources_at: optInt(o, "sources_at"),
    age_series: parseAgeSeries(o["age_series"]),
    max_deviation: decimal(o, "max_deviation"),
    transitions: list(o, "transitions", (x) => {
      const t = obj(x, "transition");
      return {
        at: int(t, "at"),
        feed: feedState(t, "feed"),
        betting: bool(t, "betting"),
        halted: t["halted"] === true,
        reason: optStr(t, "reason") ?? null,
      };
    }),
  };
}

/** The answer to POST /api/v1/admin/betting: the state, and whether the action made it into the audit
 *  log (`recorded: false`: it is in effect, but the database did not take its record). */
export interface BettingActionResult extends BettingState {
  recorded: boolean;
}
export function parseBettingActionResult(v: unknown): BettingActionResult {
  return { ...parseBettingState(v), recorded: bool(obj(v, "betting"), "recorded") };
}

export function parseBettingState(v: unknown): BettingState {
  const o = obj(v, "betting");
  return {
    open: bool(o, "open"),
    halted: bool(o, "halted"),
    reason: optStr(o, "reason") ?? null,
    by: optStr(o, "by") ?? null,
    at: optInt(o, "at"),
    breaker_open: bool(o, "breaker_open"),
    read_at: optInt(o, "read_at"),
    read_age_s: optNum(o, "read_age_s"),
    read_error: optStr(o, "read_error") ?? null,
    actions: list(o, "actions", (x) => {
      const a = obj(x, "action");
      const action = str(a, "action");
      if (action !== "halt" && action !== "reopen") throw new WireError(`action: ${action}`);
      return { at: int(a, "at"), address: str(a, "address"), action, reason: optStr(a, "reason") ?? null };
    }),
  };
}

function parseWriterPanel(v: unknown): WriterPanel {
  const o = obj(v, "writer");
  const s = obj(o["series"], "writer series");
  return {
    queue_depth: int(o, "queue_depth"),
    queue_max: int(o, "queue_max"),
    batch_max: int(o, "batch_max"),
    series: {
      at: intArray(s, "at"),
      commits: intArray(s, "commits"),
      batch_mean: optNumList(s, "batch_mean"),
      commit_p50_ms: optNumList(s, "commit_p50_ms"),
      commit_p99_ms: optNumList(s, "commit_p99_ms"),
      queue_depth: intArray(s, "queue_depth"),
    },
  };
}

function intRecord(v: unknown, what: string): Record<string, number> {
  const o = obj(v, what);
  const out: Record<string, number> = {};
  for (const k of Object.keys(o)) out[k] = int(o, k);
  return out;
}

export function parseTapsPanel(v: unknown): TapsPanel {
  const o = obj(v, "taps");
  const seconds = int(o, "seconds");
  const by = obj(o["by_outcome"], "by_outcome");
  const by_outcome: Record<string, number[]> = {};
  for (const k of Object.keys(by)) {
    const series = intArray(by, k);
    if (series.length !== seconds) throw new WireError(`by_outcome.${k}: ${seconds} entries expected`);
    by_outcome[k] = series;
  }
  return { start: int(o, "start"), seconds, by_outcome, totals: intRecord(o["totals"], "totals") };
}

function parseExposurePanel(v: unknown): ExposurePanel {
  const o = obj(v, "exposure");
  return {
    cell_cap: money(o, "cell_cap"),
    column_cap: money(o, "column_cap"),
    total: money(o, "total"),
    columns: list(o, "columns", (x) => {
      const c = obj(x, "column");
      const cellsObj = obj(c["cells"], "cells");
      const cells: Record<string, string> = {};
      for (const k of Object.keys(cellsObj)) {
        if (!/^-?[0-9]+$/.test(k)) throw new WireError(`cells: row ${k} is not an integer`);
        cells[k] = money(cellsObj, k);
      }
      return {
        t_start: int(c, "t_start"),
        placeable: bool(c, "placeable"),
        closed: bool(c, "closed"),
        liability: money(c, "liability"),
        used: optRatio(c, "used"),
        cells,
      };
    }),
    largest_cells: list(o, "largest_cells", (x) => {
      const c = obj(x, "cell");
      const band = c["band"];
      if (!Array.isArray(band) || band.length !== 2 || !band.every((p) => typeof p === "string" && DECIMAL.test(p)))
        throw new WireError("band: two prices expected");
      return {
        cell: str(c, "cell"),
        liability: money(c, "liability"),
        used: optRatio(c, "used"),
        band: [band[0] as string, band[1] as string],
      };
    }),
  };
}

function parseHouseSummary(v: unknown): HouseSummary {
  const o = obj(v, "house summary");
  return {
    bets: int(o, "bets"),
    won: int(o, "won"),
    staked: money(o, "staked"),
    paid: money(o, "paid"),
    house_result: signedMoney(o, "house_result"),
    realised_return: optRatio(o, "realised_return"),
    voided: int(o, "voided"),
    refunded: money(o, "refunded"),
    day: optStr(o, "day") ?? null,
  };
}
function parseHouseBlock(v: unknown): HouseSummary & { buckets: Record<string, HouseSummary> } {
  const o = obj(v, "house block");
  const b = obj(o["buckets"], "buckets");
  const buckets: Record<string, HouseSummary> = {};
  for (const k of Object.keys(b)) buckets[k] = parseHouseSummary(b[k]);
  return { ...parseHouseSummary(o), buckets };
}

function parseHousePanel(v: unknown): HousePanel {
  const o = obj(v, "house");
  return {
    target_return: decimal(o, "target_return"),
    today: parseHouseBlock(o["today"]),
    week: parseHouseBlock(o["week"]),
    days: list(o, "days", parseHouseSummary),
  };
}

function parseWeeksPanel(v: unknown): WeeksPanel {
  const o = obj(v, "weeks");
  return {
    error: optStr(o, "error") ?? null,
    local: list(o, "local", (x) => {
      const w = obj(x, "week");
      return { week: str(w, "week"), file: str(w, "file"), size: int(w, "size"), state: str(w, "state") };
    }),
    archived: list(o, "archived", (x) => {
      const w = obj(x, "archived week");
      return {
        week: str(w, "week"),
        compressed_size: int(w, "compressed_size"),
        raw_size: optInt(w, "raw_size"),
        last_modified: optStr(w, "last_modified") ?? null,
        restored: bool(w, "restored"),
      };
    }),
    target: optStr(o, "target") ?? null,
    listed_at: optInt(o, "listed_at"),
    age_s: optNum(o, "age_s"),
    refreshing: bool(o, "refreshing"),
  };
}

const RUN_STATES: readonly IntegrityRunState[] = ["running", "ok", "violations", "failed", "interrupted"];
export function parseIntegrityRun(v: unknown): IntegrityRun | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, "integrity run");
  const state = str(o, "state");
  if (!(RUN_STATES as readonly string[]).includes(state)) throw new WireError(`state: ${state}`);
  const fv = o["first_violations"];
  return {
    id: str(o, "id"),
    state: state as IntegrityRunState,
    by: optStr(o, "by") ?? null,
    started_at: optInt(o, "started_at"),
    finished_at: optInt(o, "finished_at"),
    files_done: optInt(o, "files_done") ?? 0,
    files_total: optInt(o, "files_total"),
    current_file: optStr(o, "current_file") ?? null,
    violations: optInt(o, "violations") ?? 0,
    first_violations: Array.isArray(fv) ? fv.filter((x): x is string => typeof x === "string") : [],
    seconds: optNum(o, "seconds"),
    error: optStr(o, "error") ?? null,
  };
}

export function parseIntegrityState(v: unknown): IntegrityRun | null {
  return parseIntegrityRun(obj(v, "integrity state")["last"]);
}

export function parseOverview(v: unknown): Overview {
  const o = obj(v, "overview");
  return {
    server_time: int(o, "server_time"),
    worker: optInt(o, "worker"),
    series_since: int(o, "series_since"),
    feed: parseFeedPanel(o["feed"]),
    betting: parseBettingState(o["betting"]),
    writer: parseWriterPanel(o["writer"]),
    taps: parseTapsPanel(o["taps"]),
    websocket: { clients: int(obj(o["websocket"], "websocket"), "clients") },
    resolver: (() => {
      const r = obj(o["resolver"], "resolver");
      return { oldest_open_window: optInt(r, "oldest_open_window"), lag_s: num(r, "lag_s") };
    })(),
    exposure: parseExposurePanel(o["exposure"]),
    house: parseHousePanel(o["house"]),
    weeks: parseWeeksPanel(o["weeks"]),
    integrity: parseIntegrityRun(o["integrity"]),
  };
}
