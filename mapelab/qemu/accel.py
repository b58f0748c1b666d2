"""Accelerator choice: probe KVM with a tiny guest, fall back to TCG loudly, scale every timeout.

Why probe: ``/dev/kvm`` can exist and still hang a guest (a nested host where the vCPU spins
without output — true of this project's own machines).  The probe guest is a 512-byte boot
sector built here (no download): it writes a marker to COM1 and exits QEMU through the
``isa-debug-exit`` port.  A working KVM does that in well under a second; we allow a few
seconds, then fall back to TCG, after checking the same probe passes under TCG (so a broken
QEMU is reported as such rather than blamed on KVM).

The verdict is cached for a short while (``accel.json`` in the cache) keyed by kernel and QEMU
version, so a test session does not pay the probe for every machine.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, proc
from .errors import MachineError

ENV_ACCEL = "MAPELAB_ACCEL"  # force: kvm | tcg
ENV_TIMEOUT_SCALE = "MAPELAB_TIMEOUT_SCALE"  # extra multiplier for slow hosts
VERDICT_TTL = 600.0  # seconds a probe verdict is trusted
KVM_DEADLINE = 8.0  # a working KVM prints the probe marker in far less
TCG_DEADLINE = 20.0
KVM_SLOW_SECONDS = 1.5  # healthy KVM runs the probe (QEMU start included) in a few tenths
KVM_SLOW_RATIO = 5.0
FACTORS = {"kvm": 1.0, "tcg": 4.0}  # TCG is roughly 3-5x slower for boot-and-install work
PROBE_MARKER = b"MAPELAB-PROBE-OK"
PROBE_EXIT = 33  # isa-debug-exit: (0x10 << 1) | 1

QEMU_BINARY = "qemu-system-x86_64"


# The probe guest, assembled from this source (GNU as, --64, objcopy -O binary):
#   .code16: cli; zero ds/es/ss; sp=0x7c00; zero 0x1000-0x3fff; identity-map 2 MiB
#            (PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000, one 2 MiB page); CR4.PAE; CR3=0x1000;
#            EFER.LME; CR0.PG|PE; lgdt; ljmp 0x08:long
#   .code64: long: ds=ss=0x10; print msg on COM1 (out 0x3f8); out 0x10 -> port 0xf4; hlt
# Long mode with paging on purpose: a probe that stayed in real mode would pass on hosts where
# KVM breaks only once the guest pages (as a kernel does at once).
_PROBE_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cfcbf0010b9000c6631c066f3ab66c70600100320000066c70600200330000066c7060030"
    "830000000f20e06683c8200f22e066b8001000000f22d866b9800000c00f32660d000100000f300f20c0660d01000080"
    "0f22c0660f0116b07c66ea717c0000080066b810008ed88ed066baf803beb67c0000ac84c07403eeebf866baf400b010"
    "eef4ebfd0f1f4000000000000000000000000000009a200000000000009200001700987c0000"
)


def probe_boot_sector() -> bytes:
    """The 512-byte probe guest: enters long mode, prints PROBE_MARKER on COM1, exits QEMU."""
    sector = _PROBE_CODE + PROBE_MARKER + b"\r\n\0"
    return sector + b"\0" * (510 - len(sector)) + b"\x55\xaa"


@dataclass(frozen=True)
class Accel:
    """The accelerator machines will use, why, and how slow it is."""

    name: str  # "kvm" or "tcg"
    reason: str
    forced: bool = False
    probed_at: float = 0.0
    probe_seconds: float = 0.0

    @property
    def factor(self) -> float:
        extra = float(os.environ.get(ENV_TIMEOUT_SCALE, "1") or 1)
        return FACTORS[self.name] * extra

    def timeout(self, kvm_seconds: float, tcg_seconds: float | None = None) -> float:
        """A timeout for this accelerator: the TCG figure if given, else the KVM one times the factor."""
        extra = float(os.environ.get(ENV_TIMEOUT_SCALE, "1") or 1)
        if self.name == "tcg" and tcg_seconds is not None:
            return tcg_seconds * extra
        return kvm_seconds * self.factor


def qemu_version(binary: str = QEMU_BINARY) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MachineError(f"{binary}: cannot run it ({e}); apt-get install qemu-system-x86") from None
    return out.splitlines()[0] if out else "unknown"


def run_probe(accel: str, deadline: float, binary: str = QEMU_BINARY, kernel: Path | None = None
              ) -> tuple[bool, float, str]:
    """Boot the probe guest under ``accel``; (showed life, seconds, detail).

    Without ``kernel`` the built-in boot sector is the guest; with it, that Linux kernel is booted
    with an early serial console and life is its ``Linux version`` banner (the stronger check:
    a kernel touches timers, APICs and CPU features the sector does not).
    """
    with tempfile.TemporaryDirectory(prefix="mapelab-probe-") as tmp:
        common = [binary, "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]
        if kernel is None:
            img = Path(tmp) / "probe.img"
            img.write_bytes(probe_boot_sector())
            argv = [*common, "-machine", f"pc,accel={accel}", "-m", "16",
                    "-drive", f"file={img},format=raw,if=ide",
                    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
            marker = PROBE_MARKER
        else:
            argv = [*common, "-machine", f"q35,accel={accel}", "-cpu", "host" if accel == "kvm" else "max",
                    "-m", "256", "-kernel", str(kernel),
                    "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"]
            marker = b"Linux version"
        t0 = time.monotonic()
        p = proc.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None
        os.set_blocking(p.stdout.fileno(), False)
        seen = b""
        what = "the probe kernel printed its banner" if kernel else "the probe guest printed its marker"
        try:
            while time.monotonic() - t0 < deadline:
                try:
                    chunk = p.stdout.read()
                except BlockingIOError:
                    chunk = None
                if chunk:
                    seen += chunk
                if marker in seen:
                    return True, time.monotonic() - t0, what
                if p.poll() is not None and not chunk:
                    err = (p.stderr.read() or b"").decode(errors="replace").strip() if p.stderr else ""
                    return False, time.monotonic() - t0, f"QEMU exited {p.returncode} before life showed: {err[-300:]}"
                time.sleep(0.02)
            return False, time.monotonic() - t0, f"no output within {deadline:.0f}s (the vCPU hangs)"
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()


def _kvm_usable_device() -> str | None:
    """Why /dev/kvm cannot even be opened, or None if it can."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
        return None
    except FileNotFoundError:
        return "/dev/kvm does not exist"
    except PermissionError:
        return "/dev/kvm is not writable by this user (add yourself to group kvm)"
    except OSError as e:
        return f"/dev/kvm: {e}"


def _fingerprint() -> dict[str, str]:
    return {"kernel": os.uname().release, "qemu": qemu_version()}


def choose(force: str | None = None, *, fresh: bool = False, root: Path | None = None,
           kernel: Path | None = None) -> Accel:
    """The accelerator to use: ``force`` or ``$MAPELAB_ACCEL`` if set, else a (cached) probe.

    KVM is chosen only if the probe guest shows life under it within KVM_DEADLINE *and* not far
    slower than under TCG (a nested KVM that takes seconds for a boot sector hangs real kernels),
    and, when ``kernel`` is given, that kernel prints its banner under KVM.  Otherwise TCG, with
    a loud notice.  Raises :class:`MachineError` if even TCG cannot run the probe.
    """
    force = force or os.environ.get(ENV_ACCEL) or None
    if force:
        force = force.lower()
        if force not in FACTORS:
            raise MachineError(f"accelerator {force!r}: use kvm or tcg (--accel / ${ENV_ACCEL})")
        return Accel(force, f"forced ({force})", forced=True, probed_at=time.time())
    path = (root or cache.cache_dir()) / "accel.json"
    fp = {**_fingerprint(), "kernel_probe": str(kernel) if kernel else ""}
    if not fresh:
        d = cache.read_json(path)
        fresh_enough = isinstance(d, dict) and time.time() - float(d.get("probed_at", 0)) < VERDICT_TTL
        same = isinstance(d, dict) and (d.get("fingerprint") == fp or
                                        (d.get("name") == "tcg" and d.get("fingerprint", {}).get("qemu") == fp["qemu"]))
        if isinstance(d, dict) and same and fresh_enough:
            a = Accel(**{k: d[k] for k in ("name", "reason", "probed_at", "probe_seconds")})
            if a.name == "tcg":
                cache.notice(f"using TCG (software emulation, timeouts x{a.factor:g}): {a.reason} [cached verdict]")
            return a
    t0 = time.monotonic()
    ok, tcg_secs, detail = run_probe("tcg", TCG_DEADLINE)
    if not ok:
        raise MachineError(
            f"QEMU cannot run even the TCG probe guest ({detail}); check that qemu-system-x86 is installed "
            f"and works: {QEMU_BINARY} -accel tcg -nodefaults -display none"
        )
    why = _kvm_usable_device()
    if why is None:
        ok, secs, detail = run_probe("kvm", KVM_DEADLINE)
        if not ok:
            why = f"KVM is present but unusable: {detail}"
        elif secs > max(KVM_SLOW_SECONDS, KVM_SLOW_RATIO * tcg_secs):
            why = (f"KVM is present but hardly runs: the probe guest needed {secs:.1f}s under KVM against "
                   f"{tcg_secs:.2f}s under TCG (a nested or broken KVM; real kernels hang on it)")
        elif kernel is not None:
            ok, ksecs, detail = run_probe("kvm", KVM_DEADLINE, kernel=kernel)
            if not ok:
                why = f"KVM is present but the guest kernel shows no life under it: {detail}"
            else:
                secs = max(secs, ksecs)
        if why is None:
            a = Accel("kvm", f"KVM probe guest answered in {secs:.2f}s", probed_at=time.time(),
                      probe_seconds=time.monotonic() - t0)
            cache.write_json(path, {**asdict(a), "fingerprint": fp})
            return a
    a = Accel("tcg", why, probed_at=time.time(), probe_seconds=round(time.monotonic() - t0, 2))
    cache.write_json(path, {**asdict(a), "fingerprint": fp})
    cache.notice(f"using TCG (software emulation, timeouts x{a.factor:g}): {why}")
    return a
