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

export type ServerMsg =
  | { type: "price"; price: string; ts: number }
  | ({ type: "grid" } & GridQuotes)
  | StatusMsg
  | { type: "balance"; balance: string }
  | ({ type: "bet:accepted"; req: string; bet_id: string; status: BetStatus } & BetFields)
  | { type: "bet:error"; req: string; status: number; error: ApiError; retry_after?: number }
  | ({ type: "bet:confirmed"; bet_id: string; status: "confirmed" } & BetFields)
  | { type: "bet:rejected"; bet_id: string; cell: string; reason: string }
  | { type: "bet:resolved"; bet_id: string; status: "won" | "lost" | "void"; payout: string }
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
export type ClientMsg = { type: "auth"; token: string } | ({ type: "bet"; req: string } & BetRequest);

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
      return { type, balance: money(o, "balance") };
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
      return { type, bet_id: str(o, "bet_id"), status: "confirmed", ...betFields(o) };
    case "bet:rejected":
      return { type, bet_id: str(o, "bet_id"), cell: str(o, "cell"), reason: str(o, "reason") };
    case "bet:resolved": {
      const status = str(o, "status");
      if (status !== "won" && status !== "lost" && status !== "void") throw new WireError(`status: ${status}`);
      return { type, bet_id: str(o, "bet_id"), status, payout: money(o, "payout") };
    }
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
