import { defineConfig } from "vitest/config";

// GPU tests: one process, one file at a time (a GPU is one shared device; parallel files would fight for it).
export default defineConfig({
  test: {
    include: ["test/gpu/**/*.test.ts"],
    pool: "forks",
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
