"""Fault cases against a densessl checkout: what a user meets when things go wrong.

Each case runs ``python -m densessl`` from a temporary folder with ``PYTHONPATH=CHECKOUT``, so the
same script measures any source tree (an older commit in a worktree included), and prints one
line per case: its id, the command, ``handled`` or ``NOT handled``, and what was observed (the
last line of output or the numbers). The last line is one JSON object with every case. In
the printed commands ``<tiny>`` stands for the overrides in ``TINY``.

    python benchmarks/faults.py --checkout . [--only sigterm_resume resume_width_changed ...] [--trials 8]

Runs are tiny (a 32 px quick recipe, 64 synthetic scenes, batch 16, one thread), a few seconds
each. Where the checkout's command line has no such form (a flag it does not know), the older
equivalent is tried; where it has no equivalent at all, that failure is the result. The
read-only and full-disk cases mount small tmpfs folders and are skipped where mounting is not
permitted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

#: overrides that make a pre-training run take a second or two on one CPU thread
TINY = [
    "train.epochs=2",
    "data.synthetic_length=64",
    "train.batch_size=16",
    "data.workers=0",
    "views.*.crop.size=32",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.progress=false",
    "train.precision=fp32",
    "train.checkpoint_every=1",
]
DENSECL_TINY = [*TINY, "method.queue_size=64"]
#: 32 steps; last.pt every 4 steps, so that a killed run has something to resume from
RESUMABLE = ["train.epochs=8", "train.checkpoint_every=100", "train.checkpoint_every_steps=4"]


class Result:
    def __init__(self, rc: int | None, out: str, err: str, seconds: float) -> None:
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds

    @property
    def text(self) -> str:
        return self.out + self.err

    def last_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        lines = lines or [line for line in self.out.splitlines() if line.strip()]
        return lines[-1][:240] if lines else ""

    def traceback_lines(self) -> int:
        return len(self.err.splitlines()) if "Traceback" in self.err else 0


class Bench:
    def __init__(self, checkout: Path, work: Path, python: str) -> None:
        self.checkout, self.work, self.python = checkout, work, python
        self.env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
        self.env.pop("PYTHONSTARTUP", None)
        self._cache: dict[str, Path] = {}

    # --- running ----------------------------------------------------------------------------------

    def argv(self, args: list[str]) -> list[str]:
        return [self.python, "-m", "densessl", *args]

    def run(self, args: list[str], timeout: float = 300, cwd: Path | None = None) -> Result:
        start = time.perf_counter()
        try:
            p = subprocess.run(
                self.argv(args),
                cwd=cwd or self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            return Result(None, out, err + f"\n(timed out after {timeout:.0f} s)", timeout)

    def start(self, argv: list[str], log: Path) -> tuple[subprocess.Popen, object]:
        handle = open(log, "w")  # noqa: SIM115 - closed by finish()
        # a session of its own: the launcher and its workers are signalled and cleaned up as a group
        p = subprocess.Popen(
            argv, cwd=self.work, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        return p, handle

    @staticmethod
    def finish(p: subprocess.Popen, handle, timeout: float) -> int | None:
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        handle.close()
        return rc

    def python_value(self, code: str) -> str:
        p = subprocess.run(
            [self.python, "-c", code],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return p.stdout.strip() if p.returncode == 0 else f"error: {p.stderr.strip().splitlines()[-1:]}"

    def checkpoint_step(self, path: Path) -> str:
        code = (
            "import torch\n"
            f"c = torch.load({str(path)!r}, map_location='cpu', weights_only=False)\n"
            "print(c['step'])"
        )
        return self.python_value(code)

    # --- what the checkout offers -------------------------------------------------------------------

    def recipe(self, name: str) -> str:
        """A shipped recipe by name where the package ships them, else the file in configs/."""
        if (self.checkout / "densessl" / "recipes" / f"{name}.yaml").is_file():
            return name
        return str(self.checkout / "configs" / f"{name}.yaml")

    def pretrain(self, out: str, overrides: list[str], *extra: str, recipe: str = "quick/densecl_synthetic"):
        base = DENSECL_TINY if "densecl" in recipe else TINY
        return ["pretrain", self.recipe(recipe), *base, *overrides, "--out", out, *extra]

    # --- shared fixtures ----------------------------------------------------------------------------

    def template(self) -> Path:
        """A run stopped by train.max_steps at step 6 of 8: epoch_0001.pt (step 4) and last.pt (step 6)."""
        if "template" not in self._cache:
            self.run(self.pretrain("template", ["train.max_steps=6"]))
            self._cache["template"] = self.work / "template"
        return self._cache["template"]

    def copy_template(self, name: str) -> Path:
        target = self.work / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.template(), target)
        return target

    def image_folder(self, name: str, sizes: list[tuple[int, int]], bad: int = 0, ext: str = "jpg") -> Path:
        root = self.work / name
        if root.exists():
            return root
        rng = random.Random(0)
        for i, (w, h) in enumerate(sizes):
            sub = root / f"group_{i % 10:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            colour = tuple(rng.randrange(256) for _ in range(3))
            img = Image.new("RGB", (w, h), colour)
            for _ in range(6):  # a few blocks, so crops differ
                x, y = rng.randrange(w), rng.randrange(h)
                img.paste(
                    tuple(rng.randrange(256) for _ in range(3)),
                    (x, y, min(w, x + w // 4), min(h, y + h // 4)),
                )
            img.save(sub / f"img_{i:04d}.{ext}")
        if bad:
            # between the good sub-folders in sorted order, as a damaged copy of one folder would be
            sub = root / "group_05_damaged"
            sub.mkdir(parents=True, exist_ok=True)
            for i in range(bad):
                (sub / f"broken_{i:03d}.jpg").write_bytes(
                    b"\xff\xd8\xff\xe0" + bytes(rng.randrange(256) for _ in range(300))
                )
        return root

    def mount_tmpfs(self, name: str, options: str) -> Path | None:
        point = self.work / name
        point.mkdir(exist_ok=True)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        return point if p.returncode == 0 else None

    @staticmethod
    def umount(point: Path) -> None:
        subprocess.run(["umount", str(point)], capture_output=True)


def show(args: list[str], bench: Bench) -> str:
    """The command as a user types it: ``densessl ...`` with the checkout's paths shortened."""
    text = " ".join(["densessl", *args]).replace(str(bench.checkout) + "/", "")
    return text.replace(" " + " ".join(DENSECL_TINY), " <tiny>").replace(" " + " ".join(TINY), " <tiny>")


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses_by_step(records: list[dict]) -> dict[int, float]:
    """The loss of every step as the history finally tells it (the last record of a step)."""
    return {int(r["step"]): r["loss"] for r in records if "loss" in r}


def wait_for_lines(path: Path, count: int, p: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return True
        time.sleep(0.01)
    return False


CASES: dict[str, Callable[[Bench, argparse.Namespace], dict]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def verdict(handled: bool | None, command: str, observed: str, **numbers) -> dict:
    return {"handled": handled, "command": command, "observed": observed, **numbers}


# --- training faults --------------------------------------------------------------------------------


@case("slotcon_elongated")
def slotcon_elongated(b: Bench, a) -> dict:
    folder = b.image_folder("elongated", [(400, 60), (60, 400)] * 32)
    args = b.pretrain(
        "slotcon_elongated",
        [f"data.source=folder:{folder.name}", "train.epochs=4", "train.sync_bn=false"],
        recipe="quick/slotcon_synthetic",
    )
    r = b.run(args)
    return verdict(
        r.rc == 0, show(args, b), f"rc {r.rc}: {r.last_line()}", traceback_lines=r.traceback_lines()
    )


def interrupted_run(
    b: Bench, name: str, at_line: int, second: str = "", delay: float = 0.0, sig: int = signal.SIGTERM
) -> dict:
    """Start a run, signal it ``delay`` s after its ``at_line``-th logged step; ``second``: "save"
    sends one more SIGTERM as soon as the checkpoint's temporary file appears, "burst" one every
    20 ms for 2 s."""
    out = b.work / name
    shutil.rmtree(out, ignore_errors=True)
    args = b.pretrain(name, RESUMABLE)
    p, handle = b.start(b.argv(args), b.work / f"{name}.log")
    reached = wait_for_lines(out / "metrics.jsonl", at_line, p)
    time.sleep(delay)
    os.kill(p.pid, sig)
    sent, during_save = 1, False
    deadline = time.monotonic() + 2.0
    if second == "save":
        folder = out / "checkpoints"
        while time.monotonic() < deadline and p.poll() is None:
            if folder.is_dir() and any(".tmp" in f.name for f in folder.iterdir()):
                os.kill(p.pid, signal.SIGTERM)
                sent, during_save = 2, True
                break
            time.sleep(0.001)
    elif second == "burst":
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.02)
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                sent += 1
    rc = b.finish(p, handle, 120)
    log = (b.work / f"{name}.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    return {
        "args": args,
        "rc": rc,
        "reached": reached,
        "signals": sent,
        "during_save": during_save,
        "log": log,
        "last": lines[-1] if lines else "",
    }


@case("sigterm_resume")
def sigterm_resume(b: Bench, a) -> dict:
    ref_args = b.pretrain("reference", RESUMABLE)
    ref = b.run(ref_args)
    reference = losses_by_step(read_metrics(b.work / "reference" / "metrics.jsonl"))
    if ref.rc != 0 or not reference:
        return verdict(None, show(ref_args, b), f"reference run failed: {ref.last_line()}")
    trials, identical, details, duplicates = a.trials, 0, [], []
    for t in range(trials):
        # stops spread over the 32 steps, and over the ~60 ms of a step: the signal must be able
        # to land inside the forward pass, the teacher update and the optimiser step
        at, delay = 3 + (t * 19) % 27, ((t * 0.37) % 1.0) * 0.06
        name = f"interrupted_{t}"
        stop = interrupted_run(b, name, at, delay=delay)
        resumed = b.run(b.pretrain(name, RESUMABLE, "--resume", "auto"))
        records = read_metrics(b.work / name / "metrics.jsonl")
        losses = losses_by_step(records)
        diff = max((abs(losses[s] - v) for s, v in reference.items() if s in losses), default=float("nan"))
        same = resumed.rc == 0 and losses == reference
        identical += same
        duplicates.append((len(records), len({r["step"] for r in records})))
        details.append(
            f"SIGTERM {delay * 1000:.0f} ms after logged step {at}: rc {stop['rc']}, resume rc {resumed.rc}, "
            f"{len(losses)}/{len(reference)} steps, max |loss diff| {diff:.3g}{' identical' if same else ''}"
        )
    b._duplicates = duplicates
    command = f"{show(ref_args, b).replace('reference', 'R')}; SIGTERM; same + --resume auto"
    return verdict(
        identical == trials,
        command,
        f"{identical} of {trials} resumed runs identical to the uninterrupted run",
        identical=identical,
        trials=trials,
        trials_detail=details,
    )


@case("duplicate_steps")
def duplicate_steps(b: Bench, a) -> dict:
    if not hasattr(b, "_duplicates"):
        sigterm_resume(b, a)
    pairs = list(b._duplicates)
    # a hard kill: the resume starts from the last periodic last.pt, older than the last logged step
    stop = interrupted_run(b, "killed", 10, sig=signal.SIGKILL)
    resumed = b.run(b.pretrain("killed", RESUMABLE, "--resume", "auto"))
    records = read_metrics(b.work / "killed" / "metrics.jsonl")
    killed = (len(records), len({r["step"] for r in records}))
    return verdict(
        all(lines == steps for lines, steps in [*pairs, killed]),
        "metrics.jsonl after SIGTERM + --resume auto (the sigterm_resume runs), and after SIGKILL "
        "at step 10 + --resume auto (last.pt every 4 steps)",
        "lines / distinct steps: SIGTERM runs "
        + ", ".join(f"{x}/{y}" for x, y in pairs)
        + f"; SIGKILL run {killed[0]}/{killed[1]} (kill rc {stop['rc']}, resume rc {resumed.rc})",
    )


@case("second_sigterm")
def second_sigterm(b: Bench, a) -> dict:
    observed, handled = [], True
    for mode in ("save", "burst"):
        name = f"second_signal_{mode}"
        stop = interrupted_run(b, name, 6, second=mode)
        ckpt = b.work / name / "checkpoints" / "last.pt"
        step = b.checkpoint_step(ckpt) if ckpt.is_file() else "no last.pt"
        logged = max((r["step"] for r in read_metrics(b.work / name / "metrics.jsonl")), default=None)
        said = [line.strip() for line in stop["log"].splitlines() if "again" in line or "interrupted" in line]
        where = "inside the save" if stop["during_save"] else "while stopping"
        what = f"{stop['signals']} signals" if mode == "burst" else f"2nd signal {where}"
        observed.append(
            f"{mode}: {what}: rc {stop['rc']}, last.pt step {step}, last logged {logged}; "
            f"said: {' / '.join(said)[:160] or stop['last'][:160]}"
        )
        if mode == "save":
            # the process may die from the default handler only once the checkpoint is complete
            handled = stop["rc"] not in (None, 0) and str(step) == str(logged) and bool(said)
    return verdict(
        handled,
        "densessl pretrain quick/densecl_synthetic <tiny> train.epochs=8 ... --out R; SIGTERM; SIGTERM again "
        "when checkpoints/.last.pt.tmp-* appears (and: every 20 ms for 2 s)",
        " || ".join(observed),
    )


@case("rerun_without_resume")
def rerun_without_resume(b: Bench, a) -> dict:
    b.copy_template("rerun")
    args = b.pretrain("rerun", ["train.max_steps=6"])
    r = b.run(args)
    first = read_metrics(b.work / "rerun" / "metrics.jsonl")
    return verdict(
        r.rc not in (0, None),
        show(args, b) + "  (again, in a run directory holding a run)",
        f"rc {r.rc}: {r.last_line()} ({len(first)} metrics lines afterwards)",
    )


@case("resume_auto_empty")
def resume_auto_empty(b: Bench, a) -> dict:
    (b.work / "empty").mkdir(exist_ok=True)
    args = b.pretrain("empty", ["train.max_steps=2"], "--resume", "auto")
    r = b.run(args)
    return verdict(r.rc not in (0, None), show(args, b), f"rc {r.rc}: {r.last_line()}")


@case("stale_temp_file")
def stale_temp_file(b: Bench, a) -> dict:
    run = b.copy_template("stale")
    # the name checkpoint.py gives the file it writes before renaming it over last.pt
    tmp = run / "checkpoints" / ".last.pt.tmp-99999"
    tmp.write_bytes(os.urandom(4096))
    args = b.pretrain("stale", [], "--resume", "auto")
    r = b.run(args)
    return verdict(
        not tmp.exists(),
        show(args, b) + "  (with checkpoints/.last.pt.tmp-99999)",
        f"rc {r.rc}; temp file {'still there' if tmp.exists() else 'removed'}",
    )


@case("resume_batch_changed")
def resume_batch_changed(b: Bench, a) -> dict:
    run = b.copy_template("batch")
    args = b.pretrain("batch", ["train.batch_size=32"], "--resume", "auto")
    r = b.run(args)
    records = read_metrics(run / "metrics.jsonl")
    last = records[-1] if records else {}
    return verdict(
        r.rc not in (0, None) and r.traceback_lines() == 0,
        show(args, b) + "  (run made with batch 16, stopped at step 6 of 8)",
        f"rc {r.rc}: {r.last_line()}; last logged step {last.get('step')} epoch {last.get('epoch')}",
    )


@case("resume_width_changed")
def resume_width_changed(b: Bench, a) -> dict:
    b.copy_template("width")
    args = b.pretrain("width", ["model.width=0.5"], "--resume", "auto")
    r = b.run(args)
    return verdict(
        r.rc not in (0, None) and r.traceback_lines() == 0,
        show(args, b) + "  (run made at width 0.25)",
        f"rc {r.rc}, {len(r.err.splitlines())} stderr lines, traceback: {r.traceback_lines()} lines; "
        + r.last_line(),
    )


def damaged_resume(b: Bench, name: str, damage: Callable[[Path], None]) -> tuple[list[str], Result]:
    run = b.copy_template(name)
    damage(run / "checkpoints" / "last.pt")
    args = b.pretrain(name, [], "--resume", "auto")
    return args, b.run(args)


def resumed_from(r: Result) -> str:
    lines = [
        line for line in r.err.splitlines() if re.search(r"resum|damaged|digest|checksum|intact", line, re.I)
    ]
    return " | ".join(line.strip()[:160] for line in lines[:3]) or "(no resume line)"


def overwrite_middle(path: Path, data: bytes) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(data)


@case("checkpoint_zeroed")
def checkpoint_zeroed(b: Bench, a) -> dict:
    args, r = damaged_resume(b, "zeroed", lambda p: overwrite_middle(p, bytes(65536)))
    noticed = bool(re.search(r"damaged|digest|checksum|corrupt", r.err, re.I))
    return verdict(
        noticed,
        show(args, b) + "  (64 KiB zeroed in the middle of last.pt)",
        f"rc {r.rc}: {resumed_from(r)}",
    )


@case("checkpoint_garbled")
def checkpoint_garbled(b: Bench, a) -> dict:
    garbage = random.Random(1).randbytes(65536)
    args, r = damaged_resume(b, "garbled", lambda p: overwrite_middle(p, garbage))
    noticed = bool(re.search(r"damaged|digest|checksum|corrupt", r.err, re.I))
    return verdict(
        noticed and "lower optim.lr" not in r.err,
        show(args, b) + "  (64 KiB of random bytes in the middle of last.pt)",
        f"rc {r.rc}: {resumed_from(r)}; last line: {r.last_line()}",
    )


@case("checkpoint_unreadable_fallback")
def checkpoint_unreadable_fallback(b: Bench, a) -> dict:
    def truncate(path: Path) -> None:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)

    args, r = damaged_resume(b, "unreadable", truncate)
    fell_back = r.rc == 0 and "epoch_0001" in r.err
    return verdict(
        fell_back,
        show(args, b) + "  (last.pt truncated to a third, epoch_0001.pt intact)",
        f"rc {r.rc}: {resumed_from(r)}; last line: {r.last_line()}",
    )


@case("corrupt_subfolder")
def corrupt_subfolder(b: Bench, a) -> dict:
    folder = b.image_folder("photos220", [(48, 48)] * 200, bad=20)
    args = b.pretrain(
        "corrupt",
        [
            f"data.source=folder:{folder.name}",
            "data.corrupt=skip",
            "train.epochs=1",
            "train.checkpoint_every=100",
        ],
    )
    r = b.run(args)
    records = read_metrics(b.work / "corrupt" / "metrics.jsonl")
    skipped = max((rec.get("skipped_images", 0) for rec in records), default=None)
    return verdict(
        r.rc == 0,
        show(args, b) + "  (200 JPEGs + a sub-folder of 20 unreadable ones)",
        f"rc {r.rc}: {r.last_line()}; steps logged {len(records)}, skipped_images {skipped}",
    )


def failed_write(b: Bench, name: str, options: str) -> dict | tuple[list[str], Result, Path]:
    point = b.mount_tmpfs(name, options)
    if point is None:
        return verdict(
            None,
            f"--out on a tmpfs mounted with {options}",
            "skipped: mounting a tmpfs is not permitted here",
        )
    try:
        args = b.pretrain(f"{name}/run", [])
        r = b.run(args)
        left = sorted(str(p.relative_to(point)) for p in point.rglob("*") if p.is_file())
    finally:
        b.umount(point)
    return args, r, left


@case("readonly_out")
def readonly_out(b: Bench, a) -> dict:
    res = failed_write(b, "readonly", "ro,size=1m")
    if isinstance(res, dict):
        return res
    args, r, _ = res
    return verdict(
        r.rc not in (0, None) and r.traceback_lines() == 0,
        show(args, b) + "  (readonly/ is a read-only tmpfs)",
        f"rc {r.rc}, traceback {r.traceback_lines()} lines: {r.last_line()}",
    )


@case("disk_full")
def disk_full(b: Bench, a) -> dict:
    res = failed_write(b, "full", "size=4m")
    if isinstance(res, dict):
        return res
    args, r, left = res
    partial = [p for p in left if p.endswith(".pt") or ".tmp" in p]
    return verdict(
        r.rc not in (0, None) and r.traceback_lines() == 0 and not partial,
        show(args, b) + "  (full/ is a 4 MiB tmpfs; a checkpoint is 12 MB)",
        f"rc {r.rc}, traceback {r.traceback_lines()} lines, checkpoint files left {partial}: {r.last_line()}",
    )


RANGE_CASES = {
    "range_lr": "optim.lr=-1",
    "range_scale": "views.0.crop.scale=[0.9,0.2]",
    "range_momentum": "method.momentum=1.5",
}


def range_case(override: str):
    def run_case(b: Bench, a) -> dict:
        name = "range_" + re.sub(r"\W", "_", override.split("=")[0])
        args = b.pretrain(name, [override, "train.max_steps=2"])
        r = b.run(args)
        key = override.split("=")[0]
        return verdict(
            r.rc not in (0, None) and r.traceback_lines() == 0 and key.split(".")[-1] in r.err,
            show(args, b),
            f"rc {r.rc}: {r.last_line()}",
        )

    return run_case


for _name, _override in RANGE_CASES.items():
    CASES[_name] = range_case(_override)


def torchrun_argv(b: Bench, name: str, overrides: list[str]) -> list[str]:
    port = str(29500 + os.getpid() % 1000)
    return [
        b.python,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        "-m",
        "densessl",
        *b.pretrain(name, overrides),
    ]


@case("torchrun_sigterm")
def torchrun_sigterm(b: Bench, a) -> dict:
    name = "torchrun"
    argv = torchrun_argv(b, name, RESUMABLE)
    p, handle = b.start(argv, b.work / f"{name}.log")
    reached = wait_for_lines(b.work / name / "metrics.jsonl", 6, p, timeout=180)
    if reached:
        os.kill(p.pid, signal.SIGTERM)
    rc = b.finish(p, handle, 120)
    ckpt = b.work / name / "checkpoints" / "last.pt"
    step = b.checkpoint_step(ckpt) if ckpt.is_file() else "no last.pt"
    logged = max((r["step"] for r in read_metrics(b.work / name / "metrics.jsonl")), default=None)
    command = (
        "torchrun --nproc_per_node 2 -m "
        + show(argv[argv.index("densessl") + 1 :], b)
        + "; SIGTERM to torchrun"
    )
    if not reached:
        return verdict(None, command, f"did not reach step 6 (rc {rc})")
    return verdict(
        str(step) == str(logged),
        command,
        f"rc {rc}, last.pt step {step}, last logged step {logged}",
    )


@case("sigstop_hang")
def sigstop_hang(b: Bench, a) -> dict:
    name = "hang"
    timeout_key = "train.collective_timeout_s=15"
    argv = torchrun_argv(b, name, [*RESUMABLE, timeout_key])
    probe = b.run(b.pretrain("hang_probe", [timeout_key, "train.max_steps=1"]))
    if probe.rc != 0:
        # no such key: the hang runs without a timeout
        argv = [x for x in argv if x != timeout_key]
    p, handle = b.start(argv, b.work / f"{name}.log")
    reached = wait_for_lines(b.work / name / "metrics.jsonl", 3, p, timeout=180)
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children")
    workers = [int(x) for x in children.read_text().split()] if children.exists() else []
    command = (
        "torchrun --nproc_per_node 2 -m densessl pretrain ... train.collective_timeout_s=15; "
        "SIGSTOP to one worker"
    )
    if not reached or len(workers) < 2:
        b.finish(p, handle, 1)
        return verdict(None, command, f"could not stop a worker (reached {reached}, workers {workers})")
    stopped = workers[-1]
    os.kill(stopped, signal.SIGSTOP)
    start = time.monotonic()
    try:
        rc = p.wait(timeout=90)
    except subprocess.TimeoutExpired:
        rc = None
    waited = time.monotonic() - start
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    rc = rc if rc is not None else b.finish(p, handle, 1)
    handle.close()
    log = (b.work / f"{name}.log").read_text()
    message = next(
        (
            line
            for line in log.splitlines()
            if re.search(r"timeout|timed out|hung|stopped answering", line, re.I)
        ),
        "",
    )
    if probe.rc != 0:
        command = command.replace(" " + timeout_key, "") + " (no collective_timeout_s key)"
    return verdict(
        rc is not None and waited < 90,
        command,
        f"{'ended' if rc is not None else 'still stalled'} after {waited:.0f} s (rc {rc}); "
        + message.strip()[:200],
    )


# --- evaluation faults ------------------------------------------------------------------------------


def voc_set(b: Bench) -> Path:
    root = b.work / "voc" / "VOCdevkit" / "VOC2012"
    if not root.exists():
        b.run(["data", "synth", "--out", "voc", "--train", "16", "--val", "8"])
    return root


PROBE = [
    "--weights",
    "random",
    "--arch",
    "resnet18",
    "--small-input",
    "--width",
    "0.25",
    "--image-size",
    "32",
]
PROBE += ["--epochs", "1", "--seeds", "0", "--device", "cpu"]


@case("voc_without_labels")
def voc_without_labels(b: Bench, a) -> dict:
    source = voc_set(b)
    target = b.work / "voc_nolabels"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    labels = target / "labels.txt"
    classes = len(labels.read_text().split()) if labels.is_file() else None
    labels.unlink(missing_ok=True)
    args = ["eval", "seg-probe", *PROBE, "--data", "voc:voc_nolabels"]
    r = b.run(args)
    scored = json.loads(r.out.splitlines()[-1]).get("num_classes") if r.rc == 0 and r.out.strip() else None
    return verdict(
        r.rc not in (0, None) and "labels.txt" in r.err,
        show(args, b) + f"  (VOC layout, {classes} classes, labels.txt removed)",
        f"rc {r.rc}: {r.last_line()}" + (f"; scored over {scored} classes" if scored else ""),
    )


@case("report_without_out")
def report_without_out(b: Bench, a) -> dict:
    voc_set(b)
    probe = b.run(["eval", "seg-probe", *PROBE, "--data", "voc:voc/VOCdevkit/VOC2012", "--save", "evalrun"])
    cwd = b.work / "report_cwd"
    cwd.mkdir(exist_ok=True)
    args = ["eval", "report", str(b.work / "evalrun")]
    r = b.run(args, cwd=cwd)
    in_cwd = sorted(p.name for p in cwd.iterdir())
    in_run = sorted(p.name for p in (b.work / "evalrun").iterdir())
    return verdict(
        r.rc == 0 and not in_cwd and "report.md" in in_run,
        "densessl eval report RUN  (from another folder)",
        f"rc {r.rc} (probe rc {probe.rc}); written to the current folder: {in_cwd}; in the run: {in_run}",
    )


@case("export_small_stem")
def export_small_stem(b: Bench, a) -> dict:
    run = b.template()
    args = ["export", str(run.relative_to(b.work) / "checkpoints" / "last.pt"), "--out", "backbone.pth"]
    r = b.run(args)
    warning = next((line for line in r.err.splitlines() if re.search(r"warn", line, re.I)), "")
    return verdict(
        r.rc == 0 and bool(warning),
        show(args, b) + "  (quick recipe: small-input stem, width 0.25)",
        f"rc {r.rc}: {warning.strip()[:200] or 'no warning'}",
    )


# --- command line -----------------------------------------------------------------------------------


def cli_case(
    args: list[str], check: Callable[[Result], bool], describe: Callable[[Result], str] | None = None
):
    def run_case(b: Bench, a) -> dict:
        real = [b.recipe(x) if x.startswith("quick/") else x for x in args]
        r = b.run(real)
        observed = describe(r) if describe else f"rc {r.rc}: {r.last_line()}"
        return verdict(check(r), show(real, b), observed)

    return run_case


CASES["version"] = cli_case(["--version"], lambda r: r.rc == 0 and bool(r.text.strip()))
CASES["recipes"] = cli_case(
    ["recipes"],
    lambda r: r.rc == 0 and "densecl" in r.out,
    lambda r: f"rc {r.rc}: {len(r.out.splitlines())} lines; {r.last_line()}",
)
CASES["print_config"] = cli_case(
    ["pretrain", "quick/densecl_synthetic", "train.epochs=3", "--print-config"],
    lambda r: r.rc == 0 and "epochs: 3" in r.out,
    lambda r: (
        f"rc {r.rc}: {len(r.out.splitlines())} YAML lines" if r.rc == 0 else f"rc {r.rc}: {r.last_line()}"
    ),
)
CASES["did_you_mean"] = cli_case(
    ["pretrain", "quick/densecl_synthetic", "train.epoch=2", "--out", "typo"],
    lambda r: r.rc not in (0, None) and "did you mean" in r.err.lower(),
)
CASES["demo_help_choices"] = cli_case(
    ["demo", "--help"],
    lambda r: r.rc == 0 and "{densecl" in r.out,
    lambda r: next((line.strip() for line in r.out.splitlines() if "--method" in line), "no --method line"),
)
CASES["help_defaults"] = cli_case(
    ["data", "synth", "--help"],
    lambda r: re.search(r"--train TRAIN\s+\(default: \d+\)", r.out) is not None,
    lambda r: next(
        (line.strip() for line in r.out.splitlines() if line.strip().startswith("--train")), "no --train line"
    ),
)


@case("overrides_after_out")
def overrides_after_out(b: Bench, a) -> dict:
    args = [
        "pretrain",
        b.recipe("quick/densecl_synthetic"),
        "--out",
        "after",
        *DENSECL_TINY,
        "train.max_steps=2",
    ]
    r = b.run(args)
    return verdict(r.rc == 0, show(args, b), f"rc {r.rc}: {r.last_line()}")


@case("verbose_after_subcommand")
def verbose_after_subcommand(b: Bench, a) -> dict:
    # PNGs: PIL's PNG reader logs every chunk at debug level
    folder = b.image_folder("photos_v", [(48, 48)] * 32, ext="png")
    overrides = [f"data.source=folder:{folder.name}", "train.max_steps=2"]
    args = b.pretrain("verbose", overrides, "-v")
    r = b.run(args)
    note = ""
    if r.rc != 0:
        before = b.run(["-v", *b.pretrain("verbose_before", overrides)])
        pil = sum("PIL" in line and "DEBUG" in line for line in before.err.splitlines())
        note = f"; the form before the sub-command: rc {before.rc}, {pil} PIL debug lines"
    pil = sum("PIL" in line and "DEBUG" in line for line in r.err.splitlines())
    debug = sum("DEBUG densessl" in line for line in r.err.splitlines())
    return verdict(
        r.rc == 0 and pil == 0 and debug > 0,
        show(args, b),
        f"rc {r.rc}: {debug} densessl debug lines, {pil} PIL debug lines"
        + (f" ({r.last_line()})" if r.rc else "")
        + note,
    )


@case("run_log")
def run_log(b: Bench, a) -> dict:
    run = b.template()
    log = run / "run.log"
    return verdict(
        log.is_file(),
        "ls RUN/run.log  (after densessl pretrain ... --out RUN)",
        f"{len(log.read_text().splitlines())} lines"
        if log.is_file()
        else f"absent; run dir: {sorted(p.name for p in run.iterdir())}",
    )


@case("start_banner")
def start_banner(b: Bench, a) -> dict:
    args = b.pretrain("banner", ["train.max_steps=1"])
    r = b.run(args)
    lines = [line for line in r.err.splitlines() if line.startswith("INFO")][:6]
    wanted = ("steps", "device", "images")
    found = [w for w in wanted if any(w in line for line in lines)]
    return verdict(
        len(found) == len(wanted),
        show(args, b),
        f"{len(found)}/{len(wanted)} of images/steps/device in the first INFO lines: "
        + " | ".join(line.split(": ", 1)[-1].strip()[:70] for line in lines[:3]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default=".", help="densessl source tree to test")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=None, metavar="ID")
    parser.add_argument(
        "--trials", type=int, default=8, help="interrupted-then-resumed runs (sigterm_resume)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs densessl")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    checkout = Path(args.checkout).resolve()
    work = Path(tempfile.mkdtemp(prefix="densessl-faults-"))
    bench = Bench(checkout, work, args.python)
    where = bench.python_value("import densessl; print(densessl.__file__)")
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    print(f"checkout {checkout} ({commit.stdout.strip()}), densessl imported from {where}")
    print(f"<tiny> = {' '.join(DENSECL_TINY)} (method.queue_size for DenseCL only)")
    if not where.startswith(str(checkout)):
        print("densessl is not imported from the checkout; stopping", file=sys.stderr)
        return 2

    started = time.perf_counter()
    results = {}
    try:
        for name in args.only or list(CASES):
            t0 = time.perf_counter()
            try:
                res = CASES[name](bench, args)
            except Exception as exc:  # a case that cannot run is reported, the others still run
                res = verdict(None, name, f"case failed to run: {type(exc).__name__}: {exc}")
            res["seconds"] = round(time.perf_counter() - t0, 1)
            results[name] = res
            mark = {True: "handled", False: "NOT handled", None: "skipped"}[res["handled"]]
            print(f"[{name}] {mark}  ({res['seconds']} s)\n  $ {res['command']}\n  -> {res['observed']}")
            for line in res.get("trials_detail", []):
                print(f"     {line}")
            sys.stdout.flush()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    summary = {
        "checkout": str(checkout),
        "commit": commit.stdout.strip(),
        "seconds": round(total, 1),
        "handled": sum(r["handled"] is True for r in results.values()),
        "not_handled": [k for k, r in results.items() if r["handled"] is False],
        "skipped": [k for k, r in results.items() if r["handled"] is None],
        "cases": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
