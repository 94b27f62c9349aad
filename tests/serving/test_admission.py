"""Slot choice (serving.admission.choose_slot) on real Slot objects."""
from llamacy.serving.admission import COMPACT_REUSE_MIN, choose_slot
from llamacy.serving.slots import Slot
from llamacy.serving.tasks import CompletionParams


def _slots(used_at: list[float], cached: list[list[int]] | None = None) -> list[Slot]:
    slots = []
    for i, t in enumerate(used_at):
        s = Slot(i, 256)
        s.last_used = t
        s.cache_tokens = list(cached[i]) if cached else []
        slots.append(s)
    return slots


def test_ties_go_to_the_least_recently_used_slot():
    slots = _slots([5.0, 1.0, 3.0, 2.0])
    usable = [True, True, True, True]
    assert choose_slot(slots, CompletionParams([1, 2, 3]), usable).id == 1
    assert choose_slot(slots, CompletionParams([1, 2, 3], cache_prompt=True), usable).id == 1


def test_compact_ties_go_to_the_lowest_usable_id():
    """A padding GPU loop: new work fills the low ids, so busy slots stay together."""
    slots = _slots([5.0, 1.0, 3.0, 2.0])
    usable = [False, True, True, True]
    assert choose_slot(slots, CompletionParams([1, 2, 3]), usable, compact=True).id == 1
    usable = [False, False, True, True]
    assert choose_slot(slots, CompletionParams([1, 2, 3], cache_prompt=True), usable, compact=True).id == 2


def test_the_longest_cached_prefix_wins():
    slots = _slots([5.0, 1.0, 3.0, 2.0], cached=[[9], [1, 2], [1], [1, 2, 3, 4]])
    usable = [True, True, True, True]
    assert choose_slot(slots, CompletionParams([1, 2, 3], cache_prompt=True), usable).id == 3
    usable[3] = False
    assert choose_slot(slots, CompletionParams([1, 2, 3], cache_prompt=True), usable).id == 1


def test_compact_takes_a_higher_slot_only_for_a_long_cached_prefix():
    """A padding GPU loop re-evaluates a short shared prefix rather than leave a gap below a busy
    slot for the whole request; a prefix COMPACT_REUSE_MIN tokens longer is worth the gap."""
    n = COMPACT_REUSE_MIN
    prompt = list(range(1, 2 * n))
    slots = _slots([5.0, 1.0, 3.0, 2.0], cached=[[9], prompt[:5], prompt[:n - 1], prompt[:n + 2]])
    usable = [True, True, True, False]
    assert choose_slot(slots, CompletionParams(prompt, cache_prompt=True), usable, compact=True).id == 0
    assert choose_slot(slots, CompletionParams(prompt, cache_prompt=True), usable).id == 2
    usable[3] = True          # slot 3 holds n + 2 tokens, slot 0 none of them
    assert choose_slot(slots, CompletionParams(prompt, cache_prompt=True), usable, compact=True).id == 3
    usable[0] = False         # slot 1 holds 5: slot 3 is n - 3 tokens better, not enough
    assert choose_slot(slots, CompletionParams(prompt, cache_prompt=True), usable, compact=True).id == 1
    assert choose_slot(slots, CompletionParams(prompt), [True] * 4, compact=True).id == 0


def test_compact_takes_a_gap_that_leaves_a_streamable_remainder():
    """The lowest idle slot holds none of the prompt (a context shift dropped it): the remainder,
    longer than a stable loop streams, would be a chunk of its own, so an idle gap below a busy
    slot whose cached prefix leaves at most ``stream_max`` tokens is taken instead — the lowest
    such, and never one above the highest busy slot (that would widen every step)."""
    prompt = list(range(1, 21))                  # 20 tokens; stream_max 16
    shared = prompt[:14]                         # a slot holding the shared part leaves 6
    slots = _slots([0.0] * 6, cached=[[99] * 30, shared, prompt[:2], shared, [7], shared])
    usable = [True, False, True, True, False, True]     # busy: 1 and 4
    p = CompletionParams(prompt, cache_prompt=True)
    assert choose_slot(slots, p, usable, compact=True).id == 0                  # rule off
    assert choose_slot(slots, p, usable, compact=True, stream_max=16).id == 3   # 2 leaves 18
    usable[3] = False                             # the only streamable gap is taken: 5 is above 4
    assert choose_slot(slots, p, usable, compact=True, stream_max=16).id == 0
    usable[3], usable[4] = True, True
    usable[5] = False                             # 3 is below the highest busy slot again
    assert choose_slot(slots, p, usable, compact=True, stream_max=16).id == 3
    slots[0].cache_tokens = prompt[:4]            # the lowest leaves 16: streamed there already
    assert choose_slot(slots, p, usable, compact=True, stream_max=16).id == 0


def test_a_pinned_request_waits_for_its_slot():
    slots = _slots([1.0, 2.0])
    assert choose_slot(slots, CompletionParams([1], id_slot=1), [True, False], compact=True) is None
    assert choose_slot(slots, CompletionParams([1], id_slot=1), [False, True], compact=True).id == 1
