"""Grounding DINO's text side: the offline BERT vocabulary and caption rules of the original."""

from __future__ import annotations

import warnings
from pathlib import Path

from transformers import BertTokenizer

from ..prompts import Prompt

# bert-base-uncased's WordPiece vocabulary (Apache-2.0, Google), shipped so that no run ever
# downloads it: the seed pack's most common failure.
PACKAGED_VOCAB = Path(__file__).resolve().parent.parent / "data" / "bert-base-uncased-vocab.txt"
MAX_TEXT_TOKENS = 256


def bert_tokenizer(folder: Path | None = None) -> BertTokenizer:
    """The model folder's own vocab when it has one, else the packaged bert-base-uncased vocab."""
    vocab = folder / "vocab.txt" if folder is not None and (folder / "vocab.txt").is_file() else PACKAGED_VOCAB
    # transformers 5's BertTokenizerFast(vocab_file=...) silently ignores the file; this form does not.
    return BertTokenizer(vocab=str(vocab), do_lower_case=True)


def caption_from_prompt(prompt: str) -> str:
    """Lower-case, stripped and ending in '.' as the original detector was trained to see."""
    Prompt.parse(prompt)  # the prompt rules every detector shares: a clear error for an empty one
    caption = prompt.lower().strip()
    return caption if caption.endswith(".") else caption + "."


def tokenize(tokenizer: BertTokenizer, caption: str) -> dict:
    encoded = tokenizer(caption, return_tensors="pt")
    length = encoded["input_ids"].shape[1]
    if length > MAX_TEXT_TOKENS:
        warnings.warn(
            f"the prompt is {length} tokens long; Grounding DINO reads only the first {MAX_TEXT_TOKENS}, "
            "so phrases after that are ignored. Split the prompt into several runs to cover them all.",
            stacklevel=3,
        )
        encoded = {k: v[:, :MAX_TEXT_TOKENS] for k, v in encoded.items()}
    return dict(encoded)
