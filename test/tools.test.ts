/**
 * GLM-4 function calling: the tools system message and prompts (exact text and tokens of glm-4-9b-chat's
 * template), and the parser that turns replies back into OpenAI tool_calls.
 */
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { Glm4Tokenizer } from "../lib/text/tokenizer.js";
import { buildChatPrompt } from "../lib/text/chat-format.js";
import { TOOLS_PREAMBLE, buildToolPrompt, checkTools, parseReply, toolCallTurns, toolsSystemText, type Tool } from "../lib/text/tools.js";

const weather: Tool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "查询天气 (weather now)",
    parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city"] },
  },
};
const clock: Tool = { type: "function", function: { name: "now", parameters: { type: "object", properties: {} } } };

let tok: Glm4Tokenizer;
beforeAll(async () => {
  tok = await Glm4Tokenizer.fromDir(path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original"));
});

/** The ids split at special tokens: [special name, text of the ids up to the next special]. */
function segments(ids: number[]): [string, string][] {
  const runs: [string, number[]][] = [];
  for (const id of ids) {
    if (tok.isSpecial(id)) runs.push([tok.decode([id]), []]);
    else runs[runs.length - 1][1].push(id);
  }
  return runs.map(([s, run]) => [s, tok.decode(run)]);
}

describe("tools system message", () => {
  it("is the template's '# 可用工具' section, the function as JSON indented by 4, keys in order", () => {
    const expected =
      "\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。" +
      "\n\n# 可用工具" +
      "\n\n## get_weather\n\n" +
      '{\n    "name": "get_weather",\n    "description": "查询天气 (weather now)",\n    "parameters": {\n        "type": "object",\n' +
      '        "properties": {\n            "city": {\n                "type": "string"\n            },\n            "days": {\n' +
      '                "type": "integer"\n            }\n        },\n        "required": [\n            "city"\n        ]\n    }\n}' +
      "\n在调用上述函数时，请使用 Json 格式表示调用的参数。" +
      '\n\n## now\n\n{\n    "name": "now",\n    "parameters": {\n        "type": "object",\n        "properties": {}\n    }\n}' +
      "\n在调用上述函数时，请使用 Json 格式表示调用的参数。";
    expect(toolsSystemText([weather, clock])).toBe(expected);
    expect(expected.startsWith(`\n${TOOLS_PREAMBLE}`)).toBe(true);
  });
});

describe("buildToolPrompt", () => {
  it("without tools and metadata is buildChatPrompt", () => {
    const msgs = [
      { role: "system" as const, content: "sys" },
      { role: "user" as const, content: "hi" },
      { role: "assistant" as const, content: "" },
      { role: "assistant" as const, content: "hello" },
      { role: "user" as const, content: " again\n" },
    ];
    expect(buildToolPrompt(tok, msgs)).toEqual(buildChatPrompt(tok, msgs));
    expect(buildToolPrompt(tok, msgs, { addGenerationPrompt: false })).toEqual(buildChatPrompt(tok, msgs, { addGenerationPrompt: false }));
  });

  it("renders tools, a tool call and its observation as the template does, each text run encoded as one string", () => {
    const turns = [
      { role: "system" as const, content: "Be brief." },
      { role: "user" as const, content: "北京天气?" },
      ...toolCallTurns([{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "北京"}' } }]),
      { role: "observation" as const, content: '{"temp": 21}' },
    ];
    const ids = buildToolPrompt(tok, turns, { tools: [weather] });
    expect(segments(ids)).toEqual([
      ["[gMASK]", ""],
      ["<sop>", ""],
      ["<|system|>", toolsSystemText([weather])],
      ["<|system|>", "\nBe brief."],
      ["<|user|>", "\n北京天气?"],
      ["<|assistant|>", 'get_weather\n{"city": "北京"}'],
      ["<|observation|>", '\n{"temp": 21}'],
      ["<|assistant|>", ""],
    ]);
    // Token level: each run after a role token is encode(metadata + "\n" + content) as one string.
    const a = ids.indexOf(tok.specialTokenId("<|assistant|>"));
    const o = ids.indexOf(tok.specialTokenId("<|observation|>"));
    expect(ids.slice(a + 1, o)).toEqual(tok.encode('get_weather\n{"city": "北京"}'));
    const sys = ids.indexOf(tok.specialTokenId("<|system|>"));
    expect(ids.slice(sys + 1, ids.indexOf(tok.specialTokenId("<|system|>"), sys + 1))).toEqual(tok.encode(toolsSystemText([weather])));
  });

  it("forceTool ends the prompt with the function name and a newline", () => {
    const ids = buildToolPrompt(tok, [{ role: "user", content: "x" }], { tools: [weather], forceTool: "get_weather" });
    expect(segments(ids).at(-1)).toEqual(["<|assistant|>", "get_weather\n"]);
    expect(() => buildToolPrompt(tok, [{ role: "user", content: "x" }], { forceTool: "f", addGenerationPrompt: false })).toThrow(TypeError);
    expect(() => buildToolPrompt(tok, [{ role: "user", content: "x", metadata: "f" }])).toThrow(/assistant/);
  });
});

describe("parseReply", () => {
  it("reads 'name\\n{json}' as a tool call, and the call renders back to the same text", () => {
    const reply = 'get_weather\n{"city": "北京", "days": 2}';
    const r = parseReply(reply, [weather, clock]);
    expect(r.content).toBeNull();
    expect(r.toolCalls).toHaveLength(1);
    expect(r.toolCalls[0]).toMatchObject({ type: "function", function: { name: "get_weather", arguments: '{"city": "北京", "days": 2}' } });
    expect(r.toolCalls[0].id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(JSON.parse(r.toolCalls[0].function.arguments)).toEqual({ city: "北京", days: 2 });
    // Round trip: the call as an assistant turn is exactly what the model wrote after <|assistant|>.
    const ids = buildToolPrompt(tok, toolCallTurns(r.toolCalls), { addGenerationPrompt: false });
    expect(ids.slice(3)).toEqual(tok.encode(reply));
    // Whitespace around it and JSON over several lines are fine; names can be given as strings.
    expect(parseReply('\n now \n{\n  "tz": "UTC"\n}\n', ["now"]).toolCalls[0].function).toEqual({ name: "now", arguments: '{\n  "tz": "UTC"\n}' });
  });

  it("anything else is plain text (malformed JSON, unknown name, not an object, one line, no tools)", () => {
    const cases: [string, string][] = [
      ['get_weather\n{"city": "北京"', 'get_weather\n{"city": "北京"'], // malformed JSON
      ["get_weather\n{city: 1}", "get_weather\n{city: 1}"],
      ['get_time\n{"a": 1}', 'get_time\n{"a": 1}'], // not a tool
      ['get_weather\n["北京"]', 'get_weather\n["北京"]'], // not an object
      ["get_weather\n42", "get_weather\n42"],
      ["get_weather", "get_weather"], // one line
      ["\n你好！有什么可以帮你？", "你好！有什么可以帮你？"], // an answer: the leading "\n" goes
      ["\nget_weather is a tool\nok", "get_weather is a tool\nok"],
      ["", ""],
    ];
    for (const [text, content] of cases) expect(parseReply(text, [weather]), JSON.stringify(text)).toEqual({ content, toolCalls: [] });
    expect(parseReply('get_weather\n{"city": "x"}', [])).toEqual({ content: 'get_weather\n{"city": "x"}', toolCalls: [] });
  });
});

describe("checkTools", () => {
  it("accepts OpenAI function tools and names what is wrong otherwise", () => {
    expect(checkTools([weather, clock])).toHaveLength(2);
    expect(() => checkTools({})).toThrow(/array/);
    expect(() => checkTools([{ type: "code_interpreter" }])).toThrow(/tools\[0\]\.type/);
    expect(() => checkTools([{ type: "function" }])).toThrow(/tools\[0\]\.function must/);
    expect(() => checkTools([{ type: "function", function: { name: "has space" } }])).toThrow(/name/);
    expect(() => checkTools([weather, weather])).toThrow(/twice/);
    expect(() => checkTools([{ type: "function", function: { name: "f", parameters: [] } }])).toThrow(/parameters/);
  });
});
