import type { GridSettings } from "../wire";

export function Stakes({ settings, stake, onPick }: { settings: GridSettings; stake: string | null; onPick: (s: string) => void }) {
  return (
    <div className="stakes" role="radiogroup" aria-label="Stake per tap">
      <span>Stake</span>
      {settings.stake_presets.map((p) => (
        <button key={p} type="button" role="radio" aria-checked={p === stake} className={p === stake ? "on" : ""} onClick={() => onPick(p)}>
          {p}
        </button>
      ))}
    </div>
  );
}
