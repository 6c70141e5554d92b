/** A section of bench/RESULTS.md that one benchmark owns, between its two marker comments. */

/** `text` with the section between `marks.begin` and `marks.end` replaced (or appended). */
export function withSection(text, marks, section) {
  const a = text.indexOf(marks.begin);
  const b = text.indexOf(marks.end);
  if (a >= 0 && b > a) return text.slice(0, a) + section + text.slice(b + marks.end.length + 1);
  return `${text.trimEnd()}\n\n${section}`;
}

/** The section in `text` (markers included, with the newline after the end one), or "". */
export function sectionOf(text, marks) {
  const a = text.indexOf(marks.begin);
  const b = text.indexOf(marks.end);
  return a >= 0 && b > a ? text.slice(a, b + marks.end.length + 1) : "";
}
