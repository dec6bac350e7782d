"""Two training processes on one run directory: the second is refused with one line while the
first lives (nothing of the run is touched), and a holder killed with SIGKILL leaves no lock
behind that would block the resume."""

from __future__ import annotations

import signal
import subprocess
import sys

from helpers import REPO_ROOT, TINY

HOLD = ("import pathlib, sys, time\n"
        "from jaxlm import rundir\n"
        "p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True)\n"
        "with rundir.lock(p):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(300)\n")


def test_second_writer_is_refused_and_a_killed_holder_does_not_block(tmp_path, capsys):
    from jaxlm.cli import main

    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["--workdir", str(workdir), "--quiet", *TINY, "train.steps=2"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another training process" in err[0]
        assert f"pid {holder.pid} on " in err[0], err[0]
        assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert main(args) == 0  # the kernel released the killed holder's lock
    assert (workdir / "checkpoints" / "2").is_dir()
    assert (workdir / ".lock").read_text() == ""  # released and emptied at the end
