import { defineConfig } from "vitest/config";

// CPU tests: everything under test/ except test/gpu (which needs CUDA and runs through vitest.gpu.config.ts).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/gpu/**", "node_modules/**"],
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
