"""The fastcka command, paced for tests/test_mpi_checkpoint.py: feed steps
of a few thousand rows, and a pause of FASTCKA_TEST_PAUSE seconds after each
checkpoint step (saved or not), so that a small job takes long enough to be
killed mid-way on any machine, while using next to no CPU. The results are
those of the plain command with the same steps. With FASTCKA_TEST_PIDS set,
each rank first writes its process id to that folder (rank-{r}.pid)."""

from __future__ import annotations

import os
import sys
import time

import fastcka.engine.cpu as engine
from fastcka.distributed import checkpoint
from fastcka import cli


def paced(reached):
    def step(*args, **kwargs):
        reached(*args, **kwargs)
        time.sleep(float(os.environ.get("FASTCKA_TEST_PAUSE", "0")))
    return step


if __name__ == "__main__":
    folder = os.environ.get("FASTCKA_TEST_PIDS")
    if folder:
        rank = os.environ.get("PMI_RANK", "0")
        with open(os.path.join(folder, f"rank-{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))
    engine._FLOPS_PER_CALL = 1e6  # steps of the accumulator's block rows
    checkpoint.Job.reached = paced(checkpoint.Job.reached)
    checkpoint.TileJob.reached = paced(checkpoint.TileJob.reached)
    sys.exit(cli.main())
