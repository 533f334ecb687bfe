/** The top-level `glm4-int4 --help` text (each command has its own: `glm4-int4 <command> --help`). */
export const HELP = `glm4-int4 <command> [options]

Commands:
  generate   --model DIR --prompt TEXT   generate a continuation and print tokens per second
  chat       --model DIR                 interactive chat (/reset, /exit; Ctrl-C stops the reply)
  serve      --model DIR [--port 8000]   OpenAI-compatible server (/v1/chat/completions, /v1/completions)
  inspect    --model DIR | gpu           what a checkpoint holds, or what the GPU setup is
  quantize   --model DIR --out DIR       write an INT4 checkpoint (--group-size, --scheme asym|sym|nf4,
                                         --output-layer int4|bf16, --awq --calibration FILE,
                                         --force to replace --out)
  eval       --model DIR --text FILE     BF16 vs INT4: perplexity, KL divergence, same top token (--settings,
                                         --compare DIR, --context N, --json FILE; eval --help)
  bench      [--model DIR]               prefill/decode speed, memory and share of the hardware limit
  bench-serve --base-url URL             load benchmark of a running server (throughput, TTFT, inter-token p50/p99)

Common options:
  --device auto|cpu|cuda|cuda:N   (default auto)
  --quantization int4|none        (default int4)
  --group-size 32|64|128          (default 128)
  --scheme asym|sym|nf4           INT4 codes of load-time quantization (default asym)
  --output-layer int4|bf16        quantize the output layer or keep it in bf16 (default int4)
  --max-context N                 (default min(8192, model context))
  --threads N                     CPU worker threads (default: all cores)

glm4-int4 <command> --help   the command's options;   glm4-int4 --version   the package version
`;
