/** Commander option parsers the commands share. */
import { InvalidArgumentError } from "commander";

/** A whole number (`--seed 3`, `--depth -1`); anything else is a usage error. */
export function integer(value: string): number {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError("not an integer");
  return Number(value);
}

/** A repeatable flag: each use adds its value to the list. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
