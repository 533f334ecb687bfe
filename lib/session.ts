/**
 * A conversation that keeps its KV cache between turns.
 *
 *   const s = model.createSession({ system: "You are terse." });
 *   for await (const c of s.chat("你好")) process.stdout.write(c.text);      // prefills the whole prompt
 *   for await (const c of s.chat("再说一遍")) process.stdout.write(c.text);   // prefills only the new turn
 *   await s.dispose();
 *
 * The session owns a Sequence (one slot of an engine of its own: its own KV cache; the model's context and
 * weights are shared) and keeps the token ids that are in that cache. Every call finds the longest common prefix of the new prompt and the
 * cache, keeps it, and prefills only the rest (usage.cachedTokens says how many were kept); a prompt that
 * diverges early simply keeps less. Appending one message continues the token transcript as the model saw
 * it (the prompt plus the exact tokens it generated), so a multi-turn chat never prefills a turn twice.
 * Calls on one session run one after another; all sessions of a model share the model's queue.
 */
import { Glm4Error } from "./errors.js";
import { buildChatPrompt, chatStopIds, type ChatMessage } from "./text/chat-format.js";
import { streamChunks } from "./engine/generation.js";
import type { Sequence } from "./engine/sequence.js";
import type { Runtime } from "./engine/runtime.js";
import type { GenerateOptions, GenerateResult, TextChunk } from "./types.js";

export interface SessionOptions {
  /** KV-cache capacity of this session in tokens (default: the model's maxContext). */
  maxContext?: number;
  /** A system message that opens every conversation of this session (also after reset()). */
  system?: string;
}

export class Session {
  private seq: Sequence | null;
  private readonly system?: string;
  /** The conversation so far (assistant replies included, their leading "\n" removed). */
  private msgs: ChatMessage[] = [];
  /** The tokens the model has seen: the last prompt and the tokens it generated after it. */
  private transcript: number[] = [];
  private tail: Promise<unknown> = Promise.resolve();

  /** @internal use model.createSession() */
  constructor(
    private readonly rt: Runtime,
    options: SessionOptions = {},
  ) {
    if (options === null || typeof options !== "object") throw new TypeError("createSession(options): options must be an object");
    if (options.system !== undefined && typeof options.system !== "string") throw new TypeError("createSession: system must be a string");
    this.system = options.system;
    this.seq = rt.newSequence(options.maxContext);
    this.msgs = this.initialMessages();
  }

  /** The conversation so far (the system message, then user and assistant turns). */
  get messages(): readonly ChatMessage[] {
    return this.msgs;
  }

  /** Tokens in this session's KV cache now. */
  get cachedTokens(): number {
    return this.seq?.length ?? 0;
  }

  /** The KV-cache capacity of this session in tokens. */
  get maxContext(): number {
    return this.live().maxContext;
  }

  /**
   * One chat turn, streamed. `input` is the next message (a string is a user message), appended to the
   * conversation; or a whole conversation (an array), which replaces it (a leading system message from the
   * session's options is added when the array has none). Defaults as model.chat: temperature 0.8, topP 0.8.
   * The reply is added to `messages` when it ends (also when aborted: the partial reply).
   */
  chat(input: string | ChatMessage | readonly ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<TextChunk, GenerateResult, undefined> {
    return streamChunks((onChunk) =>
      this.serial(async () => {
        const tok = this.tokenizer();
        const before = { msgs: this.msgs, transcript: this.transcript };
        let ids: number[];
        if (Array.isArray(input)) {
          const msgs = input as readonly ChatMessage[];
          this.msgs = this.system !== undefined && !msgs.some((m) => m?.role === "system") ? [{ role: "system", content: this.system }, ...msgs] : [...msgs];
          ids = buildChatPrompt(tok, this.msgs);
        } else {
          const m: ChatMessage = typeof input === "string" ? { role: "user", content: input } : (input as ChatMessage);
          const turn = buildChatPrompt(tok, [m]); // [gMASK] <sop> <|role|> "\n"+content <|assistant|>
          this.msgs = [...this.msgs, m];
          ids = this.transcript.length ? [...this.transcript, ...turn.slice(2)] : buildChatPrompt(tok, this.msgs);
        }
        const stop = [...(options.stop ?? []), ...chatStopIds(tok)];
        try {
          const r = await this.rt.run(this.live(), ids, { temperature: 0.8, topP: 0.8, ...options, stop }, { reuse: true, onChunk });
          this.transcript = [...ids, ...r.tokens];
          this.msgs = [...this.msgs, { role: "assistant", content: r.text.replace(/^\n/, "") }];
          return r;
        } catch (e) {
          this.msgs = before.msgs;
          this.transcript = before.transcript;
          throw e;
        }
      }),
    );
  }

  /**
   * A plain continuation of `prompt` (text or ids) on this session's cache: the prefix shared with what the
   * cache holds is not prefilled again. The conversation (`messages`) is cleared: the transcript is now raw.
   */
  generate(prompt: string | readonly number[], options: GenerateOptions = {}): Promise<GenerateResult> {
    return this.serial(async () => {
      const ids = typeof prompt === "string" ? this.tokenizer().encode(prompt) : Array.from(prompt);
      const r = await this.rt.run(this.live(), ids, options, { reuse: true });
      this.transcript = [...ids, ...r.tokens];
      this.msgs = [];
      return r;
    });
  }

  /** Forgets the conversation and clears the KV cache (after the call in progress, if any). */
  reset(): Promise<void> {
    return this.serial(async () => {
      await this.rt.exclusive(async () => this.live().reset());
      this.transcript = [];
      this.msgs = this.initialMessages();
    });
  }

  /** Frees the session's KV cache; later calls throw ERR_GLM4_DISPOSED. */
  dispose(): Promise<void> {
    return this.serial(async () => {
      const seq = this.seq;
      this.seq = null;
      if (seq) await this.rt.releaseEngine(seq.engine);
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  private initialMessages(): ChatMessage[] {
    return this.system !== undefined ? [{ role: "system", content: this.system }] : [];
  }

  private live(): Sequence {
    if (!this.seq) throw new Glm4Error("ERR_GLM4_DISPOSED", "this session was disposed; create another with model.createSession()");
    return this.seq;
  }

  private tokenizer() {
    if (!this.rt.tokenizer) throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", "this model has no tokenizer (synthetic model); use session.generate with token ids");
    return this.rt.tokenizer;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}
