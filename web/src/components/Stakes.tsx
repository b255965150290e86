import { SLIPPAGES, type Slippage } from "../store";
import type { GridSettings } from "../wire";

interface Props {
  settings: GridSettings;
  stake: string | null;
  slippage: Slippage;
  onPick: (s: string) => void;
  onSlippage: (s: Slippage) => void;
}

export function Stakes({ settings, stake, slippage, onPick, onSlippage }: Props) {
  return (
    <div className="controls">
      <div className="stakes" role="radiogroup" aria-label="Stake per tap">
        <span>Stake</span>
        {settings.stake_presets.map((p) => (
          <button key={p} type="button" role="radio" aria-checked={p === stake} className={p === stake ? "on" : ""} onClick={() => onPick(p)}>
            {p}
          </button>
        ))}
      </div>
      <div className="stakes" role="radiogroup" aria-label="Accept a multiplier lower than shown by at most">
        <span title="The multiplier can move between the grid you see and the moment the server takes the bet.">Slippage</span>
        {SLIPPAGES.map((p) => (
          <button key={p} type="button" role="radio" aria-checked={p === slippage} className={p === slippage ? "on" : ""} onClick={() => onSlippage(p)}>
            {p === "any" ? "any" : `${p}%`}
          </button>
        ))}
      </div>
    </div>
  );
}
