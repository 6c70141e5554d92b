/**
 * Loops: which ops are passes of one layer.
 *
 * The rule (after TorchLens's published approach, documented in docs/loops.md):
 *
 * 1. Ops that use the same parameters are one layer, one pass per use, in execution order: key =
 *    function name + the parameters' addresses + output index. This folds a shared submodule
 *    called from two places, an RNN cell stepped in a Python loop, a Linear reused across loop
 *    iterations.
 * 2. Parameter-free ops are grouped only by their position relative to those recurring layers.
 *    Starting from each parameter layer with several passes, neighbourhoods grow in lockstep: for
 *    the passes of a group, look at each relation "parent at argument position P" and "child
 *    taking it at argument position P"; where two or more passes each have exactly one
 *    not-yet-grouped neighbour under that relation, and those neighbours are equivalent (same
 *    function, output shape, input shapes, output index and module path — first also the same
 *    non-tensor arguments, then without them, so `x[t]` with a varying `t` still groups), the
 *    neighbours become one layer and grow in turn.
 * 3. Everything else — inputs, buffers, constants, outputs, and ops with no recurring
 *    parameterised op around them — is its own layer with one pass, so look-alike ops that are
 *    not a loop (two unrelated `relu`s) stay separate.
 *
 * Known limits: a loop with no parameters at all is not folded (nothing anchors it); ops that run
 * in only one iteration (a data-dependent branch taken once) stay their own layer.
 */
import type { OpRecord } from "./types.js";

const GROUPABLE = new Set<OpRecord["kind"]>(["op", "internal"]);

type Edge = [index: number, position: string];

function paramKey(op: OpRecord): string {
  return `${op.name}|${op.out_index ?? ""}|${[...op.params].sort().join(",")}`;
}

/**
 * For each op, a layer key: equal keys mean passes of one layer. Keys are small integers in the
 * order layers are formed; labels.ts numbers layers by their first pass, not by key.
 */
// One function on purpose: steps 1-3 below share the layer, members and queue state they build.
export function groupLayers(ops: OpRecord[]): number[] {
  const n = ops.length;
  const layer = new Array<number>(n).fill(-1);
  const indexOf = new Map<number, number>(ops.map((op, i) => [op.id, i]));
  const parents: Edge[][] = ops.map((op) =>
    op.parents.flatMap(([pid, pos]) => {
      const i = indexOf.get(pid);
      return i === undefined ? [] : [[i, pos] as Edge];
    }),
  );
  const children: Edge[][] = ops.map(() => []);
  parents.forEach((edges, child) => {
    for (const [p, pos] of edges) children[p].push([child, pos]);
  });

  const looseKey = ops.map((op, i) => {
    const inShapes = parents[i].map(([p]) => ops[p].shape.join("x")).join(";");
    const path = op.modules.map(([address]) => address).join("/");
    return `${op.name}|${op.out_index ?? ""}|${op.shape.join("x")}|${inShapes}|${path}`;
  });
  const strictKey = ops.map((op, i) => `${looseKey[i]}|${JSON.stringify(op.args)}`);

  let nextLayer = 0;
  const members = new Map<number, number[]>(); // layer -> its ops, for layers formed here
  const anchored = new Set<number>(); // parameter layers: never merged into
  const queue: number[] = []; // layers whose neighbourhoods are still to grow

  // 1. parameter layers
  const byParams = new Map<string, number[]>();
  ops.forEach((op, i) => {
    if (GROUPABLE.has(op.kind) && op.params.length) {
      const key = paramKey(op);
      const list = byParams.get(key);
      if (list) list.push(i);
      else byParams.set(key, [i]);
    }
  });
  for (const list of byParams.values()) {
    const id = nextLayer++;
    for (const m of list) layer[m] = id;
    members.set(id, list);
    anchored.add(id);
    if (list.length > 1) queue.push(id);
  }

  // 2. grow recurring layers' neighbourhoods in lockstep
  while (queue.length) {
    const id = queue.shift() as number;
    const group = members.get(id);
    if (!group) continue; // merged into a later layer, which is queued itself
    for (const keys of [strictKey, looseKey]) {
      // relation -> member -> candidate neighbours (ungrouped, or in a layer formed here)
      const relations = new Map<string, Map<number, number[]>>();
      const note = (relation: string, member: number, candidate: number) => {
        const l = layer[candidate];
        if (!GROUPABLE.has(ops[candidate].kind) || l === id || anchored.has(l)) return;
        let byMember = relations.get(relation);
        if (!byMember) {
          byMember = new Map();
          relations.set(relation, byMember);
        }
        const list = byMember.get(member);
        if (list) list.push(candidate);
        else byMember.set(member, [candidate]);
      };
      for (const m of group) {
        for (const [p, pos] of parents[m]) note(`P|${pos}|${keys[p]}`, m, p);
        for (const [c, pos] of children[m]) note(`C|${pos}|${keys[c]}`, m, c);
      }
      for (const byMember of relations.values()) {
        const picked: number[] = [];
        for (const candidates of byMember.values()) {
          const unique = [...new Set(candidates)];
          if (unique.length === 1) picked.push(unique[0]);
        }
        const distinct = new Set(picked);
        if (distinct.size < 2 || distinct.size !== picked.length) continue;
        const fresh = picked.filter((c) => layer[c] < 0);
        if (!fresh.length) continue;
        // One layer for all of them: the ungrouped ones join, and layers formed from another
        // anchor that hold the same ops at the same place (an iteration offset) merge in.
        const merged = new Set(picked.filter((c) => layer[c] >= 0).map((c) => layer[c]));
        const target = nextLayer++;
        const all = [...fresh];
        for (const l of merged) {
          all.push(...(members.get(l) as number[]));
          members.delete(l);
        }
        all.sort((a, b) => a - b);
        for (const op of all) layer[op] = target;
        members.set(target, all);
        queue.push(target);
      }
    }
  }

  // 3. the rest: one layer each
  for (let i = 0; i < n; i++) if (layer[i] < 0) layer[i] = nextLayer++;
  return layer;
}
