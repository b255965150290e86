// Balance, connection and feed/betting status: always visible.
import { useEffect, useState } from "react";
import { figuresFreshness, type State } from "../store";
import { displayMoney } from "../money";

export function StatusBanner({ state }: { state: State }) {
  const { feed, conn } = state;
  const msgs: { level: string; text: string }[] = [];
  if (conn.state !== "open") {
    const wait = conn.retryAt ? Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) : null;
    msgs.push({
      level: "warn",
      text:
        conn.state === "connecting"
          ? "Connecting… taps are paused."
          : `Connection lost — reconnecting${conn.attempt ? ` (attempt ${conn.attempt}${wait !== null ? `, in ${wait}s` : ""})` : ""}. Taps are paused.`,
    });
  }
  if (!feed.betting) {
    msgs.push({
      level: "error",
      text: feed.reason
        ? `Betting halted: ${feed.reason}`
        : feed.feed === "critical"
          ? "Betting suspended: the price feed is stale. Bets reopen once prices flow steadily again."
          : "Betting suspended while the price feed recovers.",
    });
  } else if (feed.feed === "degraded") {
    msgs.push({ level: "warn", text: "Price feed degraded: prices may lag." });
  }
  if (msgs.length === 0) return null;
  return (
    <div className="banners" role="status" aria-live="polite" data-testid="status-banner">
      {msgs.map((m) => (
        <p key={m.text} className={`banner ${m.level}`}>
          {m.text}
        </p>
      ))}
    </div>
  );
}

/** "12 s ago", "3 min ago": how old a figure on screen is. */
export function agoText(ageS: number): string {
  return ageS < 120 ? `${ageS} s ago` : `${Math.floor(ageS / 60)} min ago`;
}

/** The local clock, ticking every `periodMs` while `active`: ages on screen grow without a new message. */
function useNow(active: boolean, periodMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), periodMs);
    return () => clearInterval(id);
  }, [active, periodMs]);
  return now;
}

/** The price, the connection and the balance; the figures marked with their age once they are not live
 *  (the socket is down, or no tick for a few seconds), and a screen reader told once, when they go stale,
 *  in a status region whose words do not change every second. */
export function HeaderFigures({ state, now }: { state: State; now: number }) {
  const f = figuresFreshness(state, now);
  const connText = state.conn.state === "open" ? "live" : state.conn.state;
  return (
    <>
      <span className={f.priceStale ? "price stale" : "price"} data-testid="price" data-stale={String(f.priceStale)}>
        <span className="sr-only">BTC price </span>
        {state.price ? `$${displayMoney(state.price.price)}` : "—"}
        {f.priceStale && f.priceAgeS !== null && <span className="age"> (last price {agoText(f.priceAgeS)})</span>}
      </span>
      <span className={`conn conn-${state.conn.state}`} data-testid="conn" data-conn={state.conn.state}>
        ● {connText}
      </span>
      {state.session && (
        <span
          className={f.balanceStale ? "balance stale" : "balance"}
          data-testid="balance"
          data-balance={state.balance ?? ""}
          data-stale={String(f.balanceStale)}
        >
          Balance {state.balance !== null ? displayMoney(state.balance) : "…"}
          {f.balanceStale && f.balanceAgeS !== null && <span className="age"> (as of {agoText(f.balanceAgeS)})</span>}
        </span>
      )}
      <span className="sr-only" role="status" data-testid="figures-status">
        {f.spoken ?? ""}
      </span>
    </>
  );
}

/** `consoleLink`: offer the operator console (/admin) to an admin's session (the trader app's header). */
export function TopBar({ state, onSignOut, consoleLink = false }: { state: State; onSignOut: () => void; consoleLink?: boolean }) {
  const s = state.session;
  // Ticks only while there is a figure whose age may need showing.
  const now = useNow(state.price !== null || state.balance !== null);
  return (
    <header className="topbar">
      <h1>Tap Trading</h1>
      <HeaderFigures state={state} now={now} />
      {s && (
        <>
          <span className="addr" title={s.address}>
            {s.address.slice(0, 6)}…{s.address.slice(-4)}
          </span>
          {consoleLink && state.isAdmin && (
            <a className="console-link" href="/admin" data-testid="console-link">
              Console
            </a>
          )}
          <button type="button" onClick={onSignOut}>
            Sign out
          </button>
        </>
      )}
    </header>
  );
}
