/**
 * The whole native surface, typed in one place: every op, tensor and context method the addon exports.
 * Which binary is loaded, and how it is checked first, is lib/engine/native-binary.ts (`native()`).
 *
 * Handles are branded classes: a Tensor from one Context must not be passed to another Context's ops (the
 * native side checks the device and says so).
 */

export type DType = "f32" | "bf16" | "f16" | "i32" | "u8" | "i4";
export type DeviceName = "cpu" | "cuda" | `cuda:${number}`;

export interface BuildInfo {
  version: string;
  /** "cpu" always; "cuda" when the CUDA backend was compiled in. */
  backends: string[];
  /** e.g. ["80", "86", "89", "90a", "90+ptx"]; empty without CUDA. */
  cudaArchitectures: string[];
  cudaRuntimeVersion: string | null;
  cudaDriverVersion: string | null;
  /** "ok" or why no GPU can be used. */
  cudaStatus: string;
  napiVersion: number;
  compiler?: string;
}

export interface DeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
  freeMemory: number;
  multiprocessors: number;
  l2CacheBytes: number;
}

export interface MemoryStats {
  inUse: number;
  peak: number;
  allocations: number;
  /** Bytes of freed GPU blocks the allocator keeps for reuse (not in inUse; 0 on the CPU). */
  cached: number;
}

declare const tensorBrand: unique symbol;
export interface NativeTensor {
  readonly [tensorBrand]: true;
  readonly dtype: DType;
  readonly shape: number[];
  readonly device: string;
  readonly nbytes: number;
  readonly disposed: boolean;
  /** Runs pending ops, then copies out (f32 -> Float32Array, bf16/f16 -> Uint16Array, i32 -> Int32Array, u8/i4 -> Uint8Array). */
  read(): Float32Array | Uint16Array | Int32Array | Uint8Array;
  /** Recorded write; the bytes are copied at once. Length must equal nbytes. */
  write(data: ArrayBufferView): void;
  /**
   * Runs what is recorded on the context, then copies data in on a worker thread, straight from the caller's buffer
   * (nothing copied on the JS thread). Leave data unchanged and the tensor unused until the promise settles.
   */
  writeAsync(data: ArrayBufferView): Promise<void>;
  /** Rows [begin, end) of dimension 0, sharing memory. */
  slice0(begin: number, end: number): NativeTensor;
  reshape(shape: number[]): NativeTensor;
  dispose(): void;
}

declare const planBrand: unique symbol;
export interface NativePlan {
  readonly [planBrand]: true;
  readonly ops: number;
  dispose(): void;
}

/** An INT4 linear weight [N, K] (csrc/core/int4_layout.h). */
export interface QWeight {
  codes: NativeTensor; // i4 [N, K]
  scales: NativeTensor; // bf16 [N, K/G]
  zeros: NativeTensor; // bf16 [N, K/G]
  groupSize: 32 | 64 | 128;
  /** 0 (default): the canonical layout (on disk, CPU); 1: the CUDA kernel layout (repacked at load, CUDA ops only). */
  layout?: number;
  /** 0 (default): integer codes, w = (q - zero) * scale; 1: NF4, w = (NF4[q] - zero) * scale. */
  codebook?: number;
}

/** quantizeInt4's scheme: 0 asymmetric, 1 symmetric (zero 8), 2 NF4 (codebook 1). */
export type QuantScheme = 0 | 1 | 2;

/** linearInt4's epilogue: 0 out = y, 1 out += y (residual add), 2 out = silu(y[:, :N/2]) * y[:, N/2:]. */
export type LinearMode = 0 | 1 | 2;

/** One op of csrc/op_list.h, as the addon's opList() reports it. */
export interface NativeOpInfo {
  /** The C++ name, e.g. "rotary_kv_write" (also the name errors and profiles use). */
  name: string;
  /** The NativeContext method, e.g. "rotaryKvWrite". */
  method: string;
  /** The method's arguments, in order (C++ parameter names). */
  args: string[];
}

/**
 * A context's methods. The op methods (from embedding() on) are the ops of csrc/op_list.h, arguments in the order
 * listed there; test/ops.test.ts checks this interface against the addon's opList().
 */

export interface NativeContext {
  readonly device: string;
  empty(dtype: DType, shape: number[]): NativeTensor;
  fromBuffer(dtype: DType, shape: number[], data: ArrayBufferView): NativeTensor;
  /** CUDA: a tensor in page-locked host memory mapped for the device (data copied in; kernels read it over the bus);
   * CPU: the same as fromBuffer. */
  hostMapped(dtype: DType, shape: number[], data: ArrayBufferView): NativeTensor;
  /** fromBuffer with the copy on a worker thread (for weights); leave data unchanged until the promise settles. */
  fromBufferAsync(dtype: DType, shape: number[], data: ArrayBufferView): Promise<NativeTensor>;
  flush(): void;
  flushAsync(): Promise<void>;
  memory(): MemoryStats;
  resetPeak(): void;
  /** Gives the freed GPU blocks kept for reuse back to the driver (a no-op on the CPU). */
  trimCache(): void;
  beginCapture(): void;
  endCapture(): NativePlan;
  /**
   * Ends the capture at once (ops recorded afterwards are not part of it) and, on CUDA, records and instantiates the
   * plan's CUDA graph on a worker thread (endCapture leaves that to the first replay, on the thread that flushes).
   */
  endCaptureAsync(): Promise<NativePlan>;
  replay(plan: NativePlan): void;
  /** Each op of the plan timed on its own (device events on CUDA), mean of `reps` runs, in plan order. */
  profile(plan: NativePlan, reps?: number): { op: string; ms: number }[];
  /** profile on a worker thread. */
  profileAsync(plan: NativePlan, reps?: number): Promise<{ op: string; ms: number }[]>;
  dispose(): void;

  embedding(out: NativeTensor, table: NativeTensor, ids: NativeTensor): void;
  /** out f32 or bf16 (the f32 result rounded to nearest even: the tensor-core GEMM's input without a convert pass). */
  rmsnorm(out: NativeTensor, x: NativeTensor, weight: NativeTensor, eps: number): void;
  /**
   * Canonical INT4 quantization of w [N, K] into q by scheme (csrc/core/int4_layout.h): 0 asymmetric min/max, 1
   * symmetric absmax (zero 8), both with q.codebook 0; 2 NF4 absmax (zero 0), q.codebook 1. colScale f32 [K]
   * (optional): quantizes w * colScale (activation-aware scaling).
   */
  quantizeInt4(q: QWeight, w: NativeTensor, scheme: QuantScheme, colScale?: NativeTensor | null): void;
  dequantizeInt4(out: NativeTensor, q: QWeight): void;
  /** dst = src in the other layout (0 -> 1 or 1 -> 0), bit-exact moves; dst must not overlap src. */
  repackInt4(dst: QWeight, src: QWeight): void;
  matmulInt4(out: NativeTensor, x: NativeTensor, w: QWeight, bias?: NativeTensor | null): void;
  /**
   * The fused INT4 linear of decode (csrc/op_list.h linear_int4): y = xn W^T (+ bias), xn = rmsnorm(x) * normWeight
   * (eps) when normWeight is given, else x; then by mode: 0 out = y, 1 out += y (residual add), 2 out = silu(y[:, :N/2])
   * * y[:, N/2:] (out [M, N/2]). CPU: layout 0; CUDA: layout 1.
   */
  linearInt4(out: NativeTensor, x: NativeTensor, w: QWeight, eps: number, mode: LinearMode, bias?: NativeTensor | null, normWeight?: NativeTensor | null): void;
  matmul(out: NativeTensor, x: NativeTensor, w: NativeTensor, bias?: NativeTensor | null): void;
  addBias(x: NativeTensor, bias: NativeTensor): void;
  rotary(x: NativeTensor, positions: NativeTensor, rotDim: number, theta: number): void;
  kvWrite(kcache: NativeTensor, vcache: NativeTensor, k: NativeTensor, v: NativeTensor, positions: NativeTensor): void;
  /**
   * rotary(q, positions) + rotary(k, positions) + kvWrite(kcache, vcache, k, v, rows) in one op (bit-identical to
   * the three): q f32[T,Hq,D] and k f32[T,Hkv,D] rotated in place, then cache rows rows[t] = k[t], v[t].
   */
  rotaryKvWrite(q: NativeTensor, k: NativeTensor, v: NativeTensor, kcache: NativeTensor, vcache: NativeTensor, positions: NativeTensor, rows: NativeTensor, rotDim: number, theta: number): void;
  /**
   * rotaryKvWrite reading q, k, v out of the packed rows of the fused QKV GEMM: qkv f32 or bf16 [T,(Hq+2Hkv)*D] (q
   * heads, then k heads, then v heads; left unchanged; bf16 widened exactly); q f32[T,Hq,D] receives the rotated q
   * heads, the cache rows rows[t] the rotated k and v. Bit-identical to rotaryKvWrite on the unpacked (f32) q, k, v.
   */
  rotaryKvWriteQkv(q: NativeTensor, qkv: NativeTensor, kcache: NativeTensor, vcache: NativeTensor, positions: NativeTensor, rows: NativeTensor, rotDim: number, theta: number): void;
  /**
   * Causal GQA attention (csrc/op_list.h): query t (q f32[T,Hq,D]) attends positions 0..positions[t] of its
   * sequence. Without a table (blockSize 0) the cache [S,Hkv,D] is one sequence, position p = row p. With a block
   * table i32[B,NB] the caches are a pool of rows and sequence b's position p is row
   * table[b][p / blockSize] * blockSize + p % blockSize (blockSize a power of two in 16..256); query t belongs to
   * sequence seq[t] (seq i32[T]; null: sequence 0). out f32 or bf16 (the f32 result rounded to nearest even).
   */
  attention(out: NativeTensor, q: NativeTensor, kcache: NativeTensor, vcache: NativeTensor, positions: NativeTensor, scale: number, blockSize: number, table?: NativeTensor | null, seq?: NativeTensor | null): void;
  /** out f32 or bf16 (the f32 result rounded) [M, F] = silu(gateUp[:, :F]) * gateUp[:, F:]; gateUp f32 or bf16 [M, 2F]. */
  swiglu(out: NativeTensor, gateUp: NativeTensor): void;
  add(out: NativeTensor, a: NativeTensor, b: NativeTensor): void;
  /** x += o in place, then out (f32 or bf16) = rmsnorm(x) * weight: add(x, x, o) + rmsnorm(out, x, weight, eps), bit-identical. */
  addRmsnorm(out: NativeTensor, x: NativeTensor, o: NativeTensor, weight: NativeTensor, eps: number): void;
  argmax(out: NativeTensor, x: NativeTensor): void;
  softmax(out: NativeTensor, x: NativeTensor, temperature: number): void;
  convert(out: NativeTensor, input: NativeTensor): void;
  fillRandom(out: NativeTensor, seed: number, mean: number, std: number): void;
  /**
   * params f32[M,4] = (temperature, topP, minP, u), or f32[M,5] with the repetition penalty; topK i32[M] (0 = off).
   * penaltyIds i32[M,L] and penaltyLen i32[M] (both or neither): the tokens of row i penalized are
   * penaltyIds[i][0..penaltyLen[i]) (ids outside [0, V) ignored).
   */
  sample(out: NativeTensor, logits: NativeTensor, params: NativeTensor, topK: NativeTensor, penaltyIds?: NativeTensor | null, penaltyLen?: NativeTensor | null): void;
  copy(dst: NativeTensor, src: NativeTensor): void;
}

export interface NativeModule {
  Context: new (device: DeviceName | string, threads?: number) => NativeContext;
  Tensor: abstract new () => NativeTensor;
  Plan: abstract new () => NativePlan;
  buildInfo(): BuildInfo;
  devices(): DeviceInfo[];
  /** Every op of csrc/op_list.h: the op methods of NativeContext (test/ops.test.ts holds the two together). */
  opList(): NativeOpInfo[];
  /**
   * The kernel matmulInt4 runs for out[m, n] = x[m, k] W^T on a CUDA device (W in `layout`, groups of `group`):
   * "gemv", "gemm_tc (layout 0)", "wgmma r256 t128 splits=1", "mma r128 t16 splits=4", ... (csrc/cuda/gemm_int4.cu).
   * Launches nothing. Throws ERR_GLM4_NO_CUDA without a CUDA backend; RangeError on bad numbers.
   */
  linearPath(m: number, n: number, k: number, group?: 32 | 64 | 128, layout?: 0 | 1, device?: number): string;
}
