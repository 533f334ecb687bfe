/**
 * Opening files from a model directory without trusting what they are. `open()` of a FIFO blocks until a
 * writer appears (for ever, in a libuv worker thread that is then lost), and a character device such as
 * /dev/zero reads without end; so every file the loader opens goes through here: opened non-blocking
 * (O_NONBLOCK: a FIFO opens at once, and on a regular file the flag changes nothing), then fstat'ed, and
 * anything but a regular file is refused before a byte is read. Checking the handle (not a path stat'ed
 * earlier) leaves no window for the file to be swapped in between. Where the platform has no O_NONBLOCK
 * (Windows) a stat comes first instead.
 */
import { constants, type Stats } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";

/** Why a file could not be used; `reason` lets each caller pick its own error code and advice. */
export class FileProblem extends Error {
  constructor(
    readonly reason: "missing" | "special" | "too-large" | "io",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "FileProblem";
  }
}

/** What a file that is not a regular file is, in words. */
export function fileKind(st: Stats): string {
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isDirectory()) return "a directory";
  return "not a regular file";
}

function ioProblem(e: unknown): FileProblem {
  const code = (e as { code?: unknown })?.code;
  if (code === "ENOENT" || code === "ENOTDIR") return new FileProblem("missing", "does not exist", { cause: e });
  return new FileProblem("io", `cannot be read (${(e as Error)?.message ?? String(e)})`, { cause: e });
}

/**
 * Opens `file` for reading if it is a regular file; throws FileProblem ("missing", "special", "io") otherwise.
 * Never blocks on a FIFO. The caller closes the handle.
 */
export async function openRegular(file: string): Promise<{ fh: FileHandle; size: number }> {
  const nonBlock = (constants as { O_NONBLOCK?: number }).O_NONBLOCK;
  if (nonBlock === undefined) {
    const st = await stat(file).catch((e: unknown) => {
      throw ioProblem(e);
    });
    if (!st.isFile()) throw new FileProblem("special", `is ${fileKind(st)}, not a regular file`);
  }
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | (nonBlock ?? 0));
  } catch (e) {
    throw ioProblem(e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new FileProblem("special", `is ${fileKind(st)}, not a regular file`);
    return { fh, size: st.size };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e instanceof FileProblem ? e : ioProblem(e);
  }
}

/**
 * The bytes of a regular file of at most `maxBytes` bytes (checked before anything that size is allocated).
 * Throws FileProblem: "missing", "special", "too-large" or "io".
 */
export async function readRegularFile(file: string, maxBytes: number): Promise<Buffer> {
  const { fh, size } = await openRegular(file);
  try {
    if (size > maxBytes) throw new FileProblem("too-large", `is ${size} bytes, more than the ${maxBytes} accepted for this file`);
    const buf = Buffer.allocUnsafe(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(buf, done, size - done, done);
      if (bytesRead === 0) break; // shrank while being read: parse what is there
      done += bytesRead;
    }
    return done === size ? buf : buf.subarray(0, done);
  } catch (e) {
    throw e instanceof FileProblem ? e : ioProblem(e);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Whether `file` exists (any kind of file; a broken symlink does not). Never opens it. */
export async function pathExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
