/** One slot of an Engine seen as a single sequence. */
import type { NativeTensor } from "./native.js";
import type { Engine, PickParams } from "./engine.js";
import { runRounds } from "./generation.js";

/**
 * One slot of an Engine seen as a single sequence (the surface a Generation drives): `step` and `pick` run a batch
 * of one. The scheduler drives the engine directly (one step and one pick for all its slots) and uses this view
 * for prefill, host-side sampling and the length checks.
 */
export class Sequence {
  constructor(
    readonly engine: Engine,
    readonly slot: number,
  ) {
    engine.length(slot); // throws for a slot the engine does not have
  }
  /** Tokens this sequence's cache holds at most. */
  get maxContext(): number {
    return this.engine.maxContext;
  }
  /** Tokens in the cache (the next token goes to this position). */
  get length(): number {
    return this.engine.length(this.slot);
  }
  /** The ids in the cache (empty when unknown). */
  get tokens(): readonly number[] {
    return this.engine.cachedTokens(this.slot);
  }
  reset(): void {
    this.engine.reset(this.slot);
  }
  truncate(n: number): void {
    this.engine.truncate(this.slot, n);
  }
  reusePrefix(prompt: readonly number[]): number {
    return this.engine.reusePrefix(this.slot, prompt);
  }
  async prefill(ids: readonly number[]): Promise<void> {
    await this.engine.prefill(this.slot, ids);
  }
  /** Every token's logits, f32 [ids.length, V] (the caller disposes the tensor). */
  async prefillAll(ids: readonly number[]): Promise<NativeTensor> {
    return (await this.engine.prefill(this.slot, ids, { allLogits: true }))!;
  }
  async step(id: number): Promise<void> {
    await this.engine.step([{ slot: this.slot, token: id }]);
  }
  async pick(p: PickParams): Promise<number> {
    return (await this.engine.pick([{ slot: this.slot, params: p }]))[0];
  }
  readLogits(): Float32Array {
    return this.engine.readLogits(this.slot);
  }
  /** Rounds a Generation runs at once through run() (runRounds: 8 on CUDA, 1 on the CPU, GLM4_RUN_ROUNDS). */
  get rounds(): number {
    return runRounds(this.engine.ctx.device);
  }
  /** k rounds of (pick, step) at once (Engine.run); us[j] is round j's uniform. The k tokens. */
  async run(p: PickParams, us: readonly number[], k: number): Promise<number[]> {
    return (await this.engine.run([{ slot: this.slot, params: p, us }], k))[0];
  }
}
