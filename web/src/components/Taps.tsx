// The trader's taps of this session, newest first, with state, reason and payout in words. A polite
// live region: each change of a tap's state (accepted, confirmed, won, lost, refused) is announced.
import type { Tap } from "../store";
import { cellText } from "../layout";
import { STATE_LABEL } from "./Grid";

/** Rejection reasons arrive as codes (docs/API.md); say them in words and keep the code. */
const REASONS: Record<string, string> = {
  insufficient_funds: "Insufficient funds: deposit in Account",
  duplicate_cell: "You already had a bet on this cell",
  timeout: "Not committed in time",
  not_committed: "Lost in a server restart, not committed",
  internal_error: "Server error",
};
function reasonText(reason: string): string {
  const words = REASONS[reason];
  return words ? `${words} (${reason})` : reason;
}
/** An unknown tap says why, until the controller has found out. */
const UNKNOWN_WHY = "The connection dropped before the server answered; checked once the connection is back";

/** `stepCents`: the height of a band (settings' price_step), to name the band by its prices. */
export function Taps({ taps, stepCents }: { taps: Record<string, Tap>; stepCents: bigint | null }) {
  const list = Object.values(taps).sort((a, b) => b.sentAt - a.sentAt).slice(0, 12);
  return (
    // Rendered before the first tap, so that the first one is announced too.
    <div className="taps-live" aria-live="polite" aria-relevant="additions text" data-testid="taps-live">
      {list.length === 0 ? (
        <p className="hint">Tap a cell to bet that the price touches that band in that window.</p>
      ) : (
        <ol className="taps" aria-label="Your bets this session">
          {list.map((t) => {
            const reason = t.reason ?? (t.state === "unknown" ? UNKNOWN_WHY : null);
            return (
              <li key={t.req} data-cell={t.cell} data-state={t.state} data-bet-id={t.betId ?? undefined} data-history={t.history.join(",")} className={`tap tap-${t.state}`}>
                <span className="what">
                  {cellText(t.cell, stepCents)} · {t.stake} × {t.multiplier}
                </span>{" "}
                <strong className="state">{STATE_LABEL[t.state]}</strong>
                {t.state === "won" && t.payout && <span className="payout"> +{t.payout}</span>}
                {(t.state === "confirmed" || t.state === "pending") && t.payout && <span className="payout"> pays {t.payout}</span>}
                {reason && <span className="reason"> — {reasonText(reason)}</span>}
              </li>
            );
          })}
        </ol>
      )}
    </div>
  );
}
