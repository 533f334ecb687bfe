/** `glm4-int4 generate --model DIR --prompt TEXT [--chat] [sampling options]`: prints the continuation and its speed. */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { HELP } from "./help.js";
import { LOAD_OPTIONS, SAMPLING_OPTIONS, numOpt, samplingFromOpts, type loadFromOpts } from "./options.js";

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
  const model = await load(o, o.synthetic as string | undefined);
  try {
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once("SIGINT", onSig);
    const gen = {
      ...samplingFromOpts(o),
      maxNewTokens: numOpt(o, "max-new-tokens") ?? 64,
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
      `[${model.device}, ${model.info.quantization}] prompt ${result.usage.promptTokens} tokens, prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s; ` +
        `generated ${result.usage.completionTokens} tokens at ${t.decodeTokensPerSecond.toFixed(1)} tok/s (${result.finishReason})\n`,
    );
  } finally {
    await model.dispose();
  }
}
