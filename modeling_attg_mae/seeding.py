"""One seed-mixing rule for every per-item random stream (augmentation of a dataset row, masking noise of a step).

A stream is named by a base seed and a few counters, e.g. (seed, epoch, row) for a row's crop or
(seed, step, micro-batch, process) for a step's masking noise. Mixing them with distinct odd 32-bit multipliers
(the golden-ratio constant and xxHash's primes) gives a different torch seed for every name, independent of what
ran before, so a resumed run draws exactly the numbers of an uninterrupted one.
"""

import torch

# the multiplier of the base seed, then one per counter position
MIXING_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)


def mix_seed(seed: int, *counters: int) -> int:
    """`(seed * 0x9E3779B1 + counters[0] * 0x85EBCA77 + counters[1] * 0xC2B2AE3D + counters[2] * 0x27D4EB2F)
    mod 2**63`: a non-negative torch seed for the stream named by `seed` and up to three counters."""
    if len(counters) > len(MIXING_MULTIPLIERS) - 1:
        raise ValueError(f"mix_seed takes a seed and at most {len(MIXING_MULTIPLIERS) - 1} counters, "
                         f"got {len(counters)} counters")
    mixed = sum(int(value) * multiplier for value, multiplier in zip((seed, *counters), MIXING_MULTIPLIERS))
    return mixed % (2**63)


def seeded_generator(seed: int, *counters: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `mix_seed(seed, *counters)`."""
    return torch.Generator().manual_seed(mix_seed(seed, *counters))


__all__ = ["MIXING_MULTIPLIERS", "mix_seed", "seeded_generator"]
