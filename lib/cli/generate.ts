/** `glm4-int4 generate --model DIR --prompt TEXT [--chat] [sampling options]`: prints the continuation and its speed. */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { LOAD_OPTIONS, SAMPLING_OPTIONS, loadFromOptsChecked, samplingFromOpts, type loadFromOpts } from "./options.js";

const HELP = `glm4-int4 generate --model DIR --prompt TEXT [options]

Prints the prompt and its continuation, then the speed on stderr.
  --prompt, -p TEXT          the text to continue (with --chat: the user's message)
  --chat                     wrap the prompt in GLM-4's chat format and print only the reply
  --max-new-tokens N         default 64
  --temperature T            default 0 (greedy; --chat: 0.8)
  --top-k K, --top-p P, --min-p P, --repetition-penalty R, --seed S
  --synthetic glm-4-9b       random weights of GLM-4-9B's shapes instead of --model (GPU)
  --device auto|cpu|cuda|cuda:N, --quantization int4|none, --group-size 32|64|128, --max-context N, --threads N
`;

/** Tokens per second for a message: "n/a" when there is no interval to measure (one token or none). */
export function rate(tokensPerSecond: number, tokens: number): string {
  return tokens > 1 && Number.isFinite(tokensPerSecond) && tokensPerSecond > 0 ? `${tokensPerSecond.toFixed(1)} tok/s` : "n/a tok/s";
}

export async function cmdGenerate(argv: string[], load: typeof loadFromOpts): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      ...LOAD_OPTIONS,
      ...SAMPLING_OPTIONS,
      prompt: { type: "string", short: "p" },
      synthetic: { type: "string" },
      chat: { type: "boolean" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  if (typeof o.prompt !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--prompt TEXT is required");
  // Every number is checked before anything is loaded or printed.
  loadFromOptsChecked(o);
  const sampling = samplingFromOpts(o);
  const model = await load(o, o.synthetic as string | undefined);
  try {
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once("SIGINT", onSig);
    const gen = {
      ...sampling,
      maxNewTokens: sampling.maxNewTokens ?? 64,
      signal: ac.signal,
    };
    let result;
    if (o.chat) {
      const it = model.chat([{ role: "user", content: o.prompt }], gen);
      let r = await it.next();
      while (!r.done) {
        process.stdout.write(r.value.text);
        r = await it.next();
      }
      result = r.value;
    } else {
      process.stdout.write(o.prompt);
      result = await model.generate(o.prompt, { ...gen, onTextChunk: (t: string) => process.stdout.write(t) });
    }
    process.removeListener("SIGINT", onSig);
    process.stdout.write("\n");
    const t = result.timings;
    process.stderr.write(
      `[${model.device}, ${model.info.quantization}] prompt ${result.usage.promptTokens} tokens, prefill ${rate(t.prefillTokensPerSecond, 2)}; ` +
        `generated ${result.usage.completionTokens} tokens at ${rate(t.decodeTokensPerSecond, result.usage.completionTokens)} (${result.finishReason})\n`,
    );
  } finally {
    await model.dispose();
  }
}
