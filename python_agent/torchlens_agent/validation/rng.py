"""torch's RNG state around a call: random ops are replayed with the state from just before the
original call."""

from typing import Any, List

import torch

def rng_state() -> Any:
    """torch's RNG state: the CPU generator's, and the GPUs' once CUDA is in use."""
    state: List[Any] = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.append(torch.cuda.get_rng_state_all())
    return state


def rng_equal(a: Any, b: Any) -> bool:
    """The RNG did not move between the two states: the call drew no random numbers."""
    if not torch.equal(a[0], b[0]):
        return False
    if len(a) > 1 and len(b) > 1:
        return all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    return True


def set_rng_state(state: Any) -> None:
    """Put back a state `rng_state` returned."""
    torch.set_rng_state(state[0])
    if len(state) > 1:
        torch.cuda.set_rng_state_all(state[1])
