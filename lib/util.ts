/** Small helpers with one home each (package paths and version). Nothing here depends on the rest of lib/. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package root (the folder with package.json), from dist/ or lib/ (this file sits directly in either). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
}

/** package.json's version, or "unknown" when it cannot be read. */
export function packageVersion(): string {
  try {
    return String((JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { version: unknown }).version);
  } catch {
    return "unknown";
  }
}
