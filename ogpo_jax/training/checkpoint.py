"""Orbax checkpoints of whole training states (any pytree: LoopState, actor params), with an
integrity manifest and a fallback past damaged ones.

A save writes into a temporary directory and renames it when complete, so the latest checkpoint
is never half-written: a process killed during a save leaves the previous checkpoints intact and
the next run resumes from the newest complete one. Each complete checkpoint then gets
`MANIFEST` (every file's size and SHA-256): orbax reads a flipped byte in an array file without
complaint (tried: a toy run resumed from one and finished), so only the manifest tells. A save
that fails (a full disk) raises `CheckpointWriteError` and leaves the older checkpoints intact.

`restore_newest_good` is the resume path: it verifies each checkpoint newest first, moves a
damaged one aside into `<directory>.damaged/` (never deleted) and restores the newest good one.
Sharded (multi-device, multi-host) states are written cooperatively, each process writing its
own shards.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def _empty(x) -> bool:
    return math.prod(x.shape) == 0


def _encode(tree):
    """orbax refuses zero-size arrays (an MJX Data has several, e.g. `act` of a model without
    activations): store a 1-element placeholder; `restore` puts the empty array back."""
    return jax.tree_util.tree_map(lambda x: np.zeros((1,), x.dtype) if _empty(x) else x, tree)


def _encode_abstract(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((1,), x.dtype) if _empty(x) else x, tree)


def _zeros_like(x):
    """An empty leaf placed like the template's: a restored state whose empty arrays were left
    uncommitted made the next `jit` call compile its program a second time (4.5 min for Can's
    interval on a 2-core CPU)."""
    if isinstance(x, np.ndarray):
        return np.zeros(x.shape, x.dtype)
    sharding = getattr(x, "sharding", None)
    z = jnp.zeros(x.shape, x.dtype)
    return jax.device_put(z, sharding) if sharding is not None else z


def _layouts() -> dict:
    """State types with an older checkpoint layout that still loads:
    type -> (to_older(node) -> pytree, from_older(restored pytree, node) -> node)."""
    from ogpo_jax.algorithms import ogpo
    return {ogpo.OGPOState: (ogpo.older_layout, ogpo.from_older_layout)}


MANIFEST = "ogpo_manifest.json"
_OPEN: "weakref.WeakSet[Checkpointer]" = weakref.WeakSet()


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read back (missing, truncated or altered files)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); older checkpoints are intact."""


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(step_dir: str) -> dict:
    """Record the size and SHA-256 of every file under `step_dir` (written atomically)."""
    files = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel != MANIFEST and not rel.endswith(".tmp"):
                files[rel] = [os.path.getsize(path), file_digest(path)]
    manifest = {"version": 1, "files": dict(sorted(files.items()))}
    tmp = os.path.join(step_dir, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=0)
    os.replace(tmp, os.path.join(step_dir, MANIFEST))
    return manifest


def verify_manifest(step_dir: str) -> str | None:
    """None if every file `MANIFEST` lists is present with its size and digest (or if there is no
    manifest: a checkpoint from before manifests, or one whose writer died after orbax committed it
    and before the manifest was written); otherwise what is wrong."""
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.isdir(step_dir):
        return f"{step_dir} is missing"
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its manifest cannot be read ({type(e).__name__}: {e})"
    for rel, (size, digest) in files.items():
        p = os.path.join(step_dir, rel)
        if not os.path.exists(p):
            return f"{rel} is missing"
        if os.path.getsize(p) != size:
            return f"{rel} has {os.path.getsize(p)} bytes, the manifest says {size}"
        if file_digest(p) != digest:
            return f"{rel} does not match its SHA-256 in the manifest"
    return None


def move_aside(path: str, reason: str, into: str) -> str:
    """Move a damaged file or directory into the folder `into` (never delete it), with a note of
    why; returns where it went."""
    os.makedirs(into, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = os.path.join(into, f"{os.path.basename(path.rstrip(os.sep))}.{stamp}")
    n = 0
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(into, f"{os.path.basename(path.rstrip(os.sep))}.{stamp}.{n}")
    shutil.move(path, dest)
    with open(dest + ".why.txt", "w", encoding="utf-8") as f:
        f.write(reason + "\n")
    return dest


# Loggers through which orbax's failed background reads and writes report again.
ECHO_LOGGERS = ("asyncio", "absl", "concurrent.futures")


def debug_requested() -> bool:
    """OGPO_DEBUG is set (to anything but '', '0', 'false'): show every traceback, echoes included."""
    return os.environ.get("OGPO_DEBUG", "") not in ("", "0", "false", "False")


def _is_closed_loop_echo(unraisable) -> bool:
    """The one echo that outlives a failed read or write: TensorStore completes the other writes
    of the failed operation after orbax's event loop has closed, and reports each completion's
    `RuntimeError('Event loop is closed')` from its own thread through sys.unraisablehook, with
    no object and a traceback that starts in asyncio's `call_soon_threadsafe` (no Python caller)."""
    exc, tb = unraisable.exc_value, unraisable.exc_traceback
    if type(exc) is not RuntimeError or str(exc) != "Event loop is closed" or tb is None:
        return False
    code = tb.tb_frame.f_code
    return (unraisable.object is None and code.co_name == "call_soon_threadsafe"
            and code.co_filename.endswith(os.path.join("asyncio", "base_events.py")))


def _filter_closed_loop_echoes() -> None:
    """Make sys.unraisablehook drop `_is_closed_loop_echo` (and only it) for the rest of the
    process: these arrive whenever TensorStore's writes finish, even after the program has
    reported the failure. Idempotent; not installed under OGPO_DEBUG."""
    hook = sys.unraisablehook
    if debug_requested() or getattr(hook, "_ogpo_drops_closed_loop_echoes", False):
        return

    def unraisablehook(unraisable):
        if not _is_closed_loop_echo(unraisable):
            hook(unraisable)

    unraisablehook._ogpo_drops_closed_loop_echoes = True
    sys.unraisablehook = unraisablehook


@contextlib.contextmanager
def _quiet_orbax_echoes():
    """When one of orbax's reads or writes fails (a damaged file, a full disk), its other
    in-flight ones fail too and print their own tracebacks from callbacks, threads, loggers and
    garbage-collected coroutines (thousands of lines for one damaged file). The first error is
    what `save` / `restore` raise; these echoes are dropped (shown with OGPO_DEBUG=1)."""
    if debug_requested():
        yield
        return
    hooks = sys.excepthook, sys.unraisablehook, threading.excepthook
    loggers = [logging.getLogger(n) for n in ECHO_LOGGERS]
    levels = [lg.level for lg in loggers]
    sys.excepthook = lambda *a: None
    sys.unraisablehook = lambda *a: None
    threading.excepthook = lambda *a: None
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        gc.collect()          # the failed coroutines and tasks report when they are collected
        sys.excepthook, sys.unraisablehook, threading.excepthook = hooks
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if failed:
            _filter_closed_loop_echoes()


def _short(e: BaseException) -> str:
    """An exception's message without the TensorStore spec orbax appends (hundreds of lines),
    led by the operating system's reason when TensorStore reports one (e.g. 'No space left on
    device')."""
    text = str(e).split("See full TensorStore details")[0].strip()
    code = re.search(r"os_error_code='?(\d+)", text)
    reason = f"{os.strerror(int(code.group(1)))} (errno {code.group(1)}); " if code else ""
    return f"{reason}{type(e).__name__}: {text[:300]}"


def close_all() -> None:
    """Close every open Checkpointer (orbax's background threads), e.g. before exiting on an error."""
    for c in list(_OPEN):
        c.close()


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints under `directory`; steps are env steps."""

    def __init__(self, directory: str, max_to_keep: int = 2, process_local: bool = False):
        """`process_local`: in a multi-host run, this process alone reads/writes the checkpoint (e.g.
        the BC actor, which process 0 trains while the others wait); by default every process
        takes part (sharded training states)."""
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        # orbax refuses process-local jax.Arrays in a multi-process job: such checkpoints hold numpy
        self.as_numpy = process_local and jax.process_count() > 1
        if self.as_numpy:
            pid = jax.process_index()
            os.makedirs(self.directory, exist_ok=True)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=pid, active_processes={pid}, barrier_sync_key_prefix=f"process{pid}"))
        self.options = options
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.closed = False
        _OPEN.add(self)

    @property
    def damaged_directory(self) -> str:
        """Where damaged checkpoints are moved: beside the directory, outside orbax's view."""
        return self.directory.rstrip(os.sep) + ".damaged"

    def _writer(self) -> bool:
        return self.as_numpy or jax.process_index() == 0

    def latest_step(self):
        return self.manager.latest_step()

    def all_steps(self) -> list:
        return sorted(int(s) for s in self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    def save(self, step: int, tree) -> None:
        """Write `tree` as checkpoint `step` and its manifest; `CheckpointWriteError` if that fails
        (the checkpoints written before stay intact)."""
        tree = _encode(tree)
        if self.as_numpy:
            tree = jax.tree_util.tree_map(np.asarray, tree)
        before = self.all_steps()
        try:
            with _quiet_orbax_echoes():
                self.manager.save(int(step), args=ocp.args.StandardSave(tree))
                self.manager.wait_until_finished()
            if self._writer():
                write_manifest(self.step_dir(step))
        except Exception as e:
            raise CheckpointWriteError(
                f"writing checkpoint {self.step_dir(step)} failed ({_short(e)}); "
                + (f"the checkpoints before it ({', '.join(map(str, before))} env steps) are intact. "
                   if before else "") + "Free disk space (or fix the directory) and rerun the same command "
                "to resume.") from e

    def verify(self, step: int) -> str | None:
        """None if checkpoint `step` matches its manifest, otherwise what is wrong."""
        return verify_manifest(self.step_dir(step))

    def move_aside(self, step: int, reason: str) -> str:
        """Move checkpoint `step` into `damaged_directory` (with `reason`) and forget it."""
        dest = move_aside(self.step_dir(step), reason, self.damaged_directory)
        self.manager.close()
        self.manager = ocp.CheckpointManager(self.directory, options=self.options)
        return dest

    def restore_newest_good(self, like, log=print):
        """Restore the newest checkpoint that passes its manifest and reads back, moving each
        damaged newer one aside with a warning -> (tree, step), or (None, None) when none is left.
        A checkpoint of another state layout (another config) is not damage: it raises ValueError."""
        for step in reversed(self.all_steps()):
            problem = self.verify(step)
            if problem is None:
                try:
                    return self._restore_verified(like, step), step
                except CheckpointError as e:
                    problem = str(e)
            older = [s for s in self.all_steps() if s < step]
            if jax.process_count() > 1:
                raise CheckpointError(
                    f"checkpoint {self.step_dir(step)} is damaged ({problem}); move it away by hand to resume from "
                    f"an older one ({older}) (automatic fallback runs on one process only)")
            dest = self.move_aside(step, problem)
            log(f"[checkpoint] warning: checkpoint {step} is damaged ({problem[:300]}); moved to {dest}; "
                + (f"trying the one at {older[-1]} env steps" if older else "no older checkpoint: starting over"))
        return None, None

    def restore(self, like, step=None):
        """Restore into the structure (and dtypes/shapes) of `like`.

        A checkpoint written in an older layout of a state type that `_layouts` knows (e.g. an
        `OGPOState` from before its optional fields existed) is read in that layout and converted.
        `CheckpointError` if it does not match its manifest or cannot be read.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        problem = self.verify(step)
        if problem is not None:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} cannot be read (it is damaged: {problem}); "
                                  f"steps here: {self.all_steps()}")
        return self._restore_verified(like, step)

    def _restore_verified(self, like, step):
        try:
            out = self._restore_as(like, step)
        except ValueError as e:
            out = self._restore_older_layout(like, step)
            if out is None:
                raise ValueError(
                    f"checkpoint {self.directory} step {step} has a different state layout than this version "
                    "of ogpo-jax expects (e.g. it was written with other algo/train settings, or on another "
                    f"number of devices); restore it with the version and config that wrote it. Details: {e}"
                ) from None
        return jax.tree_util.tree_map(lambda o, x: _zeros_like(x) if _empty(x) else o, out, like)

    def _restore_as(self, like, step):
        """Raw restore into `like`'s layout; ValueError if the stored layout differs."""
        if self.as_numpy:
            abstract = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), _encode_abstract(like))
        else:
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _encode_abstract(like))
        try:
            with _quiet_orbax_echoes():
                return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError as e:
            if "do not match" not in str(e) and "not compatible with the stored shape" not in str(e):
                raise CheckpointError(self._unreadable(step, e)) from None
            raise
        except Exception as e:       # missing / truncated / corrupted files
            raise CheckpointError(self._unreadable(step, e)) from None

    def _restore_older_layout(self, like, step):
        """Restore with every node of a known state type in its older layout, then convert back;
        None if `like` holds no such node or the checkpoint is not in that layout either."""
        layouts = _layouts()
        is_node = lambda x: type(x) in layouts
        if not any(is_node(x) for x in jax.tree_util.tree_leaves(like, is_leaf=is_node)):
            return None
        older = jax.tree_util.tree_map(lambda x: layouts[type(x)][0](x) if is_node(x) else x, like, is_leaf=is_node)
        try:
            out = self._restore_as(older, step)
        except ValueError:
            return None
        return jax.tree_util.tree_map(lambda x, o: layouts[type(x)][1](o, x) if is_node(x) else o, like, out,
                                      is_leaf=is_node)

    def _unreadable(self, step, e) -> str:
        return (f"checkpoint {self.step_dir(step)} cannot be read ({_short(e)}): it is damaged; steps here: "
                f"{self.all_steps()}")

    def close(self):
        if not self.closed:
            self.closed = True
            self.manager.close()
            _OPEN.discard(self)
