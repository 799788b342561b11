"""Pack each object's valid memory slots so memory attention runs without masks.

The memory bank hands memory attention a fixed slot layout with a validity mask per slot
(the recent ring fills up over the first frames, objects have different numbers of
conditioning frames). Masked attention costs a masking pass over every score and keeps
ONNX Runtime and PyTorch off their fused attention kernels. Attention does not depend on the
order of its keys, so attending over only the valid slots, packed side by side, gives the same
result: rows (objects) with the same number of valid memory and pointer slots form a group that
runs as one unmasked batch. In steady state every handed-out slot is valid and the bank's
buffers are used as they are (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DenseGroup:
    """Rows of one memory-attention call whose valid slots are packed into one unmasked batch."""

    rows: np.ndarray  # [g] int64: rows of the call
    mem_slots: np.ndarray  # [g, m] int64: each row's valid memory slots, in slot order
    ptr_slots: np.ndarray  # [g, p] int64: each row's valid pointer slots, in slot order
    whole: bool  # every row of the call, every slot valid: the inputs need no packing


def dense_groups(mem_valid: np.ndarray, ptr_valid: np.ndarray) -> list[DenseGroup] | None:
    """Group the rows of ``mem_valid [n, M]`` / ``ptr_valid [n, P]`` by their valid-slot counts.

    Returns None when a row has no valid memory slot (the masked graph handles that case).
    """
    mem_valid = np.asarray(mem_valid, bool)
    ptr_valid = np.asarray(ptr_valid, bool)
    n = mem_valid.shape[0]
    m_count, p_count = mem_valid.sum(axis=1), ptr_valid.sum(axis=1)
    if n == 0 or (m_count == 0).any():
        return None
    if mem_valid.all() and ptr_valid.all():
        rows = np.arange(n)
        return [DenseGroup(rows, np.broadcast_to(np.arange(mem_valid.shape[1]), mem_valid.shape),
                           np.broadcast_to(np.arange(ptr_valid.shape[1]), ptr_valid.shape), whole=True)]
    groups = []
    for m, p in sorted(set(zip(m_count.tolist(), p_count.tolist()))):
        rows = np.flatnonzero((m_count == m) & (p_count == p))
        mem_slots = np.nonzero(mem_valid[rows])[1].reshape(rows.size, m)
        ptr_slots = np.nonzero(ptr_valid[rows])[1].reshape(rows.size, p)
        groups.append(DenseGroup(rows, mem_slots, ptr_slots, whole=False))
    return groups


def row_order(groups: list[DenseGroup]) -> np.ndarray | None:
    """Index that puts the groups' outputs (concatenated in group order) back in row order;
    None when they already are."""
    order = np.concatenate([g.rows for g in groups])
    if np.array_equal(order, np.arange(order.size)):
        return None
    return np.argsort(order, kind="stable")
