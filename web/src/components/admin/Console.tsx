// The operator console at /admin (SPEC §8c): every panel, live from GET /api/v1/admin/overview.
import { useEffect, useMemo, useRef, useState, useSyncExternalStore, type FormEvent } from "react";
import type { AdminConsole } from "../../admin/console";
import {
  ago,
  bucketMax,
  bucketRate,
  haltReadNote,
  heatGrid,
  KEEP_S,
  lastBatch,
  measuredFrom,
  pct,
  ratioBp,
  samplerNote,
  utcTime,
  weeksNote,
  workerMarks,
  type Point,
} from "../../admin/shape";
import { freshness, type AdminState } from "../../admin/state";
import { displayMoney } from "../../money";
import type { BettingState, FeedPanel, HouseSummary, IntegrityRun, Overview, WeeksPanel } from "../../wire";
import { HeatMap, LineChart, ReturnBars, type Line } from "./Plots";

const BUCKET_S = 10;
const PALETTE = ["#22c55e", "#ef4444", "#f59e0b", "#a855f7", "#38bdf8", "#f472b6", "#eab308", "#94a3b8"];
const DASHES = [undefined, "5 3", "2 2", "8 3 2 3", "1 3", "10 4"];

const time = utcTime;
function short(addr: string | null): string {
  return addr ? `${addr.slice(0, 6)}…${addr.slice(-4)}` : "—";
}
function ppm(p: number | null): string {
  return p === null ? "—" : `${(p / 10_000).toFixed(4)} %`;
}

/** The first control in `root` that takes the keyboard (a link, an enabled field or button, a summary). */
const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), summary, [tabindex="0"]';

/** `focusRequest`: a new value (a sign-in in this tab removed the focused sign-in button) asks for the
 *  focus on the console's first control once it is shown, unless the focus is already somewhere. */
export function Console({ admin, focusRequest = 0 }: { admin: AdminConsole; focusRequest?: number }) {
  const s = useSyncExternalStore(admin.store.subscribe, admin.store.get);
  const root = useRef<HTMLElement | null>(null);
  const focusHandled = useRef(0);
  const shown = s.access === "forbidden" || s.overview !== null;
  useEffect(() => {
    if (focusRequest === focusHandled.current || !shown) return;
    focusHandled.current = focusRequest;
    const active = document.activeElement;
    if (active && active !== document.body) return; // the operator is somewhere already: left there
    root.current?.querySelector<HTMLElement>(FOCUSABLE)?.focus({ preventScroll: true });
  }, [focusRequest, shown]);
  useEffect(() => {
    void admin.start();
    return () => admin.stop();
  }, [admin]);
  useEffect(() => {
    if (!s.message) return;
    const id = setTimeout(() => admin.store.dispatch({ type: "clearMessage" }), 8000);
    return () => clearTimeout(id);
  }, [s.message, admin]);

  if (s.access === "forbidden")
    return (
      <section className="panel" aria-labelledby="forbidden-t" data-testid="admin-forbidden" ref={root}>
        <h2 id="forbidden-t">Not allowed</h2>
        <p>
          The operator console is only for operators. This wallet is not one of the operator addresses
          (<code>TAP_ADMIN_ADDRESSES</code>), so the server refuses its requests (403).
        </p>
        <p>
          <a href="/">Back to trading</a>
        </p>
      </section>
    );
  const o = s.overview;
  if (!o)
    return (
      <p role="status" className="hint">
        {s.error ? `Cannot load the console: ${s.error}` : "Loading the console…"}
      </p>
    );
  const fresh = freshness(s);
  return (
    <main className={fresh.stale ? "console stale" : "console"} aria-labelledby="console-t" data-stale={String(fresh.stale)} ref={root}>
      <div className="console-head">
        <h2 id="console-t">Operator console</h2>
        <Freshness state={s} />
      </div>
      {s.message && (
        <p className={`notice ${s.message.level}`} role="status" data-testid="admin-message">
          {s.message.text}
        </p>
      )}
      <div className="console-grid">
        <Betting admin={admin} betting={o.betting} />
        <Feed feed={o.feed} state={s} />
        <Taps state={s} now={Math.floor(o.server_time / 1000)} />
        <Writer state={s} o={o} now={Math.floor(o.server_time / 1000)} />
        <Exposure o={o} />
        <House o={o} />
        <Weeks w={o.weeks} />
        <Integrity admin={admin} run={s.integrity} />
      </div>
    </main>
  );
}

/** When the figures on screen were the server's, and a loud warning once they are old. */
export function Freshness({ state }: { state: AdminState }) {
  const o = state.overview;
  const f = freshness(state);
  return (
    <>
      <span className="hint" data-testid="polled">
        Updated {time(o?.server_time ?? null)} · worker {o?.worker ?? "—"}
      </span>
      {f.stale ? (
        <>
          <p className="alert stale-alert" data-testid="stale">
            {f.text}
          </p>
          <span className="sr-only" role="alert">
            {f.spoken}
          </span>
        </>
      ) : (
        state.error && (
          <p className="alert" role="alert">
            Last refresh failed: {state.error} (retrying every second)
          </p>
        )
      )}
    </>
  );
}

export function Betting({ admin, betting }: { admin: AdminConsole; betting: BettingState }) {
  const [reason, setReason] = useState("");
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (reason.trim()) setConfirming(true);
  };
  const act = async (open: boolean) => {
    setBusy(true);
    const ok = await admin.setBetting(open, open ? null : reason.trim());
    setBusy(false);
    setConfirming(false);
    if (ok && !open) setReason("");
  };
  const readNote = haltReadNote(betting);
  const known = betting.read_at !== null;
  const status = !known ? "UNKNOWN" : betting.open ? "OPEN" : betting.halted ? "HALTED" : "SUSPENDED";
  return (
    <section className="panel" aria-labelledby="betting-t">
      <h3 id="betting-t">Betting</h3>
      {readNote && (
        <p className="alert" data-testid="betting-read" data-level={readNote.level}>
          {readNote.text}
        </p>
      )}
      <p
        className={`state state-${status.toLowerCase()}`}
        data-testid="betting-state"
        data-open={String(betting.open)}
        data-confirmed={String(readNote === null)}
      >
        {!known ? "?" : betting.open ? "✓" : "■"} Betting {status}
        {betting.halted && betting.reason ? ` — ${betting.reason}` : ""}
        {!betting.breaker_open && " (the feed's breaker is closed)"}
        {known && readNote ? ` (as of ${time(betting.read_at)}, unconfirmed since)` : ""}
      </p>
      {betting.halted && (
        <p className="hint">
          Halted by {short(betting.by)} at {time(betting.at)}.
        </p>
      )}
      {betting.halted ? (
        <button type="button" disabled={busy} onClick={() => void act(true)}>
          Reopen betting
        </button>
      ) : confirming ? (
        <div role="alertdialog" aria-labelledby="halt-confirm-t" className="confirm">
          <p id="halt-confirm-t">
            Halt betting for everyone? Every tap will be refused and traders will see: “{reason.trim()}”.
          </p>
          <button type="button" className="danger" disabled={busy} onClick={() => void act(false)}>
            Yes, halt betting
          </button>{" "}
          <button type="button" disabled={busy} autoFocus onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      ) : (
        <form onSubmit={submit} className="halt-form">
          <label htmlFor="halt-reason">Reason (traders see it)</label>
          <input
            id="halt-reason"
            value={reason}
            maxLength={200}
            required
            onChange={(e) => setReason(e.target.value)}
            placeholder="e.g. feed looks wrong"
          />
          <button type="submit" className="danger" disabled={!reason.trim()}>
            Halt betting
          </button>
        </form>
      )}
      <table className="actions">
        <caption>Recent halts and reopens</caption>
        <thead>
          <tr>
            <th scope="col">time</th>
            <th scope="col">action</th>
            <th scope="col">by</th>
            <th scope="col">reason</th>
          </tr>
        </thead>
        <tbody>
          {betting.actions.slice(0, 8).map((a) => (
            <tr key={`${a.at}-${a.action}`}>
              <td>{time(a.at)}</td>
              <td>{a.action}</td>
              <td title={a.address}>{short(a.address)}</td>
              <td>{a.reason ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Feed({ feed, state }: { feed: FeedPanel; state: AdminState }) {
  const b = feed.breaker;
  const names = feed.sources.map((x) => x.source);
  const now = Math.floor((state.overview?.server_time ?? 0) / 1000);
  const from = now - KEEP_S + 1;
  const ages = state.ages ?? { at: [], sources: {} };
  const lines: Line[] = names.map((n, i) => ({
    name: n,
    points: bucketMax(ages.at, ages.sources[n] ?? [], from, now + 1, BUCKET_S),
    color: PALETTE[i % PALETTE.length] ?? "#fff",
    dash: DASHES[i % DASHES.length],
  }));
  return (
    <section className="panel" aria-labelledby="feed-t">
      <h3 id="feed-t">Price feed</h3>
      <p className={`state state-${b.state}`} data-testid="feed-state" data-state={b.state}>
        {b.state === "healthy" ? "✓" : b.state === "degraded" ? "!" : "✕"} Feed {b.state.toUpperCase()}
        {b.age_s !== null ? ` · last tick ${b.age_s.toFixed(2)} s ago` : ""}
        {b.recovering && b.recovery_left_s !== null ? ` · recovering, ${b.recovery_left_s.toFixed(1)} s left` : ""}
        {feed.last_price ? ` · ${displayMoney(feed.last_price)}` : ""}
      </p>
      <SampleNote text={samplerNote("Source health", feed.sources_at, state.overview?.server_time ?? 0)} />
      <table data-testid="sources">
        <caption>Sources (dropped above {pct(ratioBp(feed.max_deviation))} from the median)</caption>
        <thead>
          <tr>
            <th scope="col">source</th>
            <th scope="col">age</th>
            <th scope="col">last price</th>
            <th scope="col">from median</th>
            <th scope="col">fresh</th>
          </tr>
        </thead>
        <tbody>
          {feed.sources.map((x) => (
            <tr key={x.source} data-source={x.source} data-fresh={String(x.fresh)}>
              <th scope="row">{x.source}</th>
              <td>{x.age_s === null ? "—" : `${x.age_s.toFixed(2)} s`}</td>
              <td>{x.price ? displayMoney(x.price) : "—"}</td>
              <td>{ppm(x.deviation_ppm)}</td>
              <td>{x.fresh ? "✓ yes" : "✕ no"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <LineChart
        id="plot-feed-age"
        title="Feed age per source, worst in 10 s"
        unit="s"
        lines={lines}
        from={from}
        to={now + 1}
        minTop={1}
        marks={workerMarks(state.workers, from, now + 1)}
        summary={feed.sources.map((x) => `${x.source} ${x.age_s?.toFixed(2) ?? "—"} s`).join(", ")}
      />
      <table>
        <caption>Breaker transitions (newest first)</caption>
        <thead>
          <tr>
            <th scope="col">time</th>
            <th scope="col">feed</th>
            <th scope="col">betting</th>
          </tr>
        </thead>
        <tbody>
          {[...feed.transitions].reverse().slice(0, 6).map((t) => (
            <tr key={`${t.at}-${t.feed}-${String(t.betting)}`}>
              <td>{time(t.at)}</td>
              <td>{t.feed}</td>
              <td>{t.betting ? "open" : t.halted ? `halted${t.reason ? `: ${t.reason}` : ""}` : "suspended"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function SampleNote({ text }: { text: string | null }) {
  return text === null ? null : (
    <p className="alert" data-testid="sample-note">
      {text}
    </p>
  );
}

export function Taps({ state, now }: { state: AdminState; now: number }) {
  const taps = state.taps;
  const from = now - KEEP_S + 1;
  const counted = measuredFrom(state.workers);
  const outcomes = taps ? Object.keys(taps.by_outcome).sort((a, b) => (a === "accepted" ? -1 : b === "accepted" ? 1 : a.localeCompare(b))) : [];
  const lines: Line[] = taps
    ? outcomes.map((o, i) => ({
        name: o,
        points: bucketRate(taps.start, taps.by_outcome[o] ?? [], from, now + 1, BUCKET_S, counted),
        color: PALETTE[i % PALETTE.length] ?? "#fff",
        dash: DASHES[i % DASHES.length],
      }))
    : [];
  const last60 = (o: string) => {
    const s = taps?.by_outcome[o] ?? [];
    return s.slice(-60).reduce((a, b) => a + b, 0);
  };
  return (
    <section className="panel wide" aria-labelledby="taps-t">
      <h3 id="taps-t">Taps</h3>
      <LineChart
        id="plot-taps"
        title="Taps per second by outcome, 10 s means"
        unit="taps/s"
        lines={lines}
        from={from}
        to={now + 1}
        marks={workerMarks(state.workers, from, now + 1)}
        summary={outcomes.map((o) => `${o} ${last60(o)} in the last minute`).join(", ") || "no taps"}
      />
      <table data-testid="tap-totals">
        <caption>Taps by outcome</caption>
        <thead>
          <tr>
            <th scope="col">outcome</th>
            <th scope="col">last minute</th>
            <th scope="col">last 15 minutes</th>
          </tr>
        </thead>
        <tbody>
          {outcomes.map((o) => (
            <tr key={o} data-outcome={o}>
              <th scope="row">{o}</th>
              <td>{last60(o)}</td>
              <td>{taps?.totals[o] ?? 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function Writer({ state, o, now }: { state: AdminState; o: Overview; now: number }) {
  const w = state.writer;
  const from = now - KEEP_S + 1;
  const p: Point[][] = w
    ? [bucketMax(w.at, w.commit_p50_ms, from, now + 1, BUCKET_S), bucketMax(w.at, w.commit_p99_ms, from, now + 1, BUCKET_S)]
    : [[], []];
  const batch = lastBatch(w);
  const lastSample = o.writer.series.at.at(-1);
  return (
    <section className="panel" aria-labelledby="writer-t">
      <h3 id="writer-t">Writer, sockets, resolver</h3>
      <SampleNote text={samplerNote("Writer latency and batch size", lastSample === undefined ? null : lastSample * 1000, o.server_time)} />
      <dl className="stats">
        <dt>Write queue</dt>
        <dd data-testid="queue-depth">
          {o.writer.queue_depth} / {o.writer.queue_max}
        </dd>
        <dt>Batch size (last, max)</dt>
        <dd data-testid="batch-last" data-at={batch?.at ?? ""}>
          {batch ? batch.mean : "—"} / {o.writer.batch_max}{" "}
          <span className="hint">
            {batch
              ? `(mean of ${time(batch.at * 1000)}, ${ago(o.server_time / 1000 - batch.at)} ago)`
              : "(no commit in the last 15 minutes)"}
          </span>
        </dd>
        <dt>Websocket clients</dt>
        <dd data-testid="ws-clients">{o.websocket.clients}</dd>
        <dt>Resolver lag</dt>
        <dd data-testid="resolver-lag">
          {o.resolver.lag_s.toFixed(1)} s
          {o.resolver.oldest_open_window !== null ? ` (oldest open window ${time(o.resolver.oldest_open_window * 1000)})` : ""}
        </dd>
      </dl>
      <LineChart
        id="plot-commit"
        title="Commit latency, worst in 10 s"
        unit="ms, bucket upper bounds"
        lines={[
          { name: "p50", points: p[0] ?? [], color: "#38bdf8" },
          { name: "p99", points: p[1] ?? [], color: "#f59e0b", dash: "5 3" },
        ]}
        from={from}
        to={now + 1}
        minTop={5}
        marks={workerMarks(state.workers, from, now + 1)}
        summary={`p99 ${[...(w?.commit_p99_ms ?? [])].reverse().find((x) => x !== null) ?? "—"} ms in the last second with commits`}
      />
    </section>
  );
}

function Exposure({ o }: { o: Overview }) {
  const e = o.exposure;
  const heat = useMemo(() => heatGrid(e.columns), [e.columns]);
  const colSeconds = e.columns.length > 1 ? (e.columns[1]?.t_start ?? 0) - (e.columns[0]?.t_start ?? 0) : null;
  return (
    <section className="panel wide" aria-labelledby="exposure-t">
      <h3 id="exposure-t">Open liability</h3>
      <p>
        Total open potential payout <strong data-testid="exposure-total">{displayMoney(e.total)}</strong>; caps:{" "}
        {displayMoney(e.cell_cap)} per cell, {displayMoney(e.column_cap)} per column.
      </p>
      <HeatMap heat={heat} cellCap={e.cell_cap} columnSeconds={colSeconds} />
      <div className="tables">
        <table data-testid="exposure-columns">
          <caption>Per column</caption>
          <thead>
            <tr>
              <th scope="col">column (UTC)</th>
              <th scope="col">state</th>
              <th scope="col">liability</th>
              <th scope="col">of cap</th>
            </tr>
          </thead>
          <tbody>
            {e.columns
              .filter((c) => c.liability !== "0")
              .map((c) => (
                <tr key={c.t_start}>
                  <td>{time(c.t_start * 1000)}</td>
                  <td>{c.closed ? "closed" : c.placeable ? "open for bets" : "running"}</td>
                  <td>{displayMoney(c.liability)}</td>
                  <td>{c.used === null ? "—" : pct(ratioBp(c.used))}</td>
                </tr>
              ))}
          </tbody>
        </table>
        <table data-testid="largest-cells">
          <caption>Largest cells</caption>
          <thead>
            <tr>
              <th scope="col">cell</th>
              <th scope="col">band</th>
              <th scope="col">liability</th>
              <th scope="col">of cap</th>
            </tr>
          </thead>
          <tbody>
            {e.largest_cells.map((c) => (
              <tr key={c.cell} data-cell={c.cell}>
                <td>{c.cell}</td>
                <td>
                  {displayMoney(c.band[0])}–{displayMoney(c.band[1])}
                </td>
                <td>{displayMoney(c.liability)}</td>
                <td>{c.used === null ? "—" : pct(ratioBp(c.used))}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function houseRow(label: string, h: HouseSummary) {
  return (
    <tr key={label} data-period={label} data-bets={h.bets}>
      <th scope="row">{label}</th>
      <td>{h.bets}</td>
      <td>{displayMoney(h.staked)}</td>
      <td>{displayMoney(h.paid)}</td>
      <td>{displayMoney(h.house_result)}</td>
      <td>{h.realised_return === null ? "—" : pct(ratioBp(h.realised_return))}</td>
    </tr>
  );
}

function House({ o }: { o: Overview }) {
  const h = o.house;
  const target = ratioBp(h.target_return);
  const bp = (x: HouseSummary) => (x.realised_return === null ? null : ratioBp(x.realised_return));
  const rows = [
    { label: "today", bp: bp(h.today) },
    { label: "this week", bp: bp(h.week) },
    ...Object.entries(h.week.buckets).map(([k, v]) => ({ label: `week, ×${k}`, bp: bp(v) })),
  ];
  return (
    <section className="panel" aria-labelledby="house-t">
      <h3 id="house-t">House result</h3>
      <p>Target return to players: {pct(target)} (1 − house edge).</p>
      <table data-testid="house">
        <caption>Settled bets</caption>
        <thead>
          <tr>
            <th scope="col">period</th>
            <th scope="col">bets</th>
            <th scope="col">staked</th>
            <th scope="col">paid</th>
            <th scope="col">house result</th>
            <th scope="col">return to players</th>
          </tr>
        </thead>
        <tbody>
          {houseRow("today", h.today)}
          {houseRow("this week", h.week)}
          {h.days.map((d) => houseRow(d.day ?? "?", d))}
        </tbody>
      </table>
      <figure className="plot" aria-labelledby="return-t">
        <figcaption id="return-t">Realised return to players vs the target</figcaption>
        <ReturnBars rows={rows} targetBp={target} />
      </figure>
    </section>
  );
}

export function Weeks({ w }: { w: WeeksPanel }) {
  const note = weeksNote(w);
  return (
    <section className="panel" aria-labelledby="weeks-t">
      <h3 id="weeks-t">Week files</h3>
      <p className={note.level === "ok" ? "hint" : "alert"} data-testid="weeks-note" data-level={note.level}>
        {note.text}
      </p>
      <table data-testid="weeks">
        <caption>Attached (local) and archived weeks</caption>
        <thead>
          <tr>
            <th scope="col">week</th>
            <th scope="col">where</th>
            <th scope="col">size</th>
          </tr>
        </thead>
        <tbody>
          {w.local.map((l) => (
            <tr key={`l-${l.week}`}>
              <td>{l.week}</td>
              <td>local, {l.state}</td>
              <td>{(l.size / 1024).toFixed(0)} KiB</td>
            </tr>
          ))}
          {w.archived.map((a) => (
            <tr key={`a-${a.week}`}>
              <td>{a.week}</td>
              <td>archived{a.restored ? ", restored" : ""}</td>
              <td>{(a.compressed_size / 1024).toFixed(0)} KiB</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Integrity({ admin, run }: { admin: AdminConsole; run: IntegrityRun | null }) {
  const running = run?.state === "running";
  return (
    <section className="panel" aria-labelledby="integrity-t">
      <h3 id="integrity-t">Integrity-check</h3>
      <div data-testid="integrity" data-state={run?.state ?? "never"} aria-live="polite">
        {!run ? (
          <p>Never run from the console.</p>
        ) : running ? (
          <p>
            Running: {run.files_done} of {run.files_total ?? "?"} files{run.current_file ? ` (${run.current_file})` : ""}{" "}
            <progress max={run.files_total ?? 1} value={run.files_done} aria-label="Integrity-check progress" />
          </p>
        ) : (
          <p>
            {run.state === "ok" ? "✓ OK" : run.state === "violations" ? `✕ ${run.violations} violations` : `✕ ${run.state}`} —
            {` ${run.files_done} files, ${run.seconds?.toFixed(1) ?? "?"} s, finished ${time(run.finished_at)}, started by ${short(run.by)}`}
            {run.error ? ` (${run.error})` : ""}
          </p>
        )}
        {run && run.first_violations.length > 0 && (
          <ul className="violations">
            {run.first_violations.slice(0, 10).map((v) => (
              <li key={v}>{v}</li>
            ))}
          </ul>
        )}
      </div>
      <button type="button" disabled={running} onClick={() => void admin.runIntegrityCheck()}>
        Run integrity-check
      </button>
    </section>
  );
}
