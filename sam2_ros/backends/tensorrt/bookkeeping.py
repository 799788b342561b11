"""TensorRT-free bookkeeping of the TensorRT backend: execution contexts, CUDA graphs, pinned owners.

These classes hold no CUDA or TensorRT object; they decide, and the backend acts on the decision
(:mod:`sam2_ros.backends.tensorrt.backend`). That keeps the policies testable on any machine.

* :class:`ShapeContexts`: one execution context per input-shape set of an engine (LRU-bounded).
  A context keeps the shapes it was given, so a CUDA graph captured with it stays valid while
  another context of the same engine runs other shapes (a click with one object between
  tracking frames with ``n``). A context *slot* is reused for a new shape set when the LRU one is
  evicted; its *generation* changes then, and every graph captured with it is dead.
* :class:`GraphBook`: which call sequences (keys) are eager, seen once, or captured, and which
  graphs depend on which context generations. A key whose graph was invalidated
  ``max_invalidations`` times runs eagerly from then on (a thrash guard: more shape sets alternate
  than there are contexts).
* :class:`PinnedOwners`: host arrays page-locked in place; an owner whose array has no referent
  but this registry (a dead bank) is released at the next registration.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

#: A context a graph depends on: (engine name, slot, generation of the slot).
Dep = tuple[str, int, int]


@dataclass(frozen=True)
class ContextChoice:
    """The answer of :meth:`ShapeContexts.lookup`."""

    slot: int
    generation: int
    #: True when the slot was (re)assigned to these shapes now: the caller sets the input shapes
    #: on the context, and the first enqueue must be eager (TensorRT's shape set-up).
    assigned: bool
    #: The shape set that lost the slot (None: a free slot was used or the shapes had one).
    evicted: Hashable | None = None


class ShapeContexts:
    """Which execution context (slot ``0..capacity-1``) of one engine serves which shape set."""

    def __init__(self, engine: str, capacity: int = 8):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.engine = engine
        self.capacity = capacity
        self._slot_of: OrderedDict[Hashable, int] = OrderedDict()  # LRU: oldest first
        self._generation: list[int] = []  # per slot, bumped at every (re)assignment

    @property
    def slots(self) -> int:
        """Slots (contexts) in use so far."""
        return len(self._generation)

    def lookup(self, shapes: Hashable) -> ContextChoice:
        """The slot for ``shapes``: its own, a new one, or the least recently used one."""
        if shapes in self._slot_of:
            self._slot_of.move_to_end(shapes)
            slot = self._slot_of[shapes]
            return ContextChoice(slot, self._generation[slot], assigned=False)
        evicted = None
        if len(self._generation) < self.capacity:
            slot = len(self._generation)
            self._generation.append(0)
        else:
            evicted, slot = self._slot_of.popitem(last=False)
            self._generation[slot] += 1
        self._slot_of[shapes] = slot
        return ContextChoice(slot, self._generation[slot], assigned=True, evicted=evicted)

    def dep(self, slot: int) -> Dep:
        return (self.engine, slot, self._generation[slot])

    def shapes_of(self, slot: int) -> Hashable | None:
        return next((s for s, i in self._slot_of.items() if i == slot), None)


@dataclass
class _Graph:
    handle: Any
    deps: tuple[Dep, ...]


class GraphBook:
    """Decides, per call-sequence key, whether to run eagerly, capture a CUDA graph or replay one.

    ``deps`` of a key are the context generations it runs on (:meth:`ShapeContexts.dep`). A key
    is captured the second time it is seen with the same deps (the first run, eager, is also
    TensorRT's shape set-up on those contexts); a graph is replayed while its deps are current.
    Graph handles are opaque here; :meth:`decide`, :meth:`captured` and :meth:`drop` return the
    handles the caller must destroy.
    """

    EAGER, CAPTURE, REPLAY = "eager", "capture", "replay"

    def __init__(self, max_graphs: int = 32, max_invalidations: int = 3):
        self.max_graphs = max_graphs
        self.max_invalidations = max_invalidations
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._seen: OrderedDict[Hashable, tuple[Dep, ...]] = OrderedDict()
        self._invalidations: dict[Hashable, int] = {}
        self.eager_keys: set[Hashable] = set()  # uncapturable or thrashing keys

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._graphs

    def handle(self, key: Hashable) -> Any:
        return self._graphs[key].handle

    def decide(self, key: Hashable, deps: tuple[Dep, ...]) -> tuple[str, list]:
        """``(action, handles to destroy)`` for a run of ``key`` on contexts ``deps``."""
        if key in self.eager_keys:
            return self.EAGER, []
        dead = []
        g = self._graphs.get(key)
        if g is not None:
            if g.deps == deps:
                self._graphs.move_to_end(key)
                return self.REPLAY, []
            dead.append(self._graphs.pop(key).handle)
            if self._invalidate(key):
                return self.EAGER, dead
        if self._seen.get(key) == deps:
            return self.CAPTURE, dead
        self._seen[key] = deps
        self._seen.move_to_end(key)
        while len(self._seen) > 4 * self.max_graphs:
            self._seen.popitem(last=False)
        return self.EAGER, dead

    def _invalidate(self, key: Hashable) -> bool:
        """Count one invalidation of ``key``; True when it is now eager for good."""
        self._invalidations[key] = self._invalidations.get(key, 0) + 1
        if self._invalidations[key] >= self.max_invalidations:
            self.eager_keys.add(key)
            self._seen.pop(key, None)
            return True
        return False

    def captured(self, key: Hashable, deps: tuple[Dep, ...], handle: Any) -> list:
        """Record a captured graph; returns the handles evicted by the LRU bound."""
        self._seen.pop(key, None)
        self._graphs[key] = _Graph(handle, deps)
        dead = []
        while len(self._graphs) > self.max_graphs:
            dead.append(self._graphs.popitem(last=False)[1].handle)
        return dead

    def failed(self, key: Hashable) -> None:
        """The capture of ``key`` failed: it runs eagerly from now on."""
        self.eager_keys.add(key)
        self._seen.pop(key, None)

    def drop_dependents(self, dep: Dep) -> list:
        """Forget the graphs captured with context ``dep`` (its slot was given other shapes)."""
        keys = [k for k, g in self._graphs.items() if dep in g.deps]
        for k in keys:
            self._invalidate(k)
        return [self._graphs.pop(k).handle for k in keys]

    def drop(self) -> list:
        """Forget every graph (their host sources are gone); returns their handles."""
        handles = [g.handle for g in self._graphs.values()]
        self._graphs.clear()
        self._seen.clear()
        return handles


class PinnedOwners:
    """Host arrays page-locked in place (``cudaHostRegister``), keyed by address, LRU-bounded.

    The registry holds the owner array itself, so its memory cannot be freed (and its address
    reused) while registered. An owner nobody else refers to any more (the tracker dropped that
    memory bank) is released at the next :meth:`register`, so dead banks do not stay pinned.
    ``pin(ptr, nbytes) -> bool`` and ``unpin(ptr)`` do the CUDA work.
    """

    def __init__(self, pin: Callable[[int, int], bool], unpin: Callable[[int], None], capacity: int = 8):
        self._pin, self._unpin = pin, unpin
        self.capacity = capacity
        self._owners: OrderedDict[int, Any] = OrderedDict()
        self._failed: set[int] = set()

    def __contains__(self, ptr: int) -> bool:
        return ptr in self._owners

    def __len__(self) -> int:
        return len(self._owners)

    def keys(self) -> list[int]:
        return list(self._owners)

    def register(self, owner: Any) -> bool:
        """Make sure ``owner`` (a C-contiguous numpy array) is pinned; False if it cannot be."""
        ptr = int(owner.ctypes.data)
        if ptr in self._owners:
            self._owners.move_to_end(ptr)
            return True
        if ptr in self._failed:
            return False
        for dead in self.unreferenced():
            self.release(dead)
        if not self._pin(ptr, int(owner.nbytes)):
            self._failed.add(ptr)
            return False
        self._owners[ptr] = owner
        while len(self._owners) > self.capacity:
            self.release(next(iter(self._owners)))
        return True

    def unreferenced(self) -> list[int]:
        """Addresses of owners referred to by this registry only."""
        # getrefcount sees the registry's dict entry and its own argument
        return [ptr for ptr in list(self._owners) if sys.getrefcount(self._owners[ptr]) <= 2]

    def release(self, ptr: int) -> None:
        self._unpin(ptr)
        self._owners.pop(ptr, None)

    def clear(self) -> list[int]:
        """Forget every owner without unpinning; returns their addresses (the caller unpins at close)."""
        keys = list(self._owners)
        self._owners.clear()
        return keys
