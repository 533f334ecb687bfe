"""Plain-python reference for GLM-4's tokenizer (no tiktoken, no `regex`, no tokenizers).

Used by scripts/make_tiny_tokenizer.py (training and self-checks) and scripts/golden_tokens.py (a third
opinion next to tiktoken and HF tokenizers). Three pieces:

* `split_glm4(text)`: a hand-written matcher for GLM-4's pre-tokenizer regex (tokenization_chatglm.py):

      (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+

  with the semantics of a backtracking engine (leftmost-first alternation), \\s = Unicode White_Space (what
  Rust's regex crate and Oniguruma use; NOT Python's str.isspace, which also accepts U+001C..U+001F), \\p{L}
  = general categories L*, \\p{N} = N*, and (?i:'s) also matching U+017F LATIN SMALL LETTER LONG S (simple
  case folding). Unicode tables come from Python's unicodedata, so characters newer than its Unicode version
  may classify differently; the test texts avoid those.
* `rank_bpe(piece, ranks)`: tiktoken's byte-pair merge (repeatedly merge the adjacent pair whose
  concatenation has the lowest rank, leftmost on ties), after tiktoken's whole-piece lookup.
* `merges_bpe(...)`: HF tokenizers' BPE model (repeatedly apply the listed merge with the lowest index,
  leftmost on ties; `ignore_merges` = whole-piece lookup first).
"""
from __future__ import annotations

import unicodedata

GLM4_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Unicode White_Space (PropList.txt): the \s of Rust's regex crate and of Oniguruma.
WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]
    + [" ", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)

# (?i:'s|'t|'re|'ve|'m|'ll|'d): the accepted spellings of each letter after the apostrophe.
_CONTRACTION_TAILS = (("sS\u017f",), ("tT",), ("rR", "eE"), ("vV", "eE"), ("mM",), ("lL", "lL"), ("dD",))


def _is_l(c: str) -> bool:
    return unicodedata.category(c)[0] == "L"


def _is_n(c: str) -> bool:
    return unicodedata.category(c)[0] == "N"


def _is_ws(c: str) -> bool:
    return c in WHITE_SPACE


def _is_punct(c: str) -> bool:  # [^\s\p{L}\p{N}]
    return not (_is_ws(c) or _is_l(c) or _is_n(c))


def _match_contraction(text: str, i: int) -> int:
    if text[i] != "'":
        return -1
    for tail in _CONTRACTION_TAILS:
        if all(i + 1 + k < len(text) and text[i + 1 + k] in letters for k, letters in enumerate(tail)):
            return i + 1 + len(tail)
    return -1


def _match_at(text: str, i: int) -> int:
    """End of the regex match starting at i (the pattern matches at every position)."""
    n = len(text)
    c = text[i]
    # 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    j = _match_contraction(text, i)
    if j > 0:
        return j
    # 2. [^\r\n\p{L}\p{N}]?\p{L}+
    j = -1
    if c not in "\r\n" and not _is_l(c) and not _is_n(c) and i + 1 < n and _is_l(text[i + 1]):
        j = i + 1
    elif _is_l(c):
        j = i
    if j >= 0:
        while j < n and _is_l(text[j]):
            j += 1
        return j
    # 3. \p{N}{1,3}
    if _is_n(c):
        j = i
        while j < n and j - i < 3 and _is_n(text[j]):
            j += 1
        return j
    # 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    j = -1
    if c == " " and i + 1 < n and _is_punct(text[i + 1]):
        j = i + 1
    elif _is_punct(c):
        j = i
    if j >= 0:
        while j < n and _is_punct(text[j]):
            j += 1
        while j < n and text[j] in "\r\n":
            j += 1
        return j
    # c is white space from here on.
    assert _is_ws(c)
    end = i
    while end < n and _is_ws(text[end]):
        end += 1
    # 5. \s*[\r\n]+ : greedy \s* backs off to the last \r or \n of the run.
    for k in range(end - 1, i - 1, -1):
        if text[k] in "\r\n":
            return k + 1
    # 6. \s+(?!\S) : the whole run at the end of the text, else the run minus its last character.
    if end == n:
        return end
    if end - i >= 2:
        return end - 1
    # 7. \s+
    return end


def split_glm4(text: str) -> list[str]:
    out = []
    i = 0
    while i < len(text):
        j = _match_at(text, i)
        out.append(text[i:j])
        i = j
    return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (used by byte-level tokenizer.json files)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_parts(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """tiktoken's merge loop (no whole-piece lookup): lowest-rank adjacent concatenation first, leftmost on ties."""
    parts = [piece[k : k + 1] for k in range(len(piece))]
    while len(parts) > 1:
        best = None
        best_i = -1
        for k in range(len(parts) - 1):
            r = ranks.get(parts[k] + parts[k + 1])
            if r is not None and (best is None or r < best):
                best, best_i = r, k
        if best is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def rank_bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    r = ranks.get(piece)
    if r is not None:  # tiktoken looks the whole piece up first
        return [r]
    return [ranks[p] for p in bpe_parts(piece, ranks)]


def encode_tiktoken_ref(text: str, ranks: dict[bytes, int]) -> list[int]:
    ids: list[int] = []
    for piece in split_glm4(text):
        ids.extend(rank_bpe(piece.encode("utf-8"), ranks))
    return ids


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every split (l, r) of every multi-byte token with both halves in the vocabulary, ordered by the rank of
    the merged token, then by the ranks of the halves: HF merge priority then equals tiktoken's rank order."""
    merges = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        local = [(tok[:k], tok[k:]) for k in range(1, len(tok)) if tok[:k] in ranks and tok[k:] in ranks]
        local.sort(key=lambda lr: (ranks[lr[0]], ranks[lr[1]]))
        merges.extend((rank, l, r) for l, r in local)
    merges.sort(key=lambda t: t[0])  # stable: keeps the per-token order
    return [(l, r) for _, l, r in merges]


def merges_bpe(piece: bytes, vocab: dict[bytes, int], merge_prio: dict[tuple[bytes, bytes], int], ignore_merges: bool) -> list[int]:
    if ignore_merges and piece in vocab:
        return [vocab[piece]]
    parts = [piece[k : k + 1] for k in range(len(piece))]
    while len(parts) > 1:
        best = None
        best_i = -1
        for k in range(len(parts) - 1):
            p = merge_prio.get((parts[k], parts[k + 1]))
            if p is not None and (best is None or p < best):
                best, best_i = p, k
        if best is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [vocab[p] for p in parts]


def encode_hf_ref(text: str, vocab: dict[bytes, int], merges: list[tuple[bytes, bytes]], ignore_merges: bool) -> list[int]:
    prio = {m: k for k, m in enumerate(merges)}
    ids: list[int] = []
    for piece in split_glm4(text):
        ids.extend(merges_bpe(piece.encode("utf-8"), vocab, prio, ignore_merges))
    return ids
