// Account: deposit (dev-mode mock rail), withdrawal, bet history (cursor-paged, by status), ledger.
// Amounts stay decimal strings from the input to the wire and back. Both lists follow the trader's
// events (a bet confirmed or settled, a balance change): re-read shortly after one, never on a timer.
import { useCallback, useEffect, useRef, useState, type KeyboardEvent } from "react";
import { ApiFailure } from "../api";
import { ACCOUNT_PAGE, REREAD_MAX_ROWS, type Controller } from "../controller";
import { rovingIndex } from "../keys";
import { cellText } from "../layout";
import { displayMoney, parsePriceCents } from "../money";
import type { BetRecord, BetStatus, LedgerEntry } from "../wire";

function errText(e: unknown): string {
  return e instanceof ApiFailure ? e.message : e instanceof Error ? e.message : String(e);
}

function newKey(): string {
  return crypto.randomUUID();
}

function MoneyForm({ ctl, kind, label, focusNow, onFocused }: { ctl: Controller; kind: "deposits" | "withdrawals"; label: string; focusNow?: boolean; onFocused?: () => void }) {
  const [amount, setAmount] = useState("");
  const input = useRef<HTMLInputElement>(null);
  // Asked for once (the trade view's "Deposit in Account"): the trader came here to type an amount.
  useEffect(() => {
    if (!focusNow) return;
    input.current?.focus();
    onFocused?.();
  }, [focusNow, onFocused]);
  const [msg, setMsg] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // One key per intended movement: a retry of the same amount reuses it, so money moves once.
  const [key, setKey] = useState(newKey);
  const id = `${kind}-amount`;
  return (
    <form
      className="money-form"
      onSubmit={(e) => {
        e.preventDefault();
        setBusy(true);
        setMsg(null);
        ctl
          .move(kind, amount, key)
          .then((r) => {
            setMsg(r.status === "pending" ? "Submitted; the ledger will show the outcome." : `Done. Balance ${displayMoney(r.balance ?? "0")}.`);
            setAmount("");
            setKey(newKey());
          })
          .catch((e: unknown) => setMsg(errText(e)))
          .finally(() => setBusy(false));
      }}
    >
      <label htmlFor={id}>{label}</label>
      <input
        id={id}
        ref={input}
        inputMode="decimal"
        autoComplete="off"
        value={amount}
        onChange={(e) => {
          setAmount(e.target.value);
          setKey(newKey());
        }}
        placeholder="100"
      />
      <button type="submit" disabled={busy || amount.trim() === ""}>
        {label}
      </button>
      {msg && (
        <p className="form-msg" role="status" data-testid={`${kind}-msg`}>
          {msg}
        </p>
      )}
    </form>
  );
}

const FILTERS: (BetStatus | "")[] = ["", "confirmed", "won", "lost", "void"];

/** How many rows a re-read from the top asks for: as many as are shown (older pages the trader opened
 *  stay open), at least a page; past REREAD_MAX_ROWS the list is cut back to that (`trimmed` says so). */
function rowsToReread(shown: number): { rows: number; trimmed: boolean } {
  return { rows: Math.max(ACCOUNT_PAGE, Math.min(shown, REREAD_MAX_ROWS)), trimmed: shown > REREAD_MAX_ROWS };
}

/** Said under a list a refresh cut back to its newest REREAD_MAX_ROWS rows. */
function Trimmed({ what, older }: { what: string; older: string }) {
  return (
    <p className="hint" role="status" data-testid="list-trimmed">
      Updated: showing your newest {REREAD_MAX_ROWS} {what}. “{older}” loads the ones before.
    </p>
  );
}

/** Only the answer to the latest request is shown: a slow older answer never overwrites a newer one.
 *  So that a trader's "Older" click is not lost to a re-read started while its page is on the way (an
 *  event's, which supersedes it), each list keeps `asked`: the rows shown plus that page, which the
 *  re-read then asks for too. */
function useLatest(): () => () => boolean {
  const seq = useRef(0);
  return useCallback(() => {
    const mine = ++seq.current;
    return () => mine === seq.current;
  }, []);
}

function History({ ctl }: { ctl: Controller }) {
  const [status, setStatus] = useState<BetStatus | "">("");
  const [pages, setPages] = useState<BetRecord[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const [trimmed, setTrimmed] = useState(false);
  const shown = useRef(0);
  shown.current = pages.length;
  const asked = useRef(0);
  const begin = useLatest();
  /** `cursor`: the next older page; null: from the top, as many rows as are shown. */
  const load = useCallback(
    (cursor: string | null) => {
      const current = begin();
      if (cursor) asked.current = shown.current + ACCOUNT_PAGE;
      const reread = rowsToReread(Math.max(shown.current, asked.current));
      (cursor ? ctl.history(status, cursor, ACCOUNT_PAGE) : ctl.newestBets(status, reread.rows))
        .then((p) => {
          if (!current()) return;
          asked.current = 0;
          setPages((prev) => (cursor ? [...prev, ...p.bets] : p.bets));
          setNext(p.next_cursor);
          setTrimmed(cursor ? false : reread.trimmed && p.next_cursor !== null);
          setErr(null);
          setLoaded(true);
        })
        .catch((e: unknown) => {
          if (current()) setErr(errText(e));
        });
    },
    [ctl, status, begin],
  );
  useEffect(() => {
    shown.current = asked.current = 0; // another filter: its first page
    load(null);
  }, [load]);
  useEffect(() => ctl.watchAccount("bets", () => load(null)), [ctl, load]);
  const settings = ctl.store.get().settings;
  const stepCents = settings ? parsePriceCents(settings.price_step) : null;
  return (
    <section aria-labelledby="hist-title">
      <h3 id="hist-title">History</h3>
      <label>
        Status{" "}
        <select value={status} onChange={(e) => setStatus(e.target.value as BetStatus | "")}>
          {FILTERS.map((f) => (
            <option key={f} value={f}>
              {f || "all"}
            </option>
          ))}
        </select>
      </label>{" "}
      <button type="button" onClick={() => load(null)}>
        Refresh
      </button>
      {err && <p className="alert">{err}</p>}
      <table className="history">
        <thead>
          <tr>
            <th>Window · band</th>
            <th>Stake</th>
            <th>×</th>
            <th>Status</th>
            <th>Payout</th>
          </tr>
        </thead>
        <tbody>
          {pages.map((b) => (
            <tr key={b.bet_id} data-bet-id={b.bet_id}>
              <td>{cellText(b.cell, stepCents)}</td>
              <td>{b.stake}</td>
              <td>{b.multiplier}</td>
              <td>{b.status}</td>
              <td>{b.payout}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && pages.length === 0 && !err && <p className="hint">No bets{status ? ` ${status}` : ""} yet.</p>}
      <p className="hint">Bets the server turned down (refused or rejected) moved no money and are not listed.</p>
      {trimmed && <Trimmed what="bets" older="Older bets" />}
      {next && (
        <button type="button" onClick={() => load(next)}>
          Older bets
        </button>
      )}
    </section>
  );
}

function Ledger({ ctl }: { ctl: Controller }) {
  const [rows, setRows] = useState<LedgerEntry[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const [trimmed, setTrimmed] = useState(false);
  const shown = useRef(0);
  shown.current = rows.length;
  const asked = useRef(0);
  const begin = useLatest();
  /** `cursor`: the next older page; null: from the top, as many rows as are shown. */
  const load = useCallback(
    (cursor: string | null) => {
      const current = begin();
      if (cursor) asked.current = shown.current + ACCOUNT_PAGE;
      const reread = rowsToReread(Math.max(shown.current, asked.current));
      (cursor ? ctl.ledger(cursor, ACCOUNT_PAGE) : ctl.newestLedger(reread.rows))
        .then((p) => {
          if (!current()) return;
          asked.current = 0;
          setRows((prev) => (cursor ? [...prev, ...p.entries] : p.entries));
          setNext(p.next_cursor);
          setTrimmed(cursor ? false : reread.trimmed && p.next_cursor !== null);
          setErr(null);
          setLoaded(true);
        })
        .catch((e: unknown) => {
          if (current()) setErr(errText(e));
        });
    },
    [ctl, begin],
  );
  useEffect(() => load(null), [load]);
  useEffect(() => ctl.watchAccount("ledger", () => load(null)), [ctl, load]);
  return (
    <section aria-labelledby="ledger-title">
      <h3 id="ledger-title">Ledger</h3>
      <button type="button" onClick={() => load(null)}>
        Refresh
      </button>
      {err && <p className="alert">{err}</p>}
      <table className="ledger">
        <thead>
          <tr>
            <th>When (UTC)</th>
            <th>Type</th>
            <th>Amount</th>
            <th>Balance</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={String(r.id)}>
              <td>{new Date(r.created_at).toISOString().slice(0, 19).replace("T", " ")}</td>
              <td>{r.ref_type}</td>
              <td>{displayMoney(r.amount)}</td>
              <td>{displayMoney(r.balance_after)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && rows.length === 0 && !err && <p className="hint">No ledger entries yet: a deposit is the first.</p>}
      {trimmed && <Trimmed what="entries" older="Older entries" />}
      {next && (
        <button type="button" onClick={() => load(next)}>
          Older entries
        </button>
      )}
    </section>
  );
}

/** `focusDeposit`: put the focus in the deposit's amount (then `onDepositFocused`). */
const TABS = [
  { id: "history", label: "History" },
  { id: "ledger", label: "Ledger" },
] as const;
type Tab = (typeof TABS)[number]["id"];

export function Account({ ctl, focusDeposit = false, onDepositFocused }: { ctl: Controller; focusDeposit?: boolean; onDepositFocused?: () => void }) {
  const [tab, setTab] = useState<Tab>("history");
  // The tab list's keyboard (WAI-ARIA): one Tab stop, the selected tab; arrows, Home and End switch.
  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    const to = rovingIndex(e.key, TABS.findIndex((t) => t.id === tab), TABS.length);
    const next = to === null ? undefined : TABS[to];
    if (!next) return;
    e.preventDefault();
    setTab(next.id);
    document.getElementById(`account-tab-${next.id}`)?.focus();
  };
  return (
    <section className="panel account" aria-label="Account">
      <div className="money">
        <MoneyForm ctl={ctl} kind="deposits" label="Deposit" focusNow={focusDeposit} onFocused={onDepositFocused} />
        <MoneyForm ctl={ctl} kind="withdrawals" label="Withdraw" />
      </div>
      <div className="tabs" role="tablist" aria-label="Account records" onKeyDown={onKeyDown}>
        {TABS.map((t) => (
          <button
            key={t.id}
            id={`account-tab-${t.id}`}
            type="button"
            role="tab"
            aria-selected={tab === t.id}
            aria-controls="account-tabpanel"
            tabIndex={tab === t.id ? 0 : -1}
            onClick={() => setTab(t.id)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div id="account-tabpanel" role="tabpanel" aria-labelledby={`account-tab-${tab}`}>
        {tab === "history" ? <History ctl={ctl} /> : <Ledger ctl={ctl} />}
      </div>
    </section>
  );
}
