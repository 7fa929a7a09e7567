"""Projection heads keep the reference implementations' module numbering."""

from __future__ import annotations

from densessl.models.heads import build_mlp


def test_mlp_numbering_matches_the_references():
    slotcon = build_mlp([8, 16, 16, 4], norm=True, activation="gelu", spatial=True)
    assert [k.split(".")[0] for k in slotcon.state_dict() if k.endswith("weight")] == [
        "0",
        "1",
        "3",
        "4",
        "6",
    ]
    mgc = build_mlp([8, 16, 16, 4], norm=True, bias=False, last_norm="bn_noaffine")
    assert "7.running_mean" in mgc.state_dict() and "7.weight" not in mgc.state_dict()
    moco = build_mlp([8, 16, 4])
    assert sorted(moco.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
