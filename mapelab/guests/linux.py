"""The CI Linux guest: Debian from Debian packages only, cached, booted under QEMU with serial + SSH.

Why it exists: OpenBSD media cannot be fetched on this project's machines, yet every part of the
VM layer that is not OpenBSD-specific (console driver, SSH, image layering, TAP attachment) must
be proven.  This guest proves it, and hosts the reference Linux CE (python3, nftables, iproute2,
the guest kernel's ip6tnl) for the ``linux-vm`` CE backend.

Recipe: ``vm/linux-ci/`` (recipe.toml, packages.txt, files/ copied over the tree).  The image
key hashes every recipe file and the cache's SSH public key, so editing the recipe or moving to
another cache builds a new image; an unchanged recipe reuses the sealed image.

Build (root needed for debootstrap): debootstrap from the mirror the host's apt is configured
with → copy files/ → authorized key, fstab, hostname, enable units → ``mkfs.ext4 -d`` (no loop
mounts) → qcow2 → sealed layer with ``vmlinuz`` and ``initrd.img`` beside the disk.

Boot: a per-run overlay on the sealed image; ``-kernel/-initrd`` with ``console=ttyS0``; the
guest prints ``MAPELAB-HOSTKEY <key>`` on the serial console at boot, which pins the host key
before the first SSH connection; SSH goes to a port QEMU picked on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mapelab.files import sha256_file
from mapelab.qemu import accel as accel_mod
from mapelab.qemu import images
from mapelab.qemu.errors import ImageError
from mapelab.qemu.machine import unique_name
from mapelab.qemu.spec import KernelBoot, TapNic
from mapelab.qemu.ssh import cache_key, public_key_line

from . import base
from .base import Guest, GuestOs, parse_ip_link

RECIPE_DIR = Path(__file__).resolve().parents[2] / "vm" / "linux-ci"
KIND = "linux-ci"
Progress = Callable[[str], None]

FAIL_PATTERNS = (
    r"Kernel panic - not syncing",
    r"You are in emergency mode",
    r"Give root password for maintenance",
    r"Failed to start .*OpenBSD Secure Shell",
    r"VFS: Unable to mount root fs",
)


@dataclass(frozen=True)
class Recipe:
    """The parsed ``vm/linux-ci`` recipe."""

    dir: Path
    suite: str
    variant: str
    components: tuple[str, ...]
    disk_size: str
    hostname: str
    cmdline: str
    mgmt_mac: str
    packages: tuple[str, ...]

    def digest(self) -> dict[str, str]:
        """SHA-256 of every recipe file, by relative path (and whether executable): the image key's input."""
        out = {}
        for p in sorted(self.dir.rglob("*")):
            if p.is_file():
                rel = str(p.relative_to(self.dir))
                # only the exec bit counts: a checkout's umask must not change the key
                out[rel] = f"{sha256_file(p)}:{'x' if p.stat().st_mode & 0o111 else '-'}"
        return out


def load_recipe(directory: Path = RECIPE_DIR) -> Recipe:
    try:
        meta = tomllib.loads((directory / "recipe.toml").read_text())
        pkgs = [ln.split("#")[0].strip() for ln in (directory / "packages.txt").read_text().splitlines()]
    except FileNotFoundError as e:
        raise ImageError(f"Linux guest recipe: {e.filename} is missing; restore vm/linux-ci from git") from None
    except tomllib.TOMLDecodeError as e:
        raise ImageError(f"Linux guest recipe {directory / 'recipe.toml'}: {e}; fix the TOML") from None
    try:
        return Recipe(
            dir=directory, suite=meta["suite"], variant=meta.get("variant", "minbase"),
            components=tuple(meta.get("components", ["main"])), disk_size=meta.get("disk_size", "3G"),
            hostname=meta.get("hostname", "mapelab-ci"), cmdline=meta["cmdline"], mgmt_mac=meta["mgmt_mac"],
            packages=tuple(p for p in pkgs if p),
        )
    except KeyError as e:
        raise ImageError(f"Linux guest recipe {directory / 'recipe.toml'}: key {e} is missing; add it") from None


# -- the Debian mirror the host already uses ----------------------------------------------------

def debian_mirror(suite: str, sources: Sequence[Path] | None = None) -> str:
    """The URI of the first configured apt source for ``suite`` (one-line or deb822 format).

    Read from the host's apt configuration so no mirror is ever named in this repository.
    """
    paths = list(sources) if sources is not None else (
        [Path("/etc/apt/sources.list"), *sorted(Path(p) for p in glob.glob("/etc/apt/sources.list.d/*"))])
    for path in paths:
        try:
            text = path.read_text()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        if path.suffix == ".sources" or re.search(r"^\s*URIs:", text, re.M):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.lstrip().startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    if fields.get("enabled", "yes").lower() == "no":
                        continue
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                    return parts[1]
    raise ImageError(
        f"no apt source for Debian {suite!r} in /etc/apt/sources.list or sources.list.d: add one "
        f"(a 'deb <mirror> {suite} main' line) so the guest can be debootstrapped"
    )


def image_key(recipe: Recipe | None = None, root: Path | None = None) -> str:
    recipe = recipe or load_recipe()
    pub = public_key_line(root)
    return images.image_key(KIND, {"recipe": recipe.digest(),
                                   "ssh_key": hashlib.sha256(pub.encode()).hexdigest()[:16]})


# -- build ---------------------------------------------------------------------------------------

_PHASES = {"Retrieving": "downloading", "Validating": "downloading", "Extracting": "extracting",
           "Unpacking": "unpacking", "Installing": "installing", "Configuring": "configuring"}


def _run(argv: Sequence[str], what: str, progress: Progress | None = None, timeout: float = 3600) -> None:
    """Run a build step, streaming its lines to ``progress`` (throttled); fail with its last lines."""
    p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL)
    assert p.stdout is not None
    tail: list[str] = []
    phase, count, t0 = "", 0, time.monotonic()
    try:
        for line in p.stdout:
            line = line.rstrip()
            tail = [*tail, line][-20:]
            if progress is None:
                continue
            m = re.match(r"^I: (Retrieving|Validating|Unpacking|Configuring|Extracting|Installing) ?(\S*)", line)
            if m:
                step = _PHASES[m.group(1)]
                count = count + 1 if step == phase else 1
                if step != phase:
                    phase = step
                    progress(f"  {what}: {phase} …")
                elif count % 100 == 0:
                    progress(f"  {what}: {phase}, {count} steps ({time.monotonic() - t0:.0f}s)")
            elif line.startswith(("I: Base system installed", "I: Resolving", "I: Found", "W:", "E:")):
                progress(f"  {what}: {line[3:]}")
        rc = p.wait(timeout)
    except BaseException:
        p.kill()
        p.wait()
        raise
    if rc != 0:
        raise ImageError(f"{what} failed (exit {rc}):\n" + "\n".join(tail[-12:]))


def _enable(tree: Path, unit: str, target: str = "multi-user.target") -> None:
    """``systemctl enable`` done by hand (a symlink), so the build needs no systemd on the host."""
    wants = tree / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    src = next((d for d in ("lib/systemd/system", "usr/lib/systemd/system", "etc/systemd/system")
                if (tree / d / unit).exists()), None)
    if src is None:
        raise ImageError(f"unit {unit} is not in the guest tree; add its package to vm/linux-ci/packages.txt")
    link = wants / unit
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(f"/{src}/{unit}")


def _mask(tree: Path, unit: str) -> None:
    link = tree / "etc/systemd/system" / unit
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to("/dev/null")


def _customize(tree: Path, recipe: Recipe, pubkey: str) -> None:
    for src in sorted(recipe.dir.joinpath("files").rglob("*")):
        rel = src.relative_to(recipe.dir / "files")
        dst = tree / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (tree / "etc/hostname").write_text(recipe.hostname + "\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {recipe.hostname}\n::1 localhost\n")
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (tree / "etc/machine-id").write_text("")  # each guest makes its own at first boot
    ssh_dir = tree / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # made at first boot of each guest, then pinned by the harness
    _enable(tree, "systemd-networkd.service")
    _enable(tree, "mapelab-hostkey.service")
    _mask(tree, "systemd-networkd-wait-online.service")  # would wait on the unconfigured TAP NICs
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (tree / junk).glob("*"):
            if f.is_file():
                f.unlink()


def build(*, force: bool = False, progress: Progress | None = None, root: Path | None = None,
          mirror: str | None = None) -> images.Image:
    """The sealed CI guest image: from the cache if its key is there, else built (several minutes)."""
    say = progress or (lambda _m: None)
    recipe = load_recipe()
    cache_key(root)
    key = image_key(recipe, root)
    img = images.find(key, root)
    if img is not None and not force:
        say(f"Linux guest image {key} is cached ({img.dir})")
        return img
    if os.geteuid() != 0:
        raise ImageError("building the Linux guest needs root (debootstrap): run the task as root (sudo ./inv …)")
    for tool, pkg in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise ImageError(f"{tool} not found: apt-get install {pkg}")
    mirror = mirror or debian_mirror(recipe.suite)
    t0 = time.monotonic()
    with images.LayerBuild(key, kind=KIND, inputs={"recipe": recipe.digest()}, root=root) as lb:
        if not force and images.find(key, root) is not None:  # another process built it while we waited
            return images.find(key, root)  # type: ignore[return-value]
        tree = lb.dir / "tree"
        say(f"[1/4] debootstrap {recipe.suite} ({recipe.variant}, {len(recipe.packages)} extra packages)")
        _run(["debootstrap", f"--variant={recipe.variant}", f"--components={','.join(recipe.components)}",
              f"--include={','.join(recipe.packages)}", recipe.suite, str(tree), mirror],
             "debootstrap", say)
        say(f"[2/4] configuring the tree ({time.monotonic() - t0:.0f}s)")
        _customize(tree, recipe, public_key_line(root))
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        initrds = sorted((tree / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise ImageError("the guest tree has no /boot/vmlinuz-* or initrd.img-*: keep linux-image-amd64 "
                             "in vm/linux-ci/packages.txt")
        shutil.copy2(kernels[-1], lb.dir / "vmlinuz")
        shutil.copy2(initrds[-1], lb.dir / "initrd.img")
        kver = kernels[-1].name.removeprefix("vmlinuz-")
        say(f"[3/4] making the {recipe.disk_size} ext4 disk from the tree ({time.monotonic() - t0:.0f}s)")
        raw = lb.dir / "disk.raw"
        _run(["mkfs.ext4", "-q", "-F", "-L", "mapelab-root", "-d", str(tree), str(raw), recipe.disk_size],
             "mkfs.ext4")
        shutil.rmtree(tree)
        say(f"[4/4] converting to qcow2 and sealing ({time.monotonic() - t0:.0f}s)")
        images.qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(lb.disk))
        raw.unlink()
        img = lb.commit({"suite": recipe.suite, "kernel": kver, "cmdline": recipe.cmdline,
                         "mgmt_mac": recipe.mgmt_mac, "packages": list(recipe.packages)})
    say(f"Linux guest image {key} built in {time.monotonic() - t0:.0f}s ({img.dir})")
    return img


# -- boot ----------------------------------------------------------------------------------------

LINUX = GuestOs(
    name="linux",
    fail_patterns=FAIL_PATTERNS,
    links_command="ip -o link show",
    parse_links=parse_ip_link,
    poweroff_command="systemctl poweroff",
    console_prompt=r"root@[^\r\n]*# ",  # the recipe autologins root on ttyS0
    console_setup=("dmesg -n 1",),
)

@contextlib.contextmanager
def boot(*, name: str | None = None, taps: Sequence[str | TapNic] = (), accel: str | accel_mod.Accel | None = None,
         cpus: int = 2, memory_mb: int = 1024, root: Path | None = None, progress: Progress | None = None,
         build_if_missing: bool = True, keep_run: bool = False, detach: bool = False) -> Iterator[Guest]:
    """Boot the CI guest on a fresh overlay, wait for SSH, yield it; stop QEMU on the way out.

    The shared flow is :func:`mapelab.guests.base.boot`; this adds the image (built on first use),
    its kernel and initrd (``-kernel/-initrd``, ``console=ttyS0``) and the stronger accelerator
    probe that boots this kernel under KVM before trusting it.
    """
    say = progress or (lambda _m: None)
    img = build(progress=say, root=root) if build_if_missing else images.find(image_key(root=root), root)
    if img is None:
        raise ImageError("the Linux guest image is not built: run invoke vm.build-linux")
    meta = img.meta
    with base.boot(img, LINUX, name=name or unique_name("linux"), taps=taps, accel=accel,
                   probe_kernel=img.file("vmlinuz"),
                   kernel=KernelBoot(img.file("vmlinuz"), img.file("initrd.img"), meta.get("cmdline", "")),
                   cpus=cpus, memory_mb=memory_mb, root=root, progress=say, keep_run=keep_run, detach=detach) as g:
        yield g
