"""How the experiment scripts end: an expected failure prints one line and a non-zero exit code,
a bug prints its traceback.

Expected failures are the ones a user can act on: a damaged file (`CheckpointError`,
`DatasetError`), a full disk (`CheckpointWriteError`, `ENOSPC`), a bad config or input (a
`ValueError` / `FileNotFoundError` raised by this project's own checks), a host worker that died
(`WorkerError`), a non-finite stop. Anything else, or anything with `--debug` / `OGPO_DEBUG=1`,
shows the whole traceback. Either way every open checkpoint manager is closed first, so orbax's
background threads do not add their own errors at exit.

    app.run(cli.main(main))

Exit codes: 0 done, 1 an expected failure, 2 stopped by a non-finite value (the last good state
is checkpointed), 130 interrupted (SIGINT / SIGTERM, checkpointed), anything else a bug.
"""
from __future__ import annotations

import errno
import functools
import os
import sys

from absl import flags

_DEBUG = flags.DEFINE_bool("debug", False, "Show the whole traceback of an expected failure too "
                           "(or set OGPO_DEBUG=1).")

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# code whose deliberate checks raise the plain ValueError / FileNotFoundError of an expected failure
_OWN_CODE = tuple(os.path.join(_ROOT, d) + os.sep for d in ("ogpo_jax", "configs", "experiments"))
_CHECKED = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _named_errors() -> tuple:
    from ogpo_jax.data.demos import DatasetError
    from ogpo_jax.envs.host import WorkerError
    from ogpo_jax.training.checkpoint import CheckpointError, CheckpointWriteError
    from ogpo_jax.training.finetune import NonFiniteError
    return DatasetError, WorkerError, CheckpointError, CheckpointWriteError, NonFiniteError


def debug() -> bool:
    from ogpo_jax.training.checkpoint import debug_requested
    return debug_requested() or (flags.FLAGS.is_parsed() and _DEBUG.value)


def raised_by_own_code(e: BaseException) -> bool:
    """Whether the innermost frame of `e`'s traceback is in this project (not in a library)."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_OWN_CODE)


def expected(e: BaseException) -> bool:
    """Whether `e` is a failure the user can act on (one line) rather than a bug (a traceback)."""
    if isinstance(e, _named_errors()):
        return True
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        return True
    return isinstance(e, _CHECKED) and raised_by_own_code(e)


def exit_code(e: BaseException) -> int:
    from ogpo_jax.training.finetune import NonFiniteError
    if isinstance(e, KeyboardInterrupt):
        return 130
    return 2 if isinstance(e, NonFiniteError) else 1


def message(e: BaseException) -> str:
    """The one-line report of an expected failure (the exception's own message, which names the
    field, file or step, and what to do)."""
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.errno in _DISK_FULL and not text.startswith("writing"):
        text += " (the disk or quota is full: free space and rerun the same command to resume)"
    return f"{type(e).__name__}: {text}"


def main(fn):
    """Wrap an absl `main(argv)` so that it ends as the module docstring says."""

    @functools.wraps(fn)
    def wrapped(argv):
        prog = os.path.basename(sys.argv[0]) if sys.argv else "ogpo-jax"
        try:
            return fn(argv)
        except SystemExit:
            raise
        except KeyboardInterrupt as e:
            _close()
            print(f"[{prog}] stopped ({e or 'interrupt'}); rerun the same command to resume", file=sys.stderr)
            sys.exit(130)
        except Exception as e:
            _close()
            from ogpo_jax.envs import host
            failure = host.take_failure()        # a worker's error that XLA's runtime error wraps
            if failure is not None and not isinstance(e, host.WorkerError) and not debug():
                e = failure
            if debug() or not expected(e):
                raise
            print(f"[{prog}] error: {message(e)}", file=sys.stderr)
            print(f"[{prog}] (--debug or OGPO_DEBUG=1 shows the traceback)", file=sys.stderr)
            _drop_exit_echoes()
            sys.exit(exit_code(e))

    return wrapped


def _drop_exit_echoes():
    """The failure is reported: background tasks that failed with it (orbax's other writes of a
    checkpoint on a full disk) would print their tracebacks again as they are collected at exit."""
    import logging
    import threading

    from ogpo_jax.training.checkpoint import ECHO_LOGGERS
    for name in ECHO_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = lambda *a: None
    threading.excepthook = lambda *a: None


def _close():
    from ogpo_jax.training import checkpoint
    try:
        checkpoint.close_all()
    except Exception:        # closing must not hide the error being reported
        pass
