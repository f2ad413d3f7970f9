"""The test suite's port picker (tests/support/ports.py): blocks keep their spacing, nothing is handed
out twice, and a single port can be kept out of a span a stack declares but never checked."""

from __future__ import annotations

from support.ports import free_port, free_port_blocks


def test_blocks_keep_their_spacing_and_are_not_handed_out_again():
    blocks = free_port_blocks(5, count=3, spacing=100)
    assert [b[0] - blocks[0][0] for b in blocks] == [0, 100, 200]
    again = free_port_blocks(5, count=3, spacing=100)
    assert not {p for b in blocks for p in b} & {p for b in again for p in b}


def test_a_port_is_never_picked_inside_the_span_to_avoid():
    # The scale stack's failure in CI (2026-12-06): 4 blocks of 51 checked, 4,000 ports declared,
    # the gateway's port picked at random among the 3,796 unchecked ones and refused as an overlap.
    avoid = range(20000, 32000)  # all but the top 767 ports of the picker's range
    picked = {free_port(avoid=avoid) for _ in range(20)}
    assert len(picked) == 20 and not picked & set(avoid)
