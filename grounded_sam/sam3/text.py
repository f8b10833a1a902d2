"""SAM 3's text side: the CLIP tokenizer, built offline from CLIP's byte-pair file.

The BPE file (OpenAI CLIP, MIT licence) ships with the package: a ``sam3.pt`` release file has
no tokenizer, and no run should have to download one. A transformers folder's own tokenizer
files win when it has them.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from transformers import AutoTokenizer, CLIPTokenizer, PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

PACKAGED_BPE = Path(__file__).resolve().parent.parent / "data" / "clip-bpe-simple-vocab-16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's vocabulary: 256 byte symbols, each also as a word end, then the first merges, then BOS/EOS
MERGES = 49152 - 256 - 2


@lru_cache(maxsize=1)
def _packaged_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(PACKAGED_BPE, "rt", encoding="utf-8").read().split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(folder: Path | None = None, context: int = 32) -> PreTrainedTokenizerBase:
    """The folder's tokenizer when it has one, else CLIP's, padding and cutting every phrase to ``context`` tokens."""
    if folder is not None and any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    else:
        vocab, merges = _packaged_vocab()
        tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))
    tokenizer.model_max_length = context
    return tokenizer
