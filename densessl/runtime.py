"""CPU thread defaults for single-process runs.

PyTorch starts one intra-op thread per core it sees. When DataLoader workers (or another job)
need those cores too, the spinning OpenMP threads fight over them. On 2 shared cores, with other
jobs running, the quick DenseCL recipe delivered 23-33 images/s end to end with 2 threads in the
main process and 104-110 with one, whatever the number of workers (0, 1 or 2; README). Each
DataLoader worker runs one thread (PyTorch sets it in every worker). So a plain ``densessl``
process gets ``cores - data workers`` threads, at most half the cores (room for the other jobs
of a shared machine) and at most :data:`MAX_THREADS`, at least 1; ``train.cpu_threads`` chooses
a count instead, and ``OMP_NUM_THREADS`` (or torchrun, which sets one thread per process when it
starts several) wins over both.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: intra-op parallelism of the convolutions here stops paying well before this many threads, and
#: a large shared host would otherwise be asked for all of its cores
MAX_THREADS = 16
#: environment variables through which a user (or a launcher) has already chosen a thread count
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_cpu_threads(cores: int, workers: int, cap: int = MAX_THREADS) -> int:
    """Intra-op threads for one process on ``cores`` cores that also feeds ``workers`` data
    loader processes (one thread each): the cores the workers leave, at most half the cores
    (threads that find their core taken spin instead of working), at most ``cap``, at least one."""
    return max(1, min(cap, cores - max(0, workers), cores // 2))


def launched_world_size(environ: dict[str, str] | None = None) -> int:
    """The number of processes torchrun launched (1 for a plain run)."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1") or 1)


def threads_chosen_by_user(environ: dict[str, str] | None = None) -> bool:
    """Whether a thread count was set from outside (``OMP_NUM_THREADS``, a multi-process torchrun)."""
    env = os.environ if environ is None else environ
    if any(env.get(name, "").strip() for name in THREAD_VARIABLES):
        return True
    return launched_world_size(env) > 1


def configure_cpu_threads(workers: int, requested: int = 0) -> int:
    """Set torch's intra-op thread count for a single-process run with ``workers`` data workers
    and return the count in use: ``requested`` when positive (``train.cpu_threads``), otherwise
    :func:`choose_cpu_threads`; a count chosen by the user's environment or torchrun wins over both."""
    import torch

    if threads_chosen_by_user():
        threads = torch.get_num_threads()
        log.debug("using %d CPU threads (set from the environment)", threads)
        return threads
    if requested > 0:
        torch.set_num_threads(requested)
        log.debug("using %d CPU threads (train.cpu_threads)", requested)
        return requested
    cores = available_cores()
    threads = choose_cpu_threads(cores, workers)
    # said once: the command line and then the trainer both apply the same choice
    level = logging.INFO if threads != torch.get_num_threads() else logging.DEBUG
    torch.set_num_threads(threads)
    log.log(
        level,
        "using %d CPU thread%s: %d core%s available, %d data worker%s (set train.cpu_threads or "
        "OMP_NUM_THREADS to choose)",
        threads,
        "" if threads == 1 else "s",
        cores,
        "" if cores == 1 else "s",
        workers,
        "" if workers == 1 else "s",
    )
    return threads
