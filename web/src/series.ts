// Recent prices for the chart: a fixed-size ring of (ts ms, price cents). Prices are integers.
import { parsePriceCents } from "./money";

export class PriceSeries {
  readonly ts: Float64Array;
  readonly cents: Float64Array;
  private start = 0;
  length = 0;
  constructor(readonly capacity = 4096) {
    this.ts = new Float64Array(capacity);
    this.cents = new Float64Array(capacity);
  }
  push(ts: number, price: string): void {
    if (this.length > 0 && ts <= this.tsAt(this.length - 1)) return; // ordered, no duplicates
    const c = Number(parsePriceCents(price));
    const i = (this.start + this.length) % this.capacity;
    this.ts[i] = ts;
    this.cents[i] = c;
    if (this.length < this.capacity) this.length += 1;
    else this.start = (this.start + 1) % this.capacity;
  }
  tsAt(k: number): number {
    return this.ts[(this.start + k) % this.capacity] ?? 0;
  }
  centsAt(k: number): number {
    return this.cents[(this.start + k) % this.capacity] ?? 0;
  }
  /** Where a line drawn from `fromMs` on starts: the last sample at or before `fromMs` (the line enters
   *  from the edge, and the last price stays drawn when no newer one came), else the first. */
  indexFrom(fromMs: number): number {
    let lo = 0;
    let hi = this.length - 1;
    let found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.tsAt(mid) <= fromMs) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }
  last(): { ts: number; cents: number } | null {
    return this.length ? { ts: this.tsAt(this.length - 1), cents: this.centsAt(this.length - 1) } : null;
  }
}
