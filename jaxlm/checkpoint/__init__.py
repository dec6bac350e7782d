"""Orbax checkpoints (this package is the only code that touches Orbax).

A checkpoint is a step directory `checkpoints/<step>/`, written under a temporary name and
renamed when whole (Orbax's atomic commit: a process killed at any moment leaves only whole
checkpoints), holding

  state    params, optimizer state, step, RNG: restored onto the abstract sharded state, so any
           mesh the parameters fit works, not only the one that saved them
  data     the Grain train-iterator state (JSON); with per-host input on several hosts, every
           input shard's, gathered (jaxlm.data.hosts.HostPosition)
  meta     a fingerprint of every state leaf and of the iterator state, the skipped-step
           count (JSON)
  config   the resolved run config (JSON)
  metrics  the eval loss, for checkpoints made at an eval step (ranks the best checkpoint)

Saves are asynchronous: `save` returns once the state is copied off the devices (the train
step may then donate its buffers) and Orbax writes in the background. Retention: the newest
`keep` checkpoints plus the one with the lowest eval loss.

Restoring walks from the newest checkpoint down (`fallback`: the one walk, shared by training
and every reader of params or config). Each is checked against its fingerprint
(Orbax's format has no checksum over array data: garbage bytes in a data file restore as wrong
numbers without an error). A damaged checkpoint is reported with its path and, once an older
one restored, moved aside to `checkpoints.corrupt/` (never deleted, never overwritten); when
none restores, a JaxlmError says so and nothing is changed.

The package is the only place that touches Orbax: `manager` (Checkpointer), `params`
(params-only reads and writes, the saved config), `fallback`, `fingerprint`, `reasons`
(one-line errors; Orbax's noise).
"""

from jaxlm.checkpoint.fingerprint import fingerprint
from jaxlm.checkpoint.manager import CORRUPT_DIR, Checkpointer, Restored, grain_state_from_json
from jaxlm.checkpoint.params import (checkpoint_config, checkpoint_steps, load_params,
                                     restore_params, save_params)

__all__ = ["Checkpointer", "Restored", "CORRUPT_DIR", "fingerprint", "grain_state_from_json",
           "checkpoint_steps", "checkpoint_config", "restore_params", "save_params",
           "load_params"]
