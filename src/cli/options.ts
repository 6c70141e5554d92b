/** Commander option parsers shared by the commands' flag definitions. */
import { InvalidArgumentError } from "commander";

/** A repeatable flag: each use appends its value. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** An integer flag value (negative allowed). */
export function integer(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError("not an integer");
  return Number(value);
}
