/**
 * GLM-4 chat prompts as token ids.
 *
 * What this reproduces (checked 2026-11-25 against copies of THUDM/glm-4-9b-chat's tokenizer_config.json
 * `chat_template`, e.g. the ChatGLM4 case of llama.cpp's tests/test-chat-template.cpp, and against
 * THUDM's tokenization_chatglm.py):
 *
 *     [gMASK]<sop>{% for item in messages %}...tools preamble...{% if item['content'] %}
 *     <|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}
 *     {% if add_generation_prompt %}<|assistant|>{% endif %}
 *
 * - The prompt starts with [gMASK]<sop>; each message is its role token, then "\n" + content (metadata is
 *   empty for plain messages); the generation prompt is a bare <|assistant|>: the model writes the "\n"
 *   that follows it. (llama.cpp's tests also carry a variant ending in "<|assistant|>\n", from a later
 *   GLM-4 release; the glm-4-9b-chat copies checked all end in a bare <|assistant|>.)
 * - Messages with empty content are left out entirely (`{% if item['content'] %}`).
 * - transformers renders the template to a string, cuts it at special tokens and encodes each stretch of
 *   text on its own (tiktoken, disallowed_special=()), so the text after a role token is encoded as ONE
 *   string: encode("\n" + content). (The older build_chat_input of tokenization_chatglm.py encoded "\n" and
 *   content separately; that differs when content starts with whitespace that holds a newline.)
 * - One deliberate difference: content is always plain text here, so a message containing "<|user|>" cannot
 *   inject a role token (the rendered template would turn it into one).
 * - The tools preamble (`item['tools']`) is not built here.
 */
import type { Glm4Tokenizer } from "./tokenizer.js";

export type ChatRole = "system" | "user" | "assistant" | "observation";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface ChatPromptOptions {
  /** End with <|assistant|> so that the model answers (default true). */
  addGenerationPrompt?: boolean;
}

/** What prompt building needs from a tokenizer. */
export type ChatTokenizer = Pick<Glm4Tokenizer, "encode" | "specialTokenId">;

const ROLES: readonly ChatRole[] = ["system", "user", "assistant", "observation"];

/** Token ids of a GLM-4 chat prompt for `messages` (see the file comment for the exact format). */
export function buildChatPrompt(tokenizer: ChatTokenizer, messages: readonly ChatMessage[], opts: ChatPromptOptions = {}): number[] {
  if (!Array.isArray(messages)) throw new TypeError("buildChatPrompt: messages must be an array of {role, content}");
  if (opts === null || typeof opts !== "object") throw new TypeError("buildChatPrompt: opts must be an object");
  const addGenerationPrompt = opts.addGenerationPrompt ?? true;
  if (typeof addGenerationPrompt !== "boolean") throw new TypeError("buildChatPrompt: opts.addGenerationPrompt must be a boolean");
  messages.forEach((m, i) => {
    if (m === null || typeof m !== "object") throw new TypeError(`buildChatPrompt: messages[${i}] must be an object {role, content}`);
    if (!ROLES.includes(m.role)) {
      throw new TypeError(`buildChatPrompt: messages[${i}].role is ${JSON.stringify(m.role)}; expected one of ${ROLES.join(", ")}`);
    }
    if (typeof m.content !== "string") {
      throw new TypeError(`buildChatPrompt: messages[${i}].content must be a string, got ${m.content === null ? "null" : typeof m.content}`);
    }
  });

  const ids = [tokenizer.specialTokenId("[gMASK]"), tokenizer.specialTokenId("<sop>")];
  for (const m of messages) {
    if (m.content === "") continue;
    ids.push(tokenizer.specialTokenId(`<|${m.role}|>`));
    for (const id of tokenizer.encode("\n" + m.content)) ids.push(id);
  }
  if (addGenerationPrompt) ids.push(tokenizer.specialTokenId("<|assistant|>"));
  return ids;
}

/** Ids that end an assistant turn: <|endoftext|>, <|user|>, <|observation|> (as glm-4-9b-chat's generation_config). */
export function chatStopIds(tokenizer: Pick<Glm4Tokenizer, "specialTokenId">): number[] {
  return ["<|endoftext|>", "<|user|>", "<|observation|>"].map((name) => tokenizer.specialTokenId(name));
}
