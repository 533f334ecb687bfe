/** Which device a model runs on, and the native context made for it. */
import { Glm4Error, wrapNative } from "../errors.js";
import type { NativeContext } from "./native.js";
import { native } from "./native-binary.js";

export type DeviceOption = "auto" | "cpu" | "cuda" | `cuda:${number}`;

/** Pick the device: "auto" is the first GPU when the addon has CUDA and a GPU is there, else the CPU. */
export function resolveDevice(device: DeviceOption = "auto"): string {
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

export function createContext(device: string, threads?: number): NativeContext {
  try {
    return new (native().Context)(device, threads);
  } catch (e) {
    throw wrapNative(e);
  }
}
