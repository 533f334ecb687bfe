/** Which device a model runs on, and the native context made for it. */
import { Glm4Error, wrapNative } from "../errors.js";
import { show } from "../util.js";
import type { NativeContext } from "./native.js";
import { native } from "./native-binary.js";

export type DeviceOption = "auto" | "cpu" | "cuda" | `cuda:${number}`;

/** Most CPU worker threads a context may ask for. */
export const MAX_THREADS = 1024;

/** Refuses a device name that is none of "auto", "cpu", "cuda", "cuda:N" (ERR_GLM4_INVALID_ARGUMENT). */
export function checkDevice(device: unknown): DeviceOption {
  if (typeof device === "string" && /^(auto|cpu|cuda|cuda:(0|[1-9][0-9]{0,3}))$/.test(device)) return device as DeviceOption;
  throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `device must be "auto", "cpu", "cuda" or "cuda:N", got ${show(device)}`);
}

/** Refuses a thread count that is not an integer in [1, MAX_THREADS] (undefined: all cores). */
export function checkThreads(threads: unknown): number | undefined {
  if (threads === undefined) return undefined;
  if (typeof threads !== "number" || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `threads must be an integer in [1, ${MAX_THREADS}] (or left out: all cores), got ${show(threads)}`);
  }
  return threads;
}

/** Pick the device: "auto" is the first GPU when the addon has CUDA and a GPU is there, else the CPU. */
export function resolveDevice(device: DeviceOption = "auto"): string {
  checkDevice(device);
  if (device === "cpu") return "cpu";
  const m = native();
  const info = m.buildInfo();
  const hasCuda = info.backends.includes("cuda");
  const devs = hasCuda ? m.devices() : [];
  if (device === "auto") return devs.length > 0 ? "cuda:0" : "cpu";
  const idx = device === "cuda" ? 0 : Number(device.slice(5));
  if (!hasCuda) throw new Glm4Error("ERR_GLM4_NO_CUDA", `device "${device}" was asked for, but this build of the addon has no CUDA backend (${info.cudaStatus}); use device "cpu" or "auto", or rebuild with nvcc present`);
  if (!(idx >= 0 && idx < devs.length)) throw new Glm4Error("ERR_GLM4_NO_CUDA", `device "${device}" was asked for, but ${devs.length} CUDA device(s) are visible (${info.cudaStatus}); use "auto" or "cpu"`);
  return `cuda:${idx}`;
}

/** The CUDA index of a resolved device string ("cuda:1" -> 1); 0 for "cpu". */
export function cudaIndex(device: string): number {
  return device.startsWith("cuda:") ? Number(device.slice(5)) : 0;
}

export function createContext(device: string, threads?: number): NativeContext {
  checkThreads(threads);
  try {
    return new (native().Context)(device, threads);
  } catch (e) {
    throw wrapNative(e);
  }
}
