"""Every sampling option of the spec's /completion, with the spec's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field

# The spec's default chain (what /props reports), and the full order with llama.cpp's newer
# samplers where its server puts them (common/sampling: penalties, dry, top_n_sigma, top_k, typ_p,
# top_p, min_p, xtc, temperature). A request that sets no ``samplers`` but turns one of the newer
# ones on gets it at its place in that order (``default_samplers``); one whose options leave it
# off is never added to the chain.
DEFAULT_SAMPLERS = ("top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature")
FULL_ORDER = ("dry", "top_n_sigma", "top_k", "tfs_z", "typical_p", "top_p", "min_p", "xtc", "temperature")
SAMPLER_NAMES = frozenset(FULL_ORDER)
DEFAULT_DRY_SEQUENCE_BREAKERS = ("\n", ":", "\"", "*")


@dataclass
class SamplingParams:
    """Options that shape how the next token is chosen; the engine's Sampler reads them once.

    ``logit_bias`` holds ``(token, bias)`` pairs where ``bias is None`` bans the token
    (the spec's ``false``). ``penalty_prompt`` holds tokens (already tokenized) or None.
    ``repeat_last_n`` and ``dry_penalty_last_n`` must already be resolved (-1 → the slot's
    context size); the engine treats a value below zero as off.
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
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_DRY_SEQUENCE_BREAKERS
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    top_n_sigma: float = -1.0
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
    def dry_on(self) -> bool:
        """DRY is in the chain: named in ``samplers``, a multiplier, and a window to scan."""
        return ("dry" in self.samplers and self.mirostat == 0 and self.dry_multiplier > 0.0
                and self.dry_base >= 1.0 and self.dry_penalty_last_n > 0)

    @property
    def xtc_on(self) -> bool:
        """XTC is in the chain (libllama's XTC does nothing above a 0.5 threshold)."""
        return ("xtc" in self.samplers and self.mirostat == 0 and self.xtc_probability > 0.0
                and self.xtc_threshold <= 0.5)

    @property
    def top_n_sigma_on(self) -> bool:
        return "top_n_sigma" in self.samplers and self.mirostat == 0 and self.top_n_sigma > 0.0

    @property
    def needs_chain(self) -> bool:
        """Options only the full llama_sampler chain implements (the greedy fast path does not)."""
        return bool(self.grammar) or self.dry_on or self.xtc_on or self.top_n_sigma_on

    @property
    def is_greedy(self) -> bool:
        """True when the choice is an argmax: temperature <= 0, or top_k == 1 in the chain."""
        if self.temperature <= 0:
            return True
        return self.mirostat == 0 and "top_k" in self.samplers and self.top_k == 1

    def default_samplers(self) -> tuple[str, ...]:
        """The chain for a request that names no ``samplers``: the spec's, plus the newer
        samplers its options turn on, each at llama.cpp's place."""
        plain = self.mirostat == 0
        on = {"dry": plain and self.dry_multiplier > 0.0 and self.dry_base >= 1.0 and self.dry_penalty_last_n != 0,
              "top_n_sigma": plain and self.top_n_sigma > 0.0,
              "xtc": plain and self.xtc_probability > 0.0 and self.xtc_threshold <= 0.5}
        return tuple(s for s in FULL_ORDER if on.get(s, s in DEFAULT_SAMPLERS))
