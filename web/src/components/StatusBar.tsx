// Balance, connection and feed/betting status: always visible.
import type { State } from "../store";
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

/** `consoleLink`: offer the operator console (/admin) to an admin's session (the trader app's header). */
export function TopBar({ state, onSignOut, consoleLink = false }: { state: State; onSignOut: () => void; consoleLink?: boolean }) {
  const s = state.session;
  const connText = state.conn.state === "open" ? "live" : state.conn.state;
  return (
    <header className="topbar">
      <h1>Tap Trading</h1>
      <span className="price" aria-label="BTC price">
        {state.price ? `$${displayMoney(state.price.price)}` : "—"}
      </span>
      <span className={`conn conn-${state.conn.state}`} data-testid="conn" data-conn={state.conn.state}>
        ● {connText}
      </span>
      {s && (
        <>
          <span className="balance" data-testid="balance" data-balance={state.balance ?? ""}>
            Balance {state.balance !== null ? displayMoney(state.balance) : "…"}
          </span>
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
