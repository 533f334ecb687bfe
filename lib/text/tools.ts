/**
 * Function calling in GLM-4-9B-chat's own format, and OpenAI-style tools and tool calls mapped onto it.
 *
 * What glm-4-9b-chat's chat template does (tokenizer_config.json `chat_template`, checked 2026-11-25 against
 * several published copies, e.g. the ones embedded in llama.cpp/ollama test tables and in BFCL's GLM handler):
 *
 *   {% if item['tools'] is defined %}<|system|>\n你是一个名为 ChatGLM 的人工智能助手。…提供适当的答复和支持。\n\n# 可用工具
 *     {% for tool in tools %}\n\n## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}
 *     \n在调用上述函数时，请使用 Json 格式表示调用的参数。{% endfor %}{% endif %}
 *   {% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}
 *
 * - Tool definitions are a system message of their own, the "# 可用工具" (available tools) section: per tool a
 *   "## name" heading, the function object as JSON indented by 4 (keys in the given order, non-ASCII kept:
 *   transformers' tojson is json.dumps(ensure_ascii=False)), and a sentence asking for JSON arguments.
 * - The model calls a tool by answering, right after <|assistant|>, with the function name on the first line
 *   and the JSON arguments on the next (`<|assistant|>get_weather\n{"city": "北京"}`) and then <|observation|>
 *   (a stop id). A plain answer starts with "\n" instead (empty metadata).
 * - A call made earlier in the conversation is rendered the same way: role assistant, metadata = the
 *   function name, content = the arguments. Its result comes back as an <|observation|> message.
 * Only "function" tools exist in OpenAI's API; the template's built-in python/simple_browser/cogview tools are
 * not offered here.
 */
import { randomBytes } from "node:crypto";
import type { ChatRole, ChatTokenizer } from "./chat-format.js";

/** OpenAI's tool definition (only type "function"). */
export interface Tool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; [key: string]: unknown };
}

/** OpenAI's tool call in an assistant message. `arguments` is a JSON text. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** One message of a GLM-4 conversation; `metadata` (assistant only) is the name of the function called. */
export interface Glm4Turn {
  role: ChatRole;
  content: string;
  metadata?: string;
}

/** The fixed opening of the tools system message (glm-4-9b-chat's template). */
export const TOOLS_PREAMBLE =
  "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。";
const TOOLS_HEADING = "# 可用工具";
const TOOL_SUFFIX = "在调用上述函数时，请使用 Json 格式表示调用的参数。";

const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Checks an OpenAI `tools` array; throws a TypeError naming the bad entry. */
export function checkTools(tools: unknown): Tool[] {
  if (!Array.isArray(tools)) throw new TypeError("tools must be an array of {type: \"function\", function: {name, description?, parameters?}}");
  const seen = new Set<string>();
  tools.forEach((t, i) => {
    if (t === null || typeof t !== "object") throw new TypeError(`tools[${i}] must be an object`);
    const { type, function: fn } = t as Record<string, unknown>;
    if (type !== "function") throw new TypeError(`tools[${i}].type must be "function", got ${JSON.stringify(type)}`);
    if (fn === null || typeof fn !== "object" || Array.isArray(fn)) throw new TypeError(`tools[${i}].function must be an object`);
    const { name, description, parameters } = fn as Record<string, unknown>;
    if (typeof name !== "string" || !NAME_RE.test(name)) throw new TypeError(`tools[${i}].function.name must be 1-64 letters, digits, _ . : or -, got ${JSON.stringify(name)}`);
    if (seen.has(name)) throw new TypeError(`tools[${i}].function.name ${JSON.stringify(name)} appears twice`);
    seen.add(name);
    if (description !== undefined && typeof description !== "string") throw new TypeError(`tools[${i}].function.description must be a string`);
    if (parameters !== undefined && (parameters === null || typeof parameters !== "object" || Array.isArray(parameters))) {
      throw new TypeError(`tools[${i}].function.parameters must be a JSON Schema object`);
    }
  });
  return tools as Tool[];
}

/** The text of the tools system message (what follows "<|system|>"), starting with its "\n". */
export function toolsSystemText(tools: readonly Tool[]): string {
  let s = `\n${TOOLS_PREAMBLE}\n\n${TOOLS_HEADING}`;
  for (const t of tools) s += `\n\n## ${t.function.name}\n\n${JSON.stringify(t.function, null, 4)}\n${TOOL_SUFFIX}`;
  return s;
}

export interface ToolPromptOptions {
  /** Tool definitions, rendered as the first system message (none: no tools section). */
  tools?: readonly Tool[];
  /** End with <|assistant|> (default true). */
  addGenerationPrompt?: boolean;
  /** Make the reply a call of this function: the prompt ends with "<|assistant|>name\n" (needs addGenerationPrompt). */
  forceTool?: string;
}

/**
 * Token ids of a GLM-4 conversation with tools: [gMASK]<sop>, the tools system message, then each turn as
 * <|role|> + encode(metadata + "\n" + content) (turns with empty content are left out, as in the template),
 * then <|assistant|> (+ "name\n" when a tool is forced). Without tools and metadata this is exactly
 * buildChatPrompt's output.
 */
export function buildToolPrompt(tokenizer: ChatTokenizer, turns: readonly Glm4Turn[], opts: ToolPromptOptions = {}): number[] {
  const ids = [tokenizer.specialTokenId("[gMASK]"), tokenizer.specialTokenId("<sop>")];
  const push = (role: ChatRole, text: string) => {
    ids.push(tokenizer.specialTokenId(`<|${role}|>`));
    for (const id of tokenizer.encode(text)) ids.push(id);
  };
  if (opts.tools?.length) push("system", toolsSystemText(opts.tools));
  for (const t of turns) {
    if (t.content === "") continue;
    if (t.metadata !== undefined && t.role !== "assistant") throw new TypeError(`metadata (a function name) belongs to assistant turns, not ${t.role}`);
    push(t.role, `${t.metadata ?? ""}\n${t.content}`);
  }
  if (opts.addGenerationPrompt ?? true) {
    ids.push(tokenizer.specialTokenId("<|assistant|>"));
    if (opts.forceTool !== undefined) for (const id of tokenizer.encode(`${opts.forceTool}\n`)) ids.push(id);
  } else if (opts.forceTool !== undefined) throw new TypeError("forceTool needs addGenerationPrompt");
  return ids;
}

export interface ParsedReply {
  /** The answer text (the leading "\n" after <|assistant|> removed), or null when the reply is a tool call. */
  content: string | null;
  toolCalls: ToolCall[];
}

/** A fresh tool-call id in OpenAI's style. */
export function toolCallId(): string {
  return `call_${randomBytes(12).toString("hex")}`;
}

/**
 * Reads a reply (the text generated after <|assistant|>): "name\n{json}" with `name` one of `tools` and an
 * object for the JSON is a tool call; anything else (unknown name, malformed JSON, JSON that is not an
 * object, a single line) is plain text. As GLM-4's own OpenAI server does, surrounding whitespace is ignored.
 */
export function parseReply(text: string, tools: readonly Tool[] | readonly string[]): ParsedReply {
  const names = new Set(tools.map((t) => (typeof t === "string" ? t : t.function.name)));
  const plain = { content: text.replace(/^\n/, ""), toolCalls: [] };
  const s = text.trim();
  const nl = s.indexOf("\n");
  if (nl <= 0 || names.size === 0) return plain;
  const name = s.slice(0, nl).trim();
  const args = s.slice(nl + 1).trim();
  if (!names.has(name) || !args.startsWith("{")) return plain;
  let v: unknown;
  try {
    v = JSON.parse(args);
  } catch {
    return plain;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return plain;
  return { content: null, toolCalls: [{ id: toolCallId(), type: "function", function: { name, arguments: args } }] };
}

/** The assistant turns that render the tool calls of an earlier reply (one turn per call). */
export function toolCallTurns(calls: readonly ToolCall[]): Glm4Turn[] {
  return calls.map((c) => ({ role: "assistant", metadata: c.function.name, content: c.function.arguments }));
}
