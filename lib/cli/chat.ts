/**
 * `glm4-int4 chat --model DIR` — interactive terminal chat.
 *
 * One session (lib/session.ts) holds the conversation, so each turn prefills only the new message. Replies
 * stream as they are decoded. /reset starts a new conversation, /exit (or Ctrl-D) leaves. Ctrl-C while a
 * reply streams stops that reply (an AbortSignal) and returns to the prompt; Ctrl-C at the prompt exits.
 */
import { parseArgs } from "node:util";
import readline from "node:readline";
import { Glm4Error } from "../errors.js";
import type { Glm4Model } from "../glm4.js";
import type { GenerateOptions } from "../types.js";
import { LOAD_OPTIONS, SAMPLING_OPTIONS, loadFromOptsChecked, samplingFromOpts, type Opts } from "./options.js";
import { rate } from "./generate.js";
export type LoadFromOpts = (o: Opts) => Promise<Glm4Model>;

const HELP = `glm4-int4 chat --model DIR [options]

  /reset   start a new conversation      /exit   leave (also Ctrl-D)
  Ctrl-C   stops the reply being written; at the prompt it exits

Options:
  --system TEXT              a system message that opens the conversation
  --max-new-tokens N         reply length at most (default 512)
  --temperature T            default 0.8 (0 = greedy)
  --top-p P                  default 0.8
  --top-k K, --min-p P, --repetition-penalty R, --seed S
  --stats                    print tokens, speed and cache reuse after each reply (stderr)
  --device auto|cpu|cuda|cuda:N, --quantization int4|none, --group-size N, --max-context N, --threads N
`;


export async function cmdChat(argv: string[], load: LoadFromOpts): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      ...LOAD_OPTIONS,
      ...SAMPLING_OPTIONS,
      system: { type: "string" },
      stats: { type: "boolean" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  loadFromOptsChecked(o);
  const sampling = samplingFromOpts(o);
  const gen: GenerateOptions = { ...sampling, maxNewTokens: sampling.maxNewTokens ?? 512 };
  for (const k of Object.keys(gen) as (keyof GenerateOptions)[]) if (gen[k] === undefined) delete gen[k];

  const model = await load(o);
  const session = model.createSession({ system: o.system as string | undefined });
  const out = process.stdout;
  const rl = readline.createInterface({ input: process.stdin, output: out, prompt: "> ", terminal: process.stdin.isTTY === true && out.isTTY === true });
  process.stderr.write(`glm4-int4 chat [${model.device}, ${model.info.quantization}] — /reset starts over, /exit leaves; Ctrl-C stops a reply\n`);

  let reply: AbortController | null = null;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    rl.close();
  };
  // Ctrl-C: from readline when the terminal is in raw mode, as a signal otherwise (piped input).
  const onInterrupt = () => {
    if (reply) reply.abort();
    else {
      out.write("\n");
      close();
    }
  };
  rl.on("SIGINT", onInterrupt);
  process.on("SIGINT", onInterrupt);
  rl.on("close", () => {
    closed = true;
  });

  try {
    const lines = rl[Symbol.asyncIterator]();
    for (;;) {
      // Lines already read stay in the iterator after stdin ends (piped input): answer them all.
      if (!closed) rl.prompt();
      const next = await lines.next();
      if (next.done) break;
      const line = next.value.trim();
      if (line === "") continue;
      if (line === "/exit" || line === "/quit") break;
      if (line === "/reset") {
        await session.reset();
        out.write("(new conversation)\n");
        continue;
      }
      if (line.startsWith("/")) {
        out.write(`unknown command ${line.split(/\s/)[0]}; /reset or /exit\n`);
        continue;
      }
      reply = new AbortController();
      let started = false;
      try {
        const it = session.chat(line, { ...gen, signal: reply.signal });
        let r = await it.next();
        while (!r.done) {
          let t = r.value.text;
          if (!started) {
            t = t.replace(/^\n+/, ""); // the model writes "\n" after <|assistant|>
            started = t.length > 0;
          }
          if (t) out.write(t);
          r = await it.next();
        }
        const res = r.value;
        out.write(res.finishReason === "abort" ? " [stopped]\n" : "\n");
        if (o.stats) {
          const u = res.usage;
          process.stderr.write(
            `[${u.completionTokens} tokens at ${rate(res.timings.decodeTokensPerSecond, u.completionTokens)}, ${res.finishReason}; prompt ${u.promptTokens} tokens, ${u.cachedTokens} from the cache]\n`,
          );
        }
      } catch (e) {
        const err = e as { code?: string; message?: string };
        out.write("\n");
        if (err.code === "ERR_GLM4_CONTEXT_FULL") process.stderr.write(`the conversation no longer fits the context (${session.maxContext} tokens): /reset to start again\n`);
        else process.stderr.write(`error: ${err.code ? `${err.code}: ` : ""}${err.message ?? String(e)}\n`);
      } finally {
        reply = null;
      }
    }
  } finally {
    process.removeListener("SIGINT", onInterrupt);
    close();
    await session.dispose();
    await model.dispose();
  }
}
