"""What a jaxlm command does to the process it runs in, which it owns (the library does none
of this: `import jaxlm` and its functions leave their host process as they found it)."""

from __future__ import annotations


def quiet_checkpoints() -> None:
    """Orbax's noise off the terminal for the rest of the process (jaxlm.checkpoint.reasons),
    called by the commands that read or write checkpoints once their arguments are checked
    (importing Orbax takes seconds)."""
    from jaxlm.checkpoint.reasons import quiet_orbax_process

    quiet_orbax_process()
