// Frame timing, measured in the page (Performance API): how long each canvas frame takes to draw,
// and the gap between animation frames. Read by the benchmark (tests/test_web_e2e.py) from
// window.__tapPerf. Bounded: the last 2,048 samples.
export interface PerfSamples {
  draw: number[];
  gaps: number[];
  reset(): void;
}

const MAX = 2048;

export const perf: PerfSamples = {
  draw: [],
  gaps: [],
  reset() {
    this.draw.length = 0;
    this.gaps.length = 0;
  },
};

export function record(list: number[], v: number): void {
  if (list.length >= MAX) list.shift();
  list.push(v);
}

declare global {
  interface Window {
    __tapPerf?: PerfSamples;
  }
}
// Guarded so the grid's module can be imported where there is no window (its markup is unit-tested).
if (typeof window !== "undefined") window.__tapPerf = perf;
