// Money, prices and multipliers (SPEC §2): decimal strings on the wire, integers inside.
// No float ever touches money: every value is parsed into a bigint of fixed-point units.

export const MONEY_DECIMALS = 6; // micro-units
export const MULTIPLIER_DECIMALS = 4; // 1e-4 units
export const PRICE_DECIMALS = 2; // cents

const UNSIGNED = /^(0|[1-9][0-9]*)(?:\.([0-9]+))?$/;

/** Parse an unsigned decimal string with at most `decimals` places into integer units. */
export function parseFixed(text: string, decimals: number): bigint {
  const m = UNSIGNED.exec(text);
  if (m === null) throw new RangeError(`not a decimal string: ${JSON.stringify(text)}`);
  const whole = m[1] ?? "0";
  const frac = m[2] ?? "";
  if (frac.length > decimals) throw new RangeError(`more than ${decimals} decimals: ${text}`);
  return BigInt(whole) * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, "0") || "0");
}

/** Like parseFixed, with an optional leading minus (ledger amounts are signed). */
export function parseSignedFixed(text: string, decimals: number): bigint {
  return text.startsWith("-") ? -parseFixed(text.slice(1), decimals) : parseFixed(text, decimals);
}

/** Integer units back to the shortest decimal string ("10", "2.5", "-0.000001"). */
export function formatFixed(units: bigint, decimals: number, minDecimals = 0): string {
  const neg = units < 0n;
  const abs = neg ? -units : units;
  const scale = 10n ** BigInt(decimals);
  const whole = abs / scale;
  let frac = (abs % scale).toString().padStart(decimals, "0").replace(/0+$/, "");
  if (frac.length < minDecimals) frac = frac.padEnd(minDecimals, "0");
  return `${neg ? "-" : ""}${whole.toString()}${frac ? "." + frac : ""}`;
}

export const parseMoney = (s: string): bigint => parseFixed(s, MONEY_DECIMALS);
export const parseSignedMoney = (s: string): bigint => parseSignedFixed(s, MONEY_DECIMALS);
export const formatMoney = (u: bigint): string => formatFixed(u, MONEY_DECIMALS);
export const parseMultiplier = (s: string): bigint => parseFixed(s, MULTIPLIER_DECIMALS);
export const formatMultiplier = (u: bigint): string => formatFixed(u, MULTIPLIER_DECIMALS);
/** Price in integer cents; prices are not money but stay integers too (they index rows). */
export const parsePriceCents = (s: string): bigint => parseFixed(s, PRICE_DECIMALS);

export function isMoney(s: string): boolean {
  try {
    return parseMoney(s) >= 0n;
  } catch {
    return false;
  }
}

/** Payout = floor(stake × multiplier) in micro-units (SPEC §2). */
export function payoutMicros(stakeMicros: bigint, multiplierUnits: bigint): bigint {
  return (stakeMicros * multiplierUnits) / 10n ** BigInt(MULTIPLIER_DECIMALS);
}

export function payoutOf(stake: string, multiplier: string): string {
  return formatMoney(payoutMicros(parseMoney(stake), parseMultiplier(multiplier)));
}

/** The lowest multiplier the trader accepts for a shown quote: quote × (1 − slippage bp), floored, ≥ 1.01. */
export function minMultiplierFor(quote: string, slippageBp: bigint): string {
  const q = parseMultiplier(quote);
  const floor = parseMultiplier("1.01");
  let m = (q * (10_000n - slippageBp)) / 10_000n;
  if (m < floor) m = floor;
  if (m > q) m = q;
  return formatMultiplier(m);
}

/** A money string for display with thousands separators and at least two decimals. */
export function displayMoney(s: string): string {
  const u = parseSignedMoney(s);
  const text = formatFixed(u, MONEY_DECIMALS, 2);
  const [whole = "0", frac] = text.replace("-", "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${u < 0n ? "−" : ""}${grouped}${frac ? "." + frac : ""}`;
}

/** Normalise what a trader typed into a money string ("1,5" is refused; "007.50" → "7.5"). */
export function normaliseMoneyInput(text: string): string | null {
  const t = text.trim();
  if (!/^[0-9]+(\.[0-9]{1,6})?$/.test(t)) return null;
  const u = parseFixed(t.replace(/^0+(?=[0-9])/, ""), MONEY_DECIMALS);
  return u > 0n ? formatMoney(u) : null;
}
