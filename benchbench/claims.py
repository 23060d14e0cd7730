"""Claims: one file per point being computed, so two launches never train the same point at once.

`<results.dir>/claims/<run_id>.json` names who computes the point (host, pid, job, log,
started) and a heartbeat time that a daemon thread refreshes every `study.heartbeat_s`; it is
removed when the point ends, whatever its status. A claim is taken over (with a printed line)
when its heartbeat is older than `study.claim_stale_s` (a killed job, a dead host), when its
process is gone (same host: seen at once), or when an earlier run of this same SLURM job left
it (a requeued job). Creating one is a hard link of a complete temp file, so of two processes
claiming at once exactly one wins; a takeover is serialised by an O_EXCL lock file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HELD: set[str] = set()  # tokens of the claims this process holds (threads share a pid)
_ATTEMPTS = 4


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    heartbeat_s: float = 60.0
    stale_s: float = 300.0


def settings(cfg: Any) -> Settings:
    """study.claims / study.heartbeat_s / study.claim_stale_s (null: 5 x heartbeat_s)."""
    study = cfg.get("study") or {}
    beat = float(study.get("heartbeat_s") or 60.0)
    stale = study.get("claim_stale_s")
    return Settings(enabled=bool(study.get("claims", True)), heartbeat_s=beat,
                    stale_s=float(stale) if stale is not None else 5 * beat)


def claim_path(rdir: str | os.PathLike, run_id: str) -> Path:
    return Path(rdir) / "claims" / f"{run_id}.json"


def read(path: Path) -> dict[str, Any] | None:
    """The claim at `path`, None when there is none. A file that does not parse (a claim
    made without hard links, caught mid-write) counts as held, aged by its mtime."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {"unreadable": True, "heartbeat": time.time()}
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("heartbeat"), int | float):
            return data
    except ValueError:
        pass
    return {"unreadable": True, "heartbeat": mtime}


def me() -> dict[str, Any]:
    """Who this process is, as a claim names it."""
    from benchbench import jobenv

    job = jobenv.job_fields()
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": jobenv.job_id(),
            "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
            "log_path": job.get("log_path")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or we cannot tell: assume it lives
    return True


def stale_reason(held: dict[str, Any], stale_s: float, now: float | None = None) -> str | None:
    """Why `held` may be taken over; None while it is live."""
    now = time.time() if now is None else now
    if held.get("token") in _HELD:
        return None  # this process holds it (another thread)
    mine = me()
    age = now - float(held.get("heartbeat") or 0)
    pid = held.get("pid")
    if held.get("host") == mine["host"] and isinstance(pid, int):
        if pid == mine["pid"]:
            return f"this process (pid {pid}) left it"
        if not _alive(pid):
            return f"its process {pid} on {held['host']} is gone"
    if (mine["job"] and held.get("job") == mine["job"]
            and int(held.get("restart") or 0) < mine["restart"]):
        return f"an earlier run of this job ({mine['job']}, requeued) left it"
    if age > stale_s:
        return f"its heartbeat is {age:.0f}s old (stale after {stale_s:g}s)"
    return None


def describe(held: dict[str, Any], now: float | None = None) -> str:
    """'running elsewhere (host h, job 12_3, pid 42, heartbeat 8s ago)'."""
    now = time.time() if now is None else now
    if held.get("unreadable"):
        return f"running elsewhere (a claim being written, {now - held['heartbeat']:.0f}s old)"
    parts = [f"host {held.get('host')}"]
    if held.get("job"):
        parts.append(f"job {held['job']}")
    parts += [f"pid {held.get('pid')}", f"heartbeat {max(0.0, now - held['heartbeat']):.0f}s ago"]
    return f"running elsewhere ({', '.join(parts)})"


def live_holder(rdir: str | os.PathLike, run_id: str, st: Settings) -> dict[str, Any] | None:
    """The claim on this point that another live process holds, or None (no claim, a stale
    one, or claims off). Reads only: what a launch or benchbench-status asks."""
    if not st.enabled:
        return None
    held = read(claim_path(rdir, run_id))
    if held is None or stale_reason(held, st.stale_s) is not None:
        return None
    return held


@dataclass
class Claim:
    """A claim attempt: `holder` is the live claim of another process (then this one holds
    nothing), else this process holds the point until `release()`."""

    path: Path | None = None
    holder: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    heartbeat_s: float = 60.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Claim:
        self._thread = threading.Thread(target=self._beat, name="benchbench-claim",
                                        daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        from benchbench.results import atomic_write_text

        assert self.path is not None
        while not self._stop.wait(self.heartbeat_s):
            cur = read(self.path)
            if cur is None or cur.get("token") != self.info["token"]:
                print(f"benchbench: warning: the claim {self.path} is no longer this "
                      f"process's ({describe(cur) if cur else 'removed'})", file=sys.stderr)
                return
            with contextlib.suppress(Exception):  # a missed beat is not worth the run
                atomic_write_text(self.path, json.dumps({**self.info, "heartbeat": time.time()}))

    def release(self) -> None:
        """Stop the heartbeat and remove the claim if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        token = self.info.get("token")
        if self.path is not None and token:
            cur = read(self.path)
            if cur is not None and cur.get("token") == token:
                with contextlib.suppress(OSError):
                    self.path.unlink()
        _HELD.discard(token)


NOT_CLAIMED = Claim()  # claims off, or the folder is not writable: the row write says so


def acquire(rdir: str | os.PathLike, run_id: str, st: Settings) -> Claim:
    """Claim the point for this process, or say who holds it (Claim.holder)."""
    if not st.enabled:
        return Claim()
    path = claim_path(rdir, run_id)
    held: dict[str, Any] | None = None
    for _ in range(_ATTEMPTS):
        info = {"run_id": run_id, **me(), "token": uuid.uuid4().hex,
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "heartbeat": time.time()}
        try:
            if _create(path, info):
                return Claim(path=path, info=info, heartbeat_s=st.heartbeat_s).start()
        except OSError:
            return Claim()  # an unwritable results dir: the point's row write reports it
        held = read(path)
        if held is None:
            continue  # released meanwhile: try again
        why = stale_reason(held, st.stale_s)
        if why is None:
            return Claim(holder=held)
        _take_over(path, held, why, st.stale_s)
    return Claim(holder=held or read(path) or {"unreadable": True, "heartbeat": time.time()})


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create the claim if there is none: a complete temp file hard-linked to its name
    (link fails when the name exists). Filesystems without hard links: O_EXCL create."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(info).encode()
    tmp = path.with_name(f".{path.name}.{info['token']}.tmp")
    _HELD.add(info["token"])  # before the link: a thread of ours reading it sees it live
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            _HELD.discard(info["token"])
            return False
        except OSError:  # no hard links here
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                _HELD.discard(info["token"])
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return True
    except BaseException:
        _HELD.discard(info["token"])
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _take_over(path: Path, held: dict[str, Any], why: str, stale_s: float) -> None:
    """Remove the stale claim `held`, if it is still the one there; one process at a time
    (a lock file), so a fresh claim made meanwhile is never removed."""
    lock = path.with_name(f"{path.name}.takeover")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):  # a takeover that died halfway: clear its lock
            if time.time() - lock.stat().st_mtime > stale_s:
                lock.unlink()
        time.sleep(0.05)
        return
    try:
        cur = read(path)
        if cur is not None and cur.get("token") == held.get("token") and (
                cur.get("heartbeat") == held.get("heartbeat")):
            path.unlink()
            print(f"benchbench: taking over {path.stem}: {why} "
                  f"(was {describe(held).removeprefix('running elsewhere ')})", flush=True)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            lock.unlink()
