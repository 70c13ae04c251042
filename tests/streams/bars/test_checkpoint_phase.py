"""checkpoint_phase: a worker's partitions checkpoint spread over the interval, not at once."""

from __future__ import annotations

import itertools

import pytest

from streams.bars.agent import checkpoint_phase


@pytest.mark.parametrize("partitions", [2, 3, 6, 12, 64])
def test_checkpoint_phase_any_partition_count_spreads_over_the_interval(partitions: int) -> None:
    # Arrange / Act
    phases = sorted(checkpoint_phase(p) for p in range(partitions))

    # Assert: in [0, 1), and no two closer than half an even share of the interval
    assert all(0 <= phase < 1 for phase in phases)
    gaps = [b - a for a, b in itertools.pairwise(phases)] + [1 - phases[-1] + phases[0]]
    assert min(gaps) > 0.5 / partitions
