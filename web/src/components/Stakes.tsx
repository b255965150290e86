import type { KeyboardEvent } from "react";
import { rovingIndex } from "../keys";
import { SLIPPAGES, type Slippage } from "../store";
import type { GridSettings } from "../wire";

interface Props {
  settings: GridSettings;
  stake: string | null;
  slippage: Slippage;
  onPick: (s: string) => void;
  onSlippage: (s: Slippage) => void;
}

/** Arrows (Home, End) choose within a radio group and take the focus along; `pick` makes the choice. */
function arrows<T>(choices: readonly T[], chosen: T | null, pick: (c: T) => void) {
  return (e: KeyboardEvent<HTMLDivElement>) => {
    const to = rovingIndex(e.key, Math.max(0, chosen === null ? 0 : choices.indexOf(chosen)), choices.length);
    const choice = to === null ? undefined : choices[to];
    if (to === null || choice === undefined) return;
    e.preventDefault();
    pick(choice);
    e.currentTarget.querySelectorAll<HTMLElement>('[role="radio"]')[to]?.focus();
  };
}

/** One Tab stop per group: the chosen item, or the first while none is. */
function tabStop<T>(choices: readonly T[], chosen: T | null, item: T): 0 | -1 {
  return item === chosen || (!choices.includes(chosen as T) && item === choices[0]) ? 0 : -1;
}

export function Stakes({ settings, stake, slippage, onPick, onSlippage }: Props) {
  const presets = settings.stake_presets;
  return (
    <div className="controls">
      <div className="stakes" role="radiogroup" aria-label="Stake per tap" onKeyDown={arrows(presets, stake, onPick)}>
        <span>Stake</span>
        {presets.map((p) => (
          <button
            key={p}
            type="button"
            role="radio"
            aria-checked={p === stake}
            tabIndex={tabStop(presets, stake, p)}
            className={p === stake ? "on" : ""}
            onClick={() => onPick(p)}
          >
            {p}
          </button>
        ))}
      </div>
      <div
        className="stakes"
        role="radiogroup"
        aria-label="Accept a multiplier lower than shown by at most"
        onKeyDown={arrows(SLIPPAGES, slippage, onSlippage)}
      >
        <span title="The multiplier can move between the grid you see and the moment the server takes the bet.">Slippage</span>
        {SLIPPAGES.map((p) => (
          <button
            key={p}
            type="button"
            role="radio"
            aria-checked={p === slippage}
            tabIndex={tabStop(SLIPPAGES, slippage, p)}
            className={p === slippage ? "on" : ""}
            onClick={() => onSlippage(p)}
          >
            {p === "any" ? "any" : `${p}%`}
          </button>
        ))}
      </div>
    </div>
  );
}
