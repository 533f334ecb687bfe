#!/usr/bin/env python3
"""Golden token ids for the tiny GLM-4 tokenizer, from tiktoken and from HF tokenizers.

Run on the GPU machine (it has tiktoken and tokenizers), from the repository root:

    python3 scripts/golden_tokens.py                  # writes fixtures/tiny-glm4/golden/tokens.json
    python3 scripts/golden_tokens.py --placeholder    # anywhere: a "pending-gpu" stand-in (no tiktoken needed)

Inputs: fixtures/tiny-glm4/tokenizer/{tokenizer.model, tokenizer_config.json, tokenizer.json} and the text
set fixtures/tiny-glm4/golden/token_texts.json. Each text is encoded three ways:
  tiktoken       tiktoken.Encoding(pat_str = GLM-4's regex, mergeable_ranks from tokenizer.model, special
                 tokens from tokenizer_config.json), encode(text, disallowed_special=()): exactly what
                 THUDM's tokenization_chatglm.py does for plain text.
  hf_tokenizers  tokenizers.Tokenizer.from_file(tokenizer.json), encode(text, add_special_tokens=False) with
                 special tokens kept as text (encode_special_tokens = True, or, on versions without it, the
                 same file with its added_tokens removed).
  python_ref     scripts/ref_bpe.py (plain python), a third opinion.
The regex pieces are recorded too: hf_pieces (tokenizers' Split pre-tokenizer alone, i.e. Oniguruma) and
python_ref_pieces (ref_bpe.split_glm4); the tests compare lib/text/tokenizer/split.ts with both.
tiktoken and hf_tokenizers must agree on every text, else nothing is written (the differences go to
tokens.disagree.json) and the exit status is 1. python_ref disagreeing only warns: tiktoken is the reference.
Output: {"source", "texts", "tiktoken", "hf_tokenizers", "hf_pieces", "python_ref", "python_ref_pieces"}; test/tokenizer.test.ts compares the
TypeScript tokenizer (both file layouts) with "tiktoken" and "hf_tokenizers".
"""
from __future__ import annotations

import base64
import json
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ref_bpe import GLM4_PAT_STR, encode_tiktoken_ref, split_glm4  # noqa: E402

ROOT = os.path.dirname(HERE)
TOK_DIR = os.path.join(ROOT, "fixtures", "tiny-glm4", "tokenizer")
GOLDEN_DIR = os.path.join(ROOT, "fixtures", "tiny-glm4", "golden")
TEXTS_PATH = os.path.join(GOLDEN_DIR, "token_texts.json")
OUT_PATH = os.path.join(GOLDEN_DIR, "tokens.json")
DISAGREE_PATH = os.path.join(GOLDEN_DIR, "tokens.disagree.json")


def load_ranks() -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(os.path.join(TOK_DIR, "tokenizer.model"), encoding="ascii") as f:
        for line in f:
            if not line.strip():
                continue
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
    return ranks


def load_specials() -> dict[str, int]:
    with open(os.path.join(TOK_DIR, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}


def load_texts() -> list[str]:
    with open(TEXTS_PATH, encoding="utf-8") as f:
        return json.load(f)["texts"]


def dumps_readable(value) -> str:
    """json.dumps keeping CJK and emoji as they are but escaping invisible characters (controls, format
    characters such as U+FEFF and U+200D, line/paragraph separators, spaces other than U+0020)."""
    out = []
    for ch in json.dumps(value, ensure_ascii=False):
        cat = unicodedata.category(ch)
        if ch != " " and (cat in ("Cc", "Cf", "Zl", "Zp", "Zs") or ch == "\x85"):
            out.append("".join(f"\\u{u:04x}" for u in _utf16(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _utf16(ch: str) -> list[int]:
    b = ch.encode("utf-16-be")
    return [int.from_bytes(b[k : k + 2], "big") for k in range(0, len(b), 2)]


def write_json(path: str, obj: dict) -> None:
    """JSON with one text / one id list per line (readable diffs when the golden changes)."""
    lines = []
    for key, value in obj.items():
        if isinstance(value, list):
            rows = [json.dumps(v, separators=(",", ":")) if isinstance(v, list) else dumps_readable(v) for v in value]
            body = "[\n" + ",\n".join("  " + r for r in rows) + "\n ]" if rows else "[]"
        else:
            body = dumps_readable(value)
        lines.append(f" {json.dumps(key)}: {body}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def first_difference(a: list[int], b: list[int]) -> int:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return min(len(a), len(b))


def hf_pieces_all(texts: list[str]) -> list[list[str]]:
    """GLM-4's split as HF tokenizers (Oniguruma) makes it: the Split pre-tokenizer of tokenizer.json alone."""
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    split = Split(Regex(GLM4_PAT_STR), behavior="isolated", invert=False)
    out = []
    for t in texts:
        pieces = [piece for piece, _offsets in split.pre_tokenize_str(t)]
        assert "".join(pieces) == t, f"HF Split pieces do not cover {t!r}: {pieces}"
        out.append(pieces)
    return out


def hf_encode_all(texts: list[str], specials: dict[str, int]) -> tuple[list[list[int]], str]:
    import tokenizers
    from tokenizers import Tokenizer

    path = os.path.join(TOK_DIR, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    for name, i in specials.items():
        got = tok.token_to_id(name)
        assert got == i, f"tokenizer.json gives {name!r} id {got}, tokenizer_config.json {i}"
    # The same file without added tokens: nothing can turn text into a special token there.
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["added_tokens"] = []
    stripped = Tokenizer.from_str(json.dumps(data))
    plain = [stripped.encode(t, add_special_tokens=False).ids for t in texts]
    how = "added_tokens removed"
    if hasattr(tok, "encode_special_tokens"):
        tok.encode_special_tokens = True
        kept = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        assert kept == plain, "tokenizers: encode_special_tokens=True and the stripped file disagree"
        how = "encode_special_tokens=True (agrees with added_tokens removed)"
    # With specials recognised, the special-looking text must become special ids (the file wires them up).
    tok2 = Tokenizer.from_file(path)
    ids = tok2.encode("<|user|>[gMASK]", add_special_tokens=False).ids
    assert ids == [specials["<|user|>"], specials["[gMASK]"]], f"tokenizer.json added_tokens do not match: {ids}"
    return plain, f"tokenizers {tokenizers.__version__} ({how})"


def main() -> None:
    texts = load_texts()
    ranks = load_ranks()
    specials = load_specials()
    ref = [encode_tiktoken_ref(t, ranks) for t in texts]
    ref_pieces = [split_glm4(t) for t in texts]

    if "--placeholder" in sys.argv[1:]:
        write_json(OUT_PATH, {
            "source": "pending-gpu",
            "note": "Stand-in until scripts/golden_tokens.py runs where tiktoken and tokenizers are installed; "
                    "test/tokenizer.test.ts skips the golden comparison while source is pending-gpu.",
            "texts": texts,
            "python_ref": ref,
            "python_ref_pieces": ref_pieces,
        })
        print(f"wrote placeholder {OUT_PATH} ({len(texts)} texts, python_ref only)")
        return

    try:
        import tiktoken
    except ImportError:
        raise SystemExit("golden_tokens.py needs tiktoken (pip install tiktoken); use --placeholder where it is missing")

    enc = tiktoken.Encoding(name="tiny-glm4", pat_str=GLM4_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)
    tik = [enc.encode(t, disallowed_special=()) for t in texts]
    for t, ids in zip(texts, tik):
        assert enc.decode(ids) == t, f"tiktoken round trip failed on {t!r}"
    assert enc.encode("<|user|>", allowed_special="all") == [specials["<|user|>"]], "tiktoken special tokens not wired up"
    hf, hf_source = hf_encode_all(texts, specials)
    hf_pieces = hf_pieces_all(texts)

    disagree = []
    ref_disagree = []
    for k, t in enumerate(texts):
        if tik[k] != hf[k]:
            disagree.append({"index": k, "text": t, "tiktoken": tik[k], "hf_tokenizers": hf[k], "first_difference": first_difference(tik[k], hf[k])})
        if tik[k] != ref[k] or hf_pieces[k] != ref_pieces[k]:
            ref_disagree.append(k)

    n_tokens = sum(len(x) for x in tik)
    print(f"texts: {len(texts)}, tokens (tiktoken): {n_tokens}")
    print(f"tiktoken {tiktoken.__version__} vs {hf_source}: {len(texts) - len(disagree)}/{len(texts)} texts agree")
    print(f"tiktoken + HF Split pieces vs scripts/ref_bpe.py: {len(texts) - len(ref_disagree)}/{len(texts)} texts agree")
    if ref_disagree:
        print(f"WARNING: ref_bpe.py differs on texts {ref_disagree}: fix scripts/ref_bpe.py (the golden is tiktoken's)")
    if disagree:
        write_json(DISAGREE_PATH, {"disagreements": disagree})
        for d in disagree:
            print(f"  DIFFER text {d['index']} {d['text'][:60]!r}: first difference at token {d['first_difference']}")
        raise SystemExit(f"tiktoken and HF tokenizers disagree on {len(disagree)} texts (details in {DISAGREE_PATH}); {OUT_PATH} not written")

    write_json(OUT_PATH, {
        "source": f"tiktoken {tiktoken.__version__}; {hf_source}",
        "generated_by": "scripts/golden_tokens.py",
        "texts": texts,
        "tiktoken": tik,
        "hf_tokenizers": hf,
        "hf_pieces": hf_pieces,
        "python_ref": ref,
        "python_ref_pieces": ref_pieces,
    })
    print(f"wrote {OUT_PATH}")


if __name__ == "__main__":
    main()
