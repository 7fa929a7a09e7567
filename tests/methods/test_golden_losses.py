"""Golden numbers: the first ten logged records of each landed method for a fixed seed.

A refactor of the trainer, the data pipeline or a method must leave these numbers alone; when it
moves them, the mathematics changed. Each run is a quick recipe shrunk to seconds, in fp32 with one
CPU thread:

- fp32, not the recipe's bf16: bf16 kernels round differently from one CPU to another by ~1e-3,
  which would hide any change smaller than that;
- one intra-op thread: another thread count sums the convolutions in another order (~1e-7);
- MoCo-v2 and DenseCL at a tenth of the recipe's lr (0.01): at 0.1 on 8 images, a rounding
  difference of 1e-7 at step 3 grew to 2e-3 by step 6 (measured with 1 against 2 threads), so the
  later numbers would pin rounding rather than mathematics; at 0.01 MoCo-v2 and SlotCon agree to
  2e-7 over all ten steps under either thread count.

Tolerance 1e-5 relative: the same code gives bit-identical numbers here; a harmless reordering of a
sum moves a float32 loss by ~1e-7 relative; of 22 deliberate changes of the mathematics (a
temperature, a sign, an index, a normalisation axis in the losses, the queue, the teacher update
and SlotCon's geometry) 21 moved a pinned number by 1e-4 relative or more within the first three
steps (the smallest: a queue written one slot late, 1.0e-4 at step 2; SlotCon's aligned maps
flipped back along the wrong axis, 1.3e-4 at step 1). The 22nd, DenseCL's lambda and 1 - lambda
swapped, changes nothing at the recipe's lambda = 0.5; tests/methods/test_densecl.py catches it.
Caveat: DenseCL picks each query location's positive by an argmax of cosine similarities, which at
initialisation are near-ties; a reordering that only changes rounding can flip one from step 6 on
(measured: 8e-6 at step 6, 2e-3 at step 8 with 2 threads). If only DenseCL's later steps fail while
its first five match to 1e-6, suspect rounding before mathematics.

Regenerate only for an intended change of the mathematics, and say so in the commit:
``OMP_NUM_THREADS=1 python -m tests.methods.test_golden_losses --write``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pytest

from densessl.config import load_config
from densessl.training.trainer import Trainer
from tests.helpers import SMALL_RUN, torch_threads

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests/fixtures/golden_losses.json"
RECIPES = ROOT / "densessl/recipes/quick"
STEPS = 10
RELATIVE = 1e-5
COMMON = [
    *SMALL_RUN,
    "data.synthetic_length=48",
    "train.channels_last=false",
    "views.*.crop.size=32",
    "model.width=0.125",
    f"train.max_steps={STEPS}",
    # the recipes' hue range when the numbers were pinned: tuning a recipe's augmentation is not a
    # change of the mathematics, so it should not move them
    "views.*.photometric.hue=0.1",
]
OVERRIDES = {
    # the key momentum and warm-up the quick recipes had when the numbers were pinned (a recipe's
    # values, as the hue)
    "mocov2": ["method.queue_size=32", "optim.lr=0.01", "method.momentum=0.99", "optim.warmup_epochs=0.5"],
    "densecl": ["method.queue_size=32", "optim.lr=0.01", "method.momentum=0.99", "optim.warmup_epochs=0.5"],
    "slotcon": ["method.num_prototypes=8", "method.hidden_dim=16"],
    # 48 px crops keep the recipe's 6x6 token grid (its groupings need a multiple of 6)
    "mgc": ["model.depth=1", "method.hidden_dim=16", "views.*.crop.size=48"],
}
#: wall-clock measurements, different on every run
TIMING = ("images_per_s", "data_wait_fraction")


def golden_run(method: str, run_dir: Path) -> list[dict[str, float]]:
    """The logged records of the first :data:`STEPS` steps of ``method``, timing left out."""
    config = load_config(RECIPES / f"{method}_synthetic.yaml", [*COMMON, *OVERRIDES[method]])
    with torch_threads(1):
        Trainer(config, run_dir).fit()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


@pytest.mark.parametrize("method", sorted(OVERRIDES))
def test_first_ten_steps_match_the_golden_numbers(method, tmp_path, monkeypatch):
    # a trainer that chooses its own thread count keeps the user's choice
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    expected = json.loads(FIXTURE.read_text())[method]
    got = golden_run(method, tmp_path / "run")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for want, have in zip(expected, got, strict=True):
        step = want["step"]
        # the losses first: they say the most when the mathematics changed
        for key in sorted(want, key=lambda k: (not k.startswith("loss"), k)):
            assert key in have, f"{method} step {step}: {key} is no longer logged"
            value = want[key]
            if isinstance(value, float) and not math.isfinite(value):
                assert not math.isfinite(have[key]), (method, step, key)
            else:
                assert have[key] == pytest.approx(value, rel=RELATIVE, abs=1e-12), (
                    f"{method} step {step}: {key} is {have[key]!r}, pinned {value!r}"
                )


def write_fixture() -> None:
    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in sorted(OVERRIDES):
            golden[method] = golden_run(method, Path(tmp) / method)
    FIXTURE.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.methods.test_golden_losses --write")
    os.environ["OMP_NUM_THREADS"] = "1"
    write_fixture()
