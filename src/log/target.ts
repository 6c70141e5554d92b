/**
 * What one label on the command line means when a command takes one pass or one layer (`show`):
 * a pass label, a layer label, or any selector that picks exactly one pass or all the passes of
 * one layer. The selector rules themselves are select.ts's.
 */
import { usageError } from "../errors.js";
import type { LogIndex } from "./logIndex.js";
import { selectPasses } from "./select.js";
import type { Layer, Pass } from "./types.js";

export type Target = { kind: "pass"; pass: Pass } | { kind: "layer"; layer: Layer; passes: Pass[] };

/**
 * The pass or layer `label` names. Selectors matching nothing fail in selectPasses, with close
 * matches, worded for `command`; one matching several layers is refused here.
 */
export function resolveTarget(index: LogIndex, label: string, command: string): Target {
  const exact = index.pass(label);
  if (exact) return { kind: "pass", pass: exact };
  const layer = index.layer(label);
  if (layer) return { kind: "layer", layer, passes: index.passesOf(layer) };

  const { labels } = selectPasses(index.log, [label], command);
  if (labels.length === 1) return { kind: "pass", pass: index.pass(labels[0] as string) as Pass };
  const layers = [...new Set(labels.map((l) => index.pass(l)?.layer))];
  const only = layers.length === 1 ? index.layer(layers[0] as string) : undefined;
  if (only && only.passes.length === labels.length)
    return { kind: "layer", layer: only, passes: index.passesOf(only) };
  const some = labels.slice(0, 6).join(", ") + (labels.length > 6 ? ", …" : "");
  throw usageError(
    `${JSON.stringify(label)} matches ${labels.length} passes in ${layers.length} layers (${some}); ${command} takes one pass or one layer`,
    `give one pass label or layer label from \`torchlens ls RUN\`, e.g. ${labels[0]}`,
  );
}
