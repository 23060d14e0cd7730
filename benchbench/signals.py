"""Signals during training: SIGTERM/SIGINT/SIGUSR2 become a checkpoint, then Interrupted
(or, under submitit, a checkpoint and training goes on until submitit's USR2 requeues)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


class Interrupted(KeyboardInterrupt):
    """A signal stopped training after a checkpoint was written; a relaunch resumes.
    A KeyboardInterrupt so that it stops the whole sweep (Hydra's launchers catch only
    Exception), as Ctrl-C should."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        name = signal.Signals(signum).name
        where = (f"checkpoint {checkpoint} (relaunch resumes)" if checkpoint is not None else
                 "no checkpoint could be written (a relaunch starts the point again)")
        super().__init__(f"{name} at step {step}; {where}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class SignalCatcher:
    """Turns SIGTERM/SIGINT/SIGUSR2 into a flag checked at step boundaries, so the loop can
    checkpoint before stopping. The previous handler (e.g. submitit's requeue on SIGUSR2)
    is called after the checkpoint is written.

    Under submitit, SIGTERM only asks for a checkpoint (`save_signum`) and training goes on:
    submitit bypasses SIGTERM (SLURM sends it on cancel or preemption, often before the USR2
    on which submitit requeues), so exiting on it would lose the requeue."""

    SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.save_signum: int | None = None
        self.save_only: frozenset[int] = frozenset()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalCatcher:
        import threading

        from benchbench.jobenv import submitit_bypasses_sigterm

        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled in the main thread
        if submitit_bypasses_sigterm():
            self.save_only = frozenset({signal.SIGTERM})
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum in self.save_only:
            self.save_signum = signum
            return
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def chain(self, signum: int | None = None) -> None:
        """Call the handler that was installed before ours (submitit requeues here)."""
        signum = self.signum if signum is None else signum
        old = self._old.get(signum) if signum is not None else None
        if callable(old) and old not in (signal.SIG_IGN, signal.SIG_DFL, signal.default_int_handler):
            old(signum, None)

    def saved(self, step: int, where: Path | None) -> None:
        """After the checkpoint a save-only signal asked for: say so, hand it on, go on."""
        import sys

        signum, self.save_signum = self.save_signum, None
        if signum is None:
            return
        name = signal.Signals(signum).name
        what = f"checkpoint {where}" if where is not None else "no checkpoint could be written"
        print(f"benchbench: {name} at step {step} under submitit: {what}; training goes on "
              f"(submitit requeues on SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')})",
              file=sys.stderr, flush=True)
        self.chain(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
