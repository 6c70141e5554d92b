/** Small helpers for the words of messages and output, shared by every command and error. */

/** `3 passes`, `1 pass`: a count with its noun, plural unless it is 1 (`many` defaults to one + "s"). */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
