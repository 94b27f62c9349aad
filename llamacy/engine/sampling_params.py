"""Every sampling option of the spec's /completion, with the spec's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SAMPLERS = ("top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature")
SAMPLER_NAMES = frozenset(DEFAULT_SAMPLERS)


@dataclass
class SamplingParams:
    """Options that shape how the next token is chosen; the engine's Sampler reads them once.

    ``logit_bias`` holds ``(token, bias)`` pairs where ``bias is None`` bans the token
    (the spec's ``false``). ``penalty_prompt`` holds tokens (already tokenized) or None.
    ``repeat_last_n`` must already be resolved (-1 → the slot's context size).
    """

    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    tfs_z: float = 1.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    penalize_nl: bool = True
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_prompt: list[int] | None = None
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    grammar: str = ""
    seed: int = -1
    ignore_eos: bool = False
    logit_bias: list[tuple[int, float | None]] = field(default_factory=list)
    n_probs: int = 0
    min_keep: int = 0
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS

    @property
    def has_penalties(self) -> bool:
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0)

    @property
    def is_greedy(self) -> bool:
        """True when the choice is an argmax: temperature <= 0, or top_k == 1 in the chain."""
        if self.temperature <= 0:
            return True
        return self.mirostat == 0 and "top_k" in self.samplers and self.top_k == 1
