/** `glm4-int4 bench` — filled in by the CUDA backend work (issue 5). */
export async function cmdBench(_argv: string[]): Promise<void> {
  throw new Error("bench: not implemented yet");
}
