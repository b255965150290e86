// The trader's taps of this session, newest first, with state, reason and payout in words.
import type { Tap } from "../store";
import { fmtTime } from "../layout";
import { STATE_LABEL } from "./Grid";

/** Rejection reasons arrive as codes (docs/API.md); say them in words and keep the code. */
const REASONS: Record<string, string> = {
  insufficient_funds: "Insufficient funds",
  duplicate_cell: "You already had a bet on this cell",
  timeout: "Not committed in time",
  not_committed: "Lost in a server restart, not committed",
  internal_error: "Server error",
};
function reasonText(reason: string): string {
  const words = REASONS[reason];
  return words ? `${words} (${reason})` : reason;
}

export function Taps({ taps }: { taps: Record<string, Tap> }) {
  const list = Object.values(taps).sort((a, b) => b.sentAt - a.sentAt).slice(0, 12);
  if (list.length === 0) return <p className="hint">Tap a cell to bet that the price touches that band in that window.</p>;
  return (
    <ol className="taps" aria-label="Your bets this session">
      {list.map((t) => {
        const [ts, row] = t.cell.split(":");
        return (
          <li key={t.req} data-cell={t.cell} data-state={t.state} data-bet-id={t.betId ?? undefined} data-history={t.history.join(",")} className={`tap tap-${t.state}`}>
            <span className="what">
              {fmtTime(Number(ts))} · row {row} · {t.stake} × {t.multiplier}
            </span>{" "}
            <strong className="state">{STATE_LABEL[t.state]}</strong>
            {t.state === "won" && t.payout && <span className="payout"> +{t.payout}</span>}
            {(t.state === "confirmed" || t.state === "pending") && t.payout && <span className="payout"> pays {t.payout}</span>}
            {t.reason && <span className="reason"> — {reasonText(t.reason)}</span>}
          </li>
        );
      })}
    </ol>
  );
}
