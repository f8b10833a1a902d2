"""What a prompt asks for: the phrases to find and the phrases to leave out, checked before any model runs.

"dog . red ball" is two phrases; ``exclude`` "bag . shadow" names two more to leave out. Every
detector reads the same ``Prompt``, so the rules (lower case, " . " between phrases, no phrase
both kept and excluded) are the same for Grounding DINO, MM-Grounding-DINO and SAM 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


def prompt_phrases(prompt: str) -> list[str]:
    """The phrases of a ``"dog . red ball"`` prompt, lower-cased and stripped (empty ones dropped)."""
    return [p.strip() for p in prompt.lower().split(".") if p.strip()]


@dataclass(frozen=True)
class Prompt:
    """Phrases to find (``kept``) and phrases found only to be cut out of them (``excluded``)."""

    kept: tuple[str, ...]
    excluded: tuple[str, ...] = ()

    @classmethod
    def parse(cls, prompt: str | Prompt, exclude: str | None = None) -> Prompt:
        """``prompt`` ("dog . red ball") and ``exclude`` ("bag . shadow"); a clear error for an empty prompt or a
        phrase in both."""
        if isinstance(prompt, Prompt):
            return prompt if not exclude else cls(prompt.kept, prompt.excluded + tuple(prompt_phrases(exclude)))
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be text, got {type(prompt).__name__}")
        kept = prompt_phrases(prompt)
        if not kept:
            raise InputError('the prompt is empty: name what to segment, e.g. "dog . red ball"')
        if exclude is not None and not isinstance(exclude, str):
            raise InputError(f"exclude must be text, got {type(exclude).__name__}")
        excluded = prompt_phrases(exclude or "")
        both = sorted(set(kept) & set(excluded))
        if both:
            raise InputError(f"{', '.join(repr(p) for p in both)} is both in the prompt and in exclude: name it in one of them")
        return cls(tuple(kept), tuple(excluded))

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every phrase a detector looks for: the kept ones first, then the excluded ones."""
        return self.kept + self.excluded

    @property
    def text(self) -> str:
        """The phrases as one detector prompt: ``"dog . red ball . bag"``."""
        return " . ".join(self.phrases)
