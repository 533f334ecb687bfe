/** `glm4-int4 chat` — interactive terminal chat (issue 7). */
export async function cmdChat(_argv: string[], _load: unknown): Promise<void> {
  throw new Error("chat: not implemented yet");
}
