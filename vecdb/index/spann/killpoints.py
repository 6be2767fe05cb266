"""Named kill points for crash tests: `VECDB_KILL_AT="split:3"` SIGKILLs the process at the
third time the "split" point is reached. Several points may be given comma-separated. Costs one
dict lookup when the variable is unset; owns nothing else.

Points: SPANN split, merge, defrag, compaction, checkpoint; engine build (a first build or a
rebuild written, not yet checkpointed), drain (buffer applied, not yet checkpointed),
rebuild_bridged, delete_batch, snapshot, restore, tenant_drop_granted, tenant_drop_slice,
doc_checkpoint (document index checkpointed, op log not yet truncated); multi-vector codebook
training mv_train_sample (tokens gathered and pooled), mv_train_codebook (k-means done),
mv_train_encoded (new raw and tier files written), mv_train_swapped (new view published, not
yet checkpointed), and its checkpoint mv_checkpoint_state (state file written, manifest not
switched), mv_checkpoint_manifest (manifest switched, old files not yet deleted).
"""

from __future__ import annotations

import os
import signal

ENV = "VECDB_KILL_AT"
_seen: dict[str, int] = {}


def _targets() -> dict[str, int]:
    out: dict[str, int] = {}
    for item in os.environ.get(ENV, "").split(","):
        name, _, nth = item.strip().partition(":")
        if name:
            out[name] = int(nth or 1)
    return out


def kill_point(name: str) -> None:
    """Count one occurrence of `name`; SIGKILL this process at the configured occurrence."""
    if ENV not in os.environ:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _targets().get(name) == _seen[name]:
        os.kill(os.getpid(), signal.SIGKILL)
