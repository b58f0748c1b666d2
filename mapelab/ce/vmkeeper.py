"""The keeper of a CE's guest: boot it in its own thread, hold it until teardown, keep the evidence.

Every CE backend that runs in a VM (``linux-vm``, ``openbsd``) needs the same things, so they
live here once:

* **A thread per guest.**  QEMU is SIGKILLed when the thread that started it ends (so a killed
  harness leaves no guest), hence the thread must live exactly as long as the guest; and two CEs
  boot in parallel because :meth:`VmKeeper.start` returns at once.
* **A deadline and one retry.**  Under TCG on a loaded host a boot occasionally stalls (no host
  key, no SSH); a failed boot is tried once more on a fresh overlay while the start deadline
  leaves room for it, and every attempt's console transcript is kept.
* **Errors reach the caller.**  Whatever ended the boot is raised from :meth:`VmKeeper.up` in the
  test's thread, with where the evidence is.
* **Teardown in order.**  The backend's own stop (the CE software, its logs) while the guest is
  still up, then QEMU; interrupted mid-boot, QEMU is stopped by its record at once.
* **Evidence.**  ``state_dir`` gets ``driver.log`` (what happened, with timings), every boot's
  ``console-N.log``, ``qemu.stderr`` and ``machine.json``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .driver import CeError


def require_vm_slot(slot: Any, backend: str) -> None:
    """A VM backend attaches to a slot with two TAPs that exist (QEMU opens them in the root namespace)."""
    if slot.kind != "vm" or not slot.wan_tap or not slot.lan_tap:
        raise CeError(f"backend {backend} needs a VM slot (two TAPs), but slot {slot.index} is kind {slot.kind!r}; "
                      "bring the testbed up with vm_slots (invoke testbed.up --vm-slots 1,2) or use backend linux")
    for tap in (slot.wan_tap, slot.lan_tap):
        if not Path("/sys/class/net", tap).exists():
            raise CeError(f"slot {slot.index}: TAP {tap} does not exist; is the testbed up?")


#: boot(machine name, progress) → a context manager yielding a booted guest (mapelab.guests.base.Guest)
BootFn = Callable[[str, Callable[[str], None]], AbstractContextManager[Any]]


class VmKeeper:
    """One CE guest's lifetime.  ``setup(guest)`` runs in the keeper's thread once the guest answers
    SSH (upload, configure, start the CE software); when it returns, the guest counts as up."""

    def __init__(self, what: str, state_dir: Path, boot: BootFn, setup: Callable[[Any], None], *,
                 start_timeout: float) -> None:
        self.what = what
        self.state_dir = Path(state_dir)
        self.boot = boot
        self.setup = setup
        self.start_timeout = start_timeout
        self.name = ""
        self.guest: Any = None  # mapelab.guests.base.Guest while booted
        self.timings: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set when the guest is up and set up, or the boot failed for good
        self._stop = threading.Event()  # set by stop(): the thread stops QEMU
        self._error: BaseException | None = None
        self._deadline = 0.0

    # -- state ----------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def up_now(self) -> bool:
        """The guest is booted and set up (no waiting)."""
        return self._ready.is_set() and self.guest is not None and self._error is None

    def say(self, msg: str) -> None:
        """A line in ``state_dir/driver.log`` (boot progress, timings, what the backend did)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "driver.log").open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Boot in a thread of its own and return at once; :meth:`up` waits for it."""
        if self.alive:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._deadline = time.monotonic() + self.start_timeout
        self._ready, self._stop, self._error = threading.Event(), threading.Event(), None
        self._thread = threading.Thread(target=self._run, name=f"{self.what} {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from mapelab.qemu.errors import QemuError

        try:
            for attempt in (1, 2):
                t0 = time.monotonic()
                try:
                    self._boot_and_hold(t0)
                    return
                except QemuError as e:
                    self.keep_console(suffix=f"-attempt{attempt}")
                    left = self._deadline - time.monotonic()
                    self.say(f"boot attempt {attempt} of {self.name} failed after {time.monotonic() - t0:.0f} s: "
                             f"{type(e).__name__}: {e}")
                    if attempt == 2 or self._stop.is_set() or left < time.monotonic() - t0:
                        raise
                    self.name = f"{self.name.rsplit('-r', 1)[0]}-r{attempt}"
        except BaseException as e:  # handed to the caller's thread, which raises it from up()
            self._error = e
            self.say(f"guest {self.name} failed ({type(e).__name__}); no more attempts")
        finally:
            self.guest = None
            self._ready.set()

    def _boot_and_hold(self, t0: float) -> None:
        with self.boot(self.name, self.say) as g:
            self.guest = g
            try:
                self.timings["boot_to_ssh"] = round(time.monotonic() - t0, 1)
                if self._stop.is_set():
                    return
                self.setup(g)
                self.timings["start"] = round(time.monotonic() - t0, 1)
                self.say(f"guest {self.name} up; timings {self.timings}")
                self._ready.set()
                self._stop.wait()
            finally:
                self.keep_console()  # before the boot's exit removes the machine's run directory
                self.guest = None

    def up(self, what: str) -> Any:
        """Block until the guest is booted and set up (within the start deadline); return it."""
        if self._thread is None:
            raise CeError(f"{what}: the {self.what} CE is not started; call start() first")
        left = max(0.0, self._deadline - time.monotonic())
        if not self._ready.wait(left):
            raise CeError(f"{what}: the {self.what} guest {self.name} was not up within its start timeout "
                          f"({self.start_timeout:.0f} s); see {self.state_dir}/driver.log and the console transcript; "
                          "raise start_timeout or MAPELAB_TIMEOUT_SCALE on a slow host")
        if self._error is not None:
            e = self._error
            raise CeError(f"{what}: the {self.what} guest {self.name} did not come up: {type(e).__name__}: {e}. "
                          f"Evidence (console transcript, QEMU stderr, driver.log) is in {self.state_dir}") from e
        if self.guest is None:
            raise CeError(f"{what}: the {self.what} guest has been stopped")
        return self.guest

    def stop(self, before_qemu: Callable[[Any], None] | None = None) -> None:
        """``before_qemu(guest)`` while the guest is up (stop the CE software, fetch its logs), then
        QEMU (QMP quit, SIGTERM, SIGKILL).  Idempotent; never raises for a guest already gone."""
        thread = self._thread
        if thread is None:
            return
        try:
            if before_qemu is not None and self.up_now:
                try:
                    before_qemu(self.guest)
                except Exception as e:  # evidence and an orderly stop are best effort; QEMU goes regardless
                    self.say(f"stopping the CE software failed: {type(e).__name__}: {e}")
        finally:
            self._stop.set()  # first: a boot ended below must not be retried
            booting = thread.is_alive() and not self._ready.is_set()
            if booting:
                # Interrupted mid-boot (Ctrl-C, a failed sibling CE): stop QEMU by its record now
                # (QMP is held by the booting thread, so this ends in SIGTERM by recorded PID).
                from mapelab.qemu.machine import stop_recorded

                with contextlib.suppress(Exception):
                    self.say(stop_recorded(self.name, timeout=2))
            # A boot whose QEMU is gone can still sit in its SSH wait (up to minutes): do not wait
            # for it; the thread is a daemon and QEMU is already stopped.
            thread.join(15 if booting else 120)
            if thread.is_alive():
                self.say(f"guest thread of {self.name} still winding down; QEMU stopped, not waiting for it")
            self._thread = None
            self.say(f"guest stopped; timings {self.timings}")

    # -- evidence -------------------------------------------------------------------------------------

    def keep_console(self, suffix: str = "") -> None:
        """Copy the guest's console transcripts and QEMU's stderr into ``state_dir``."""
        from mapelab.qemu.machine import runs_dir

        if self.guest is None and not self.name:
            return
        run_dir = self.guest.machine.run_dir if self.guest is not None else runs_dir() / self.name
        if not run_dir.is_dir():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for f in [*run_dir.glob("console-*.log"), run_dir / "qemu.stderr", run_dir / "machine.json"]:
            with contextlib.suppress(OSError):
                shutil.copy2(f, self.state_dir / f"{f.stem}{suffix}{f.suffix}")
