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

interface RadioGroupProps<T extends string> {
  label: string;
  caption: string;
  title?: string;
  choices: readonly T[];
  chosen: T | null;
  pick: (c: T) => void;
  text: (c: T) => string;
}

/** A row of buttons with the radio group's roles: one Tab stop, arrows choose (the ARIA pattern). */
function RadioGroup<T extends string>({ label, caption, title, choices, chosen, pick, text }: RadioGroupProps<T>) {
  return (
    <div className="stakes" role="radiogroup" aria-label={label} onKeyDown={arrows(choices, chosen, pick)}>
      <span title={title}>{caption}</span>
      {choices.map((c) => (
        <button
          key={c}
          type="button"
          role="radio"
          aria-checked={c === chosen}
          tabIndex={tabStop(choices, chosen, c)}
          className={c === chosen ? "on" : ""}
          onClick={() => pick(c)}
        >
          {text(c)}
        </button>
      ))}
    </div>
  );
}

export function Stakes({ settings, stake, slippage, onPick, onSlippage }: Props) {
  return (
    <div className="controls">
      <RadioGroup label="Stake per tap" caption="Stake" choices={settings.stake_presets} chosen={stake} pick={onPick} text={(p) => p} />
      <RadioGroup
        label="Accept a multiplier lower than shown by at most"
        caption="Slippage"
        title="The multiplier can move between the grid you see and the moment the server takes the bet."
        choices={SLIPPAGES}
        chosen={slippage}
        pick={onSlippage}
        text={(p) => (p === "any" ? "any" : `${p}%`)}
      />
    </div>
  );
}
