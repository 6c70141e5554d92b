/**
 * "Did you mean": the known names closest to one a user typed, for error messages. One edit
 * distance and one ranking loop; what counts as close is a {@link Closeness} policy, since a
 * selector (`--layers tahn`) and an npz key (`conv2d_1_3`) are near their matches in different
 * ways.
 */

/** What counts as close, and in which order equally close names come. */
export interface Closeness {
  /** How far `candidate` is from `word`, lower is closer; null when it is not close at all. */
  score(word: string, candidate: string): number | null;
  /** Equally close names: alphabetically ("name") or in the order they were given ("given"). */
  ties: "name" | "given";
}

/**
 * Labels, selectors and module addresses: case-insensitive edit distance relative to the longer
 * name (at most 0.6), a quarter of it when one name is a prefix of the other.
 */
export const NAME_CLOSENESS: Closeness = {
  score(word, candidate) {
    const w = word.toLowerCase();
    const k = candidate.toLowerCase();
    const d = editDistance(w, k) / Math.max(w.length, k.length);
    const score = k.startsWith(w) || w.startsWith(k) ? d / 4 : d;
    return score <= 0.6 ? score : null;
  },
  ties: "name",
};

/**
 * Keys of an archive: within a third of the key's length in edits (at least 2), else any key
 * that contains it or is contained in it, ranked after those.
 */
export const KEY_CLOSENESS: Closeness = {
  score(word, candidate) {
    const limit = Math.max(2, Math.floor(word.length / 3));
    const d = editDistance(word, candidate, limit);
    if (d <= limit) return d;
    const contains =
      candidate.length > 0 &&
      word.length > 0 &&
      (candidate.includes(word) || word.includes(candidate));
    return contains ? limit + 1 : null;
  },
  ties: "given",
};

/** Up to `max` of the `known` names closest to `word`, closest first. */
export function closeMatches(
  word: string,
  known: Iterable<string>,
  closeness: Closeness = NAME_CLOSENESS,
  max = 5,
): string[] {
  const scored: { name: string; score: number; at: number }[] = [];
  for (const [at, name] of [...new Set(known)].entries()) {
    const score = closeness.score(word, name);
    if (score !== null) scored.push({ name, score, at });
  }
  const tie =
    closeness.ties === "name"
      ? (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name)
      : (a: { at: number }, b: { at: number }) => a.at - b.at;
  scored.sort((a, b) => a.score - b.score || tie(a, b));
  return scored.slice(0, max).map((s) => s.name);
}

/**
 * Levenshtein distance between `a` and `b` (UTF-16 code units), or `limit + 1` as soon as it
 * must exceed `limit`.
 */
export function editDistance(a: string, b: string, limit = Number.POSITIVE_INFINITY): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      const v = Math.min(
        (prev[j] as number) + 1,
        (cur[j - 1] as number) + 1,
        (prev[j - 1] as number) + cost,
      );
      cur[j] = v;
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > limit) return limit + 1;
    [prev, cur] = [cur, prev];
  }
  return prev[b.length] as number;
}
