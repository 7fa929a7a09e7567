"""Every evaluation protocol on the synthetic scenes, for several backbones, with run times.

Writes the synthetic sets once (VOC 2007 presence labels, largest-object class folders, DAVIS
clips; segmentation reads the scenes directly), then for each ``NAME=WEIGHTS`` runs seg-probe,
seg-nn, seg-cluster, svm-voc07 (both variants), knn, linear and davis through the command line,
saving each result to ``OUT/NAME/eval.jsonl`` with its wall time, and ends with
``densessl eval report`` over all of them (``OUT/report.md``, ``OUT/report.png``).

    python benchmarks/eval_suite.py --backbone random=random densecl=runs/densecl/checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from densessl.cli import main as cli

ARCH = ["--arch", "resnet18", "--small-input", "--width", "0.25"]


def run(argv: list[str]) -> tuple[dict, float]:
    start = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"densessl {' '.join(argv)} failed with status {code}")
    return json.loads(buffer.getvalue().strip().splitlines()[-1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", nargs="+", required=True, metavar="NAME=WEIGHTS")
    parser.add_argument("--preset", default="easy")
    parser.add_argument("--out", default="runs/eval_suite")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "voc07").is_dir():
        cli(["data", "synth-voc07", "--out", str(data / "voc07"), "--preset", args.preset])
        cli(["data", "synth-folders", "--out", str(data / "folders"), "--preset", args.preset])
        cli(["data", "synth-davis", "--out", str(data / "davis"), "--preset", args.preset])
    size = ["--image-size", str(args.image_size)]
    synthetic = ["--data", f"synthetic:{args.preset}"]
    protocols = {
        "seg-probe": ["eval", "seg-probe", *synthetic],
        "seg-nn": ["eval", "seg-nn", *synthetic],
        "seg-cluster": ["eval", "seg-cluster", *synthetic, "--seeds", "0", "1", "2"],
        "svm-voc07 revisited": ["eval", "svm-voc07", "--data", str(data / "voc07"), *size],
        "svm-voc07 openselfsup": [
            "eval",
            "svm-voc07",
            "--variant",
            "openselfsup",
            "--data",
            str(data / "voc07"),
            *size,
        ],
        "knn": ["eval", "knn", "--data", str(data / "folders"), "--no-centre-crop", *size],
        "linear": ["eval", "linear", "--data", str(data / "folders"), "--no-centre-crop", *size],
        "davis": ["eval", "davis", "--data", str(data / "davis")],
    }
    timings: dict[str, dict[str, float]] = {}
    for item in args.backbone:
        name, weights = item.split("=", 1)
        run_dir = out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "eval.jsonl").unlink(missing_ok=True)
        timings[name] = {}
        for protocol, argv in protocols.items():
            result, seconds = run([*argv, "--weights", weights, *ARCH, "--save", str(run_dir)])
            timings[name][protocol] = seconds
            print(f"{name:10s} {protocol:22s} {seconds:7.1f} s", flush=True)
    report, _ = run(
        [
            "eval",
            "report",
            *(str(out / n.split("=", 1)[0]) for n in args.backbone),
            "--out",
            str(out / "report"),
        ]
    )
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print((out / "report.md").read_text())
    print(json.dumps({"timings_s": timings}))


if __name__ == "__main__":
    main()
