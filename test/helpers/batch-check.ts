/**
 * Continuous batching against single-sequence decoding, shared by test/batch-engine.test.ts (CPU) and
 * test/gpu/batch.test.ts (CUDA). Everything is greedy and compared bit for bit: the tokens and, after every step,
 * the raw logits of each sequence.
 */
import { createHash } from "node:crypto";
import type { Engine } from "../../lib/engine/engine.js";
import type { Glm4Model } from "../../lib/glm4.js";

export interface Trace {
  tokens: number[];
  /** A digest (sha1 of the f32 bits) of the logits each token was picked from, one per pick. */
  logits: string[];
}

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
const bits = (f: Float32Array) => createHash("sha1").update(new Uint8Array(f.buffer, f.byteOffset, f.byteLength)).digest("hex");

/** One sequence alone on the model's own engine (one slot): prefill, then n greedy picks with a step between two. */
export async function runAlone(model: Glm4Model, prompt: readonly number[], n: number): Promise<Trace> {
  const engine = model.runtime.solo;
  return model.runtime.exclusive(async () => {
    engine.reset();
    await engine.prefill(prompt);
    const tr: Trace = { tokens: [], logits: [] };
    for (let i = 0; i < n; i++) {
      tr.logits.push(bits(engine.readLogits()));
      const t = await engine.pick(GREEDY);
      tr.tokens.push(t);
      if (i + 1 < n) await engine.step(t);
    }
    engine.reset();
    return tr;
  });
}

/**
 * The sequences through one Engine of `maxBatch` slots: sequence i asks to join at tick joinAt[i] (it waits
 * for a free slot, in order), is prefilled, and leaves after n[i] picks; every tick picks for all active slots in
 * one call and steps all of them in one call. Returns each sequence's trace and the largest step seen.
 */
export async function runBatched(model: Glm4Model, maxBatch: number, prompts: readonly (readonly number[])[], n: readonly number[], joinAt: readonly number[]): Promise<{ traces: Trace[]; widest: number }> {
  const batch: Engine = model.runtime.newEngine({ maxBatch });
  try {
    return await model.runtime.exclusive(async () => {
      const traces: Trace[] = prompts.map(() => ({ tokens: [], logits: [] }));
      const slotOf = new Map<number, number>(); // sequence -> slot
      let next = 0, widest = 0;
      for (let tick = 0; next < prompts.length || slotOf.size; tick++) {
        while (next < prompts.length && joinAt[next] <= tick && batch.active < maxBatch) {
          const slot = batch.admit();
          batch.reset(slot); // no prefix reuse: the alone run prefilled everything too
          await batch.prefill(slot, prompts[next]);
          slotOf.set(next++, slot);
        }
        const live = [...slotOf].sort((a, b) => a[1] - b[1]);
        if (!live.length) continue;
        for (const [seq, slot] of live) traces[seq].logits.push(bits(batch.readLogits(slot)));
        const toks = await batch.pick(live.map(([, slot]) => ({ slot, params: GREEDY })));
        const feed: { slot: number; token: number }[] = [];
        live.forEach(([seq, slot], i) => {
          traces[seq].tokens.push(toks[i]);
          if (traces[seq].tokens.length >= n[seq]) {
            batch.release(slot);
            slotOf.delete(seq);
          } else feed.push({ slot, token: toks[i] });
        });
        widest = Math.max(widest, feed.length);
        await batch.step(feed);
      }
      return { traces, widest };
    });
  } finally {
    await model.runtime.releaseEngine(batch);
  }
}

/** Prompts of varied lengths from a seed (ids below `vocab`). */
export function makePrompts(count: number, vocab: number, lengths: readonly number[], seed = 1): number[][] {
  let a = seed >>> 0;
  const rnd = () => ((a = (Math.imul(a ^ (a >>> 15), 2654435761) + 0x6d2b79f5) >>> 0), a / 2 ** 32);
  return Array.from({ length: count }, (_, i) => Array.from({ length: lengths[i % lengths.length] }, () => Math.floor(rnd() * vocab)));
}
