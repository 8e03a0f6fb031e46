"""A small byte-level BPE vocabulary for CLIPTokenizer, learned in code so no download is needed.

CLIP's tokenizer is byte-level BPE with an end-of-word marker ``</w>``. The vocabulary here
holds the 256 byte symbols (with and without ``</w>``), merges learned deterministically from
the vocabulary of histopathology prompts, and CLIP's two special tokens. Any text tokenizes
(unknown words fall back to bytes); the prompt words become a few tokens each.
"""

from __future__ import annotations

import itertools
from collections import Counter
from functools import lru_cache

from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

# Words of the prompts the runtime and training module build (label and morphology prompts).
_CORPUS = (
    "a histopathology image of healthy lymph node tissue morphology type "
    "cancerous tumour tumor metastatic normal benign malignant cell cells stroma "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 "
    "h&e stained patch section with of the and"
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def learn_merges(corpus: str = _CORPUS, num_merges: int = 200) -> list[tuple[str, str]]:
    """Greedy BPE merges over the corpus words (ties broken lexically: deterministic)."""
    table = bytes_to_unicode()
    words = Counter(corpus.lower().split())
    splits: dict[str, list[str]] = {}
    for word in words:
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] = symbols[-1] + "</w>"
        splits[word] = symbols
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, symbols in splits.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for word, symbols in splits.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            splits[word] = out
    return merges


def build_vocab_and_merges(num_merges: int = 200) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-layout vocab (bytes, bytes+</w>, merges, specials) and the merge pairs."""
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = learn_merges(num_merges=num_merges)
    vocab_list += ["".join(pair) for pair in merges]
    vocab_list += [BOS, EOS]
    vocab = {}
    for token in vocab_list:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def build_tokenizer(max_length: int = 77, num_merges: int = 200) -> CLIPTokenizer:
    """A CLIPTokenizer over the in-code vocabulary (loads offline, saves with save_pretrained)."""
    vocab, merges = build_vocab_and_merges(num_merges)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
