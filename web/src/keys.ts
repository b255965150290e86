// The keyboard of a radio group or a tab list (WAI-ARIA patterns): one Tab stop for the whole group
// (the chosen item), arrows move the choice within it, Home and End go to the ends.

/** The index that `key` moves to from `index` among `count` items, wrapping; null for another key. */
export function rovingIndex(key: string, index: number, count: number): number | null {
  if (count <= 0) return null;
  switch (key) {
    case "ArrowRight":
    case "ArrowDown":
      return (index + 1) % count;
    case "ArrowLeft":
    case "ArrowUp":
      return (index - 1 + count) % count;
    case "Home":
      return 0;
    case "End":
      return count - 1;
    default:
      return null;
  }
}
