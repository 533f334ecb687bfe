#!/usr/bin/env python3
"""Train the tiny GLM-4-style tokenizer used by the test fixtures (python3 + stdlib only, deterministic).

    python3 scripts/make_tiny_tokenizer.py            # writes fixtures/tiny-glm4/tokenizer/
    python3 scripts/make_tiny_tokenizer.py --check    # rebuilds in memory, fails if the files differ

Vocabulary: exactly 512 ranks. Ranks 0..255 are the 256 single bytes in the order of GPT-2's
bytes_to_unicode table (printable bytes first), deliberately NOT rank == byte so that code assuming that
breaks in tests. Ranks 256..511 are 256 byte-level BPE merges learned tiktoken-style: the corpus is cut with
GLM-4's split regex (scripts/ref_bpe.py), every piece is (re-)encoded with the current ranks by tiktoken's
own merge rule, the most frequent adjacent pair whose concatenation is not yet a token becomes the next rank
(ties: lowest (left rank, right rank)). Re-encoding with the real merge rule keeps training and encoding in
step, so every token is what BPE makes of its own bytes (checked below).

Special tokens follow at ids 512..525 in GLM-4's order. Files written (as THUDM/glm-4-9b-chat and
glm-4-9b-chat-hf ship them):
  tokenizer.model        GLM-4's original format: one `base64(bytes) rank` line per rank
  tokenizer_config.json  added_tokens_decoder, eos/pad tokens, additional_special_tokens, chat_template, ...
  tokenizer.json         HF tokenizers: BPE over GPT-2 byte-level strings, merges = every split of every
                         token ordered by the merged token's rank (what transformers' TikTokenConverter
                         writes), pre_tokenizer Split(GLM-4 regex, Isolated) + ByteLevel(use_regex=false)
Self-checks before writing: every token is reachable by BPE of its bytes, and HF-style merges BPE equals
tiktoken-style rank BPE on the corpus, on fixtures/tiny-glm4/golden/token_texts.json and on random strings.
"""
from __future__ import annotations

import base64
import collections
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ref_bpe import (  # noqa: E402
    GLM4_PAT_STR,
    bpe_parts,
    bytes_to_unicode,
    encode_hf_ref,
    encode_tiktoken_ref,
    merges_from_ranks,
    split_glm4,
)

ROOT = os.path.dirname(HERE)
OUT_DIR = os.path.join(ROOT, "fixtures", "tiny-glm4", "tokenizer")
TEXTS_PATH = os.path.join(ROOT, "fixtures", "tiny-glm4", "golden", "token_texts.json")

N_MERGES = 256
SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>",
]

# GLM-4-9b-chat's chat template, message part only (the tools preamble of the real one is left out):
# "[gMASK]<sop>", then for each message with non-empty content "<|role|>" + metadata + "\n" + content,
# then "<|assistant|>" when a generation prompt is asked for.
CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n"
    "{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# A small multilingual training corpus: Chinese, English, code, emoji, whitespace runs, CRLF line ends.
CORPUS = """\
你好！我是人工智能助手，很高兴为你服务。请问有什么可以帮你的吗？
今天天气很好，我们一起去公园散步吧。公园里有很多花，红色的、黄色的、白色的，非常漂亮。
语言模型通过学习大量的文本数据来理解和生成自然语言。模型的参数越多，需要的计算资源也越多。
量化是一种压缩模型的方法：把十六位的权重变成四位的整数，再用缩放因子恢复原来的数值。
你好，世界！你好，GLM-4！我们的模型可以在一张显卡上运行。
用户：请帮我写一首关于春天的诗。
助手：春风吹绿了柳树，春雨滋润了大地，小鸟在枝头歌唱，孩子们在田野里奔跑。
中文、English、日本語、한국어 混合在一起的句子也很常见。
北京、上海、广州、深圳都是中国的大城市。人口很多，交通也很方便。

Hello, world! This is a small corpus for a tiny tokenizer. The quick brown fox jumps over the lazy dog.
It's a test; we're testing, they've tested, I'm sure you'll like it and he'd agree. DON'T PANIC.
Language models read text as tokens. A tokenizer turns text into numbers and back again.
The model runs on the GPU: prefill is bound by matrix math, decode is bound by memory bandwidth.
In 2024, the team measured 1234567 tokens in 89 seconds, about 13871 tokens per second.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 42 2048 4096 65536 151552.
Question: what is the capital of France? Answer: Paris. Question: what is 7 * 6? Answer: 42.

def add(a, b):
    \"\"\"Return the sum of a and b.\"\"\"
    return a + b


class Tokenizer:
    def __init__(self, ranks):
        self.ranks = ranks

    def encode(self, text):
        ids = []
        for piece in split(text):
            ids.extend(self.merge(piece))
        return ids


for i in range(10):
    if i % 2 == 0:
        print(f"{i} is even")
    else:
        print(f"{i} is odd")

export async function main(argv: string[]): Promise<number> {
  const model = await loadModel(argv[0], { maxNewTokens: 256, temperature: 0.7 });
  for await (const chunk of model.generate("Hello")) {
    process.stdout.write(chunk.text);
  }
  return 0;
}

{"name": "glm4", "version": "0.1.0", "layers": 40, "hidden": 4096, "heads": 32, "tags": ["llm", "int4"]}
<div class="message"><span>你好</span> <b>world</b></div>
SELECT id, name FROM users WHERE age >= 18 ORDER BY name;

Emoji: 😀 😃 😄 😁 🙂 👍 👍🏽 👋 🎉 🚀 ❤️ 🔥 ✨ 🌈 🐍 🦀 👨‍👩‍👧‍👦 🏳️‍🌈 👩‍💻 🤖
好的👍 太棒了🎉 加油💪 谢谢❤️ 哈哈😂😂😂

    four spaces
        eight spaces
\ttab\tseparated\tvalues
trailing spaces here      
a  b   c    d     e      f
\r\nwindows line\r\nends here\r\n\r\n
many newlines below


end.
"""


def train(corpus: str) -> dict[bytes, int]:
    byte_order = list(bytes_to_unicode().keys())  # printable bytes first, then the rest
    ranks: dict[bytes, int] = {bytes([b]): r for r, b in enumerate(byte_order)}
    counts = collections.Counter(p.encode("utf-8") for p in split_glm4(corpus))
    words = sorted(counts.items())  # deterministic order
    for step in range(N_MERGES):
        pairs: collections.Counter = collections.Counter()
        for word, freq in words:
            parts = bpe_parts(word, ranks)
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += freq
        best = None
        for (a, b), c in pairs.items():
            if a + b in ranks:
                continue
            key = (-c, ranks[a], ranks[b])
            if best is None or key < best[0]:
                best = (key, a + b)
        if best is None:
            raise SystemExit(f"corpus too small: no pair left to merge after {step} merges")
        ranks[best[1]] = len(ranks)
    assert len(ranks) == 256 + N_MERGES
    return ranks


def self_check(ranks: dict[bytes, int], corpus: str, texts: list[str]) -> None:
    # 1. Every token is what BPE makes of its own bytes (so tiktoken's whole-piece lookup and HF's
    #    ignore_merges change nothing).
    for tok, r in ranks.items():
        parts = bpe_parts(tok, ranks)
        assert parts == [tok], f"token {tok!r} (rank {r}) is not reachable: BPE gives {parts}"
    # 2. HF merges BPE == tiktoken rank BPE.
    merges = merges_from_ranks(ranks)
    rng = random.Random(1234)
    alphabet = sorted(set(corpus)) + ["\u00a0", "\u3000", "\ufeff", "\x85", "\u017f", "\U0001f600"]
    samples = list(texts) + [corpus] + corpus.splitlines()
    for _ in range(2000):
        samples.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
    for _ in range(300):  # runs of one character (whitespace runs, repeated letters)
        samples.append(rng.choice([" ", "\n", "a", "好", "\t", "-", "=", "0"]) * rng.randint(1, 70))
    for text in samples:
        a = encode_tiktoken_ref(text, ranks)
        for ignore in (False, True):
            b = encode_hf_ref(text, ranks, merges, ignore)
            assert a == b, f"merges BPE (ignore_merges={ignore}) differs from rank BPE on {text!r}: {b} vs {a}"
        assert b"".join(_decoder(ranks)[i] for i in a) == text.encode("utf-8")
    print(f"self-check: {len(ranks)} ranks reachable, {len(merges)} merges, {len(samples)} texts agree")


_DEC_CACHE: dict[int, dict[int, bytes]] = {}


def _decoder(ranks: dict[bytes, int]) -> dict[int, bytes]:
    d = _DEC_CACHE.get(id(ranks))
    if d is None:
        d = _DEC_CACHE[id(ranks)] = {r: t for t, r in ranks.items()}
    return d


def render_files(ranks: dict[bytes, int]) -> dict[str, str]:
    n = len(ranks)
    special_ids = {tok: n + k for k, tok in enumerate(SPECIAL_TOKENS)}
    model_lines = [f"{base64.b64encode(t).decode('ascii')} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])]

    config = {
        "added_tokens_decoder": {
            str(i): {
                "content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True,
            }
            for tok, i in special_ids.items()
        },
        "additional_special_tokens": list(SPECIAL_TOKENS),
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "model_input_names": ["input_ids", "attention_mask", "position_ids"],
        "model_max_length": 1024,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "ChatGLM4Tokenizer",
    }

    b2u = bytes_to_unicode()

    def s(t: bytes) -> str:
        return "".join(b2u[b] for b in t)

    vocab = {s(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    assert len(vocab) == n
    hf = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True,
            }
            for tok, i in special_ids.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": GLM4_PAT_STR}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": [f"{s(a)} {s(b)}" for a, b in merges_from_ranks(ranks)],
        },
    }
    return {
        "tokenizer.model": "".join(model_lines),
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=2) + "\n",
        "tokenizer.json": json.dumps(hf, ensure_ascii=False, indent=2) + "\n",
    }


def main() -> None:
    check_only = "--check" in sys.argv[1:]
    ranks = train(CORPUS)
    texts = []
    if os.path.exists(TEXTS_PATH):
        with open(TEXTS_PATH, encoding="utf-8") as f:
            texts = json.load(f)["texts"]
    self_check(ranks, CORPUS, texts)
    files = render_files(ranks)
    if check_only:
        bad = []
        for name, content in files.items():
            path = os.path.join(OUT_DIR, name)
            if not os.path.exists(path) or open(path, encoding="utf-8", newline="").read() != content:
                bad.append(name)
        if bad:
            raise SystemExit(f"{OUT_DIR}: out of date: {', '.join(bad)} (run scripts/make_tiny_tokenizer.py)")
        print(f"{OUT_DIR}: up to date")
        return
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(OUT_DIR, name), "w", encoding="utf-8", newline="") as f:
            f.write(content)
    longest = max(ranks, key=len)
    print(f"wrote {OUT_DIR}: {len(ranks)} ranks + {len(SPECIAL_TOKENS)} specials (ids {len(ranks)}..{len(ranks) + len(SPECIAL_TOKENS) - 1}); "
          f"longest token {longest.decode('utf-8', 'replace')!r} ({len(longest)} bytes)")


if __name__ == "__main__":
    main()
