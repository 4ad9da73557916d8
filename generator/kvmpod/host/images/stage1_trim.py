"""What a pod's guest does not run (issue 20): masks and disabled generators in the stage1 layer.

A Debian minbase boots like a small server: timers, utmp, kernel modules for devices a pod never
has, debug and config filesystems, a dozen generators for disks a 9p root does not have. Under TCG
each of these costs seconds (every program is read over 9p, every unit is a fork and an exec), and
they were measured in a booted pod (`tests/benchmarks/bench_run.py`, the guest's journal; README
"Where a pod's time goes"). rkt's stage1 booted a systemd with a handful of units; this keeps
Debian's systemd and switches off what a pod does not need, in the stage1 layer only (the base
image, shared with the e2e suite, is unchanged; kvmpod's .deb, installed on hosts too, masks nothing).

Kept on purpose: udev and its coldplug (the NIC units bind to the NICs' device units), dbus
(socket-activated only: started when something asks, `kvmpod status` in the guest over D-Bus; not
at boot, see DBUS_AT_BOOT), journald (the apps' output reaches the host through
it; its journal is volatile, see VOLATILE_JOURNAL), systemd-tmpfiles-setup(-dev) (/run's and /dev's
entries apps and dbus expect), dev-mqueue.mount (POSIX message queues for apps), systemd-sysctl,
the fstab, debug and run generators (systemd.mask=, systemd.run= and the like still work on the
kernel command line).
"""

import shutil
from pathlib import Path

# Each masked unit and why a pod does not need it.
MASKED: dict[str, str] = {
    "apt-daily.timer": "no package updates inside a pod",
    "apt-daily-upgrade.timer": "no package updates inside a pod",
    "dpkg-db-backup.timer": "a pod's dpkg database is the stage1's",
    "e2scrub_all.timer": "no ext4 in the guest (9p root)",
    "e2scrub_reap.service": "no ext4 in the guest (9p root)",
    "fstrim.timer": "no block devices",
    "systemd-tmpfiles-clean.timer": "a pod's /tmp lives as long as the pod",
    "systemd-update-utmp.service": "no logins in a pod",
    "systemd-update-utmp-runlevel.service": "no logins in a pod",
    "systemd-user-sessions.service": "no logins in a pod",
    "modprobe@configfs.service": "no configfs users",
    "modprobe@dm_mod.service": "no device mapper",
    "modprobe@drm.service": "no display",
    "modprobe@efi_pstore.service": "no EFI",
    "modprobe@fuse.service": "loaded on demand when an app opens /dev/fuse",
    "modprobe@loop.service": "loaded on demand when an app opens /dev/loop-control",
    "systemd-modules-load.service": "the stage1 lists no modules to load",
    "sys-kernel-config.mount": "no configfs users",
    "sys-kernel-debug.mount": "no debugging inside a pod's system",
    "sys-kernel-tracing.mount": "no tracing inside a pod's system",
    "sys-fs-fuse-connections.mount": "no FUSE control",
    "dev-hugepages.mount": "no huge page users",
    "proc-sys-fs-binfmt_misc.automount": "no foreign binary formats",
    "systemd-binfmt.service": "no foreign binary formats",
    "systemd-pstore.service": "no persistent platform storage",
    "systemd-random-seed.service": "the kernel seeds itself (RDRAND, jitter); nothing to carry between pods",
    "systemd-remount-fs.service": "the fstab is empty; the root is mounted rw by the kernel command line",
    "systemd-sysusers.service": "the stage1's users exist; kvmpod-app-ids.service adds the apps' own",
    # issue 20: logind (and the dbus it starts) took the guest's two emulated CPUs from the apps just as
    # a short pod's app started and ended; masked on the kernel command line beside the default
    # (bench_run.py --also, --runs 3, quiet): the app's last line -> kvmpod run returns 0.57 s against
    # 0.75 s, the first line 20.4 s against 26.8 s
    "systemd-logind.service": "no logins in a pod; kvmpod stop and Ctrl-C reach systemd by Ctrl-Alt-Del "
                              "(host/hypervisor/guest_stop.py), no power button handler needed",
}

# Generators for what a 9p root on a VM without disks never has; each is a program read over 9p.
DISABLED_GENERATORS: tuple[str, ...] = (
    "systemd-cryptsetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-rc-local-generator",
    "systemd-system-update-generator",
    "systemd-sysv-generator",  # /etc/init.d's scripts all have native units
    "systemd-getty-generator",  # the gettys are masked already
)


# udev loads a module for every device's MODALIAS (80-drivers.rules). A q35 VM's chipset, and the CPU
# TCG emulates with every feature, made a booted pod load some 30 modules it never uses while it
# started its apps (seen in a booted pod's /proc/modules: kvm and kvm_amd, the SATA controller's ahci
# and libata with scsi, the SMBus, LPC and watchdog drivers, the PC speaker, PS/2 mouse, fw_cfg, and
# a dozen CPU crypto modules), each a modprobe reading its .ko over 9p, and the shutdown waited 1.6 s
# for one still loading (kvm_amd). The stage1 overrides the rules file: udev loads modules only for
# what a pod has: virtio devices (its NICs, its ports, 9p), the ACPI power button (LNXPWRBN, PNP0C0C:
# Ctrl-C and `kvmpod stop` press it) and input devices (evdev, through which logind sees that button).
# Modules an app asks for by use (/dev/fuse, /dev/loop-control, a filesystem type) the kernel still
# loads itself, and `modprobe NAME` works as before.
UDEV_DRIVERS_RULES = "etc/udev/rules.d/80-drivers.rules"
UDEV_DRIVERS = """# kvmpod's stage1 (kvmpod/host/images/stage1_trim.py): modules only for the devices a pod uses
ACTION!="add", GOTO="drivers_end"
ENV{MODALIAS}=="virtio:*|acpi:LNXPWRBN:*|acpi:PNP0C0C:*|input:*", RUN{builtin}+="kmod load"
LABEL="drivers_end"
"""


# A pod's guest journal is volatile (issue 20): in the guest's RAM (/run/log/journal), never written
# over 9p. journald's Storage=auto (its default, systemd 252's journald.conf(5)) stores persistently only
# when /var/log/journal exists; Debian's systemd postinst makes it, so the stage1 layer removes it
# (the base keeps it: the e2e suite's own boots read their journals). Why: the apps' output goes app ->
# journald -> the host (TTYPath, images/stage1.py), and a persistent journal put journald's flush of the
# boot's journal into /var/log/journal over 9p on every app's path: 1.5-6 s of a TCG start during which
# journald passed no line on (Debian orders systemd-journal-flush.service before systemd-tmpfiles-setup,
# which the apps follow through PrivateTmp=). Taken out of that order instead, the flush ran beside the
# apps and a pod that ended during it lost an app's line (e2e run-fail's 'sleeper'): tried, taken back.
# The flush unit is skipped when there is nothing to flush to (FLUSH_CONDITION), so a pod runs no
# journalctl at its start nor at its end. `kvmpod run --keep` (a pod kept for diagnosis) makes
# /var/log/journal in the pod's own upper dir before it boots (pods/kept_journal.py): that pod's journal
# is persistent, read on the host with `journalctl -D <pod>/stage1/upper/var/log/journal`, with the
# flush back on its apps' path. RAM: journald keeps the runtime journal under RuntimeMaxUse=, by default
# 10% of /run (a tmpfs of 10% of the guest's RAM, made by the initramfs), and leaves RuntimeKeepFree=
# (15%) of /run free: a guest that floods its journal rotates and drops old entries at that bound.
VOLATILE_JOURNAL = "var/log/journal"
FLUSH_UNIT = "systemd-journal-flush.service"
FLUSH_DROPIN = "50-kvmpod-only-when-persistent.conf"
FLUSH_CONDITION = """# kvmpod's stage1 (kvmpod/host/images/stage1_trim.py): a pod's journal is volatile unless the pod is
# kept (kvmpod run --keep makes /var/log/journal): no journalctl --flush to run otherwise
[Unit]
ConditionPathIsDirectory=/var/log/journal
"""


# Units that pass systemd credentials (tmpfiles.extra, sysctl.extra, ...) get a /run/credentials/<unit>
# mount each when they start, whether or not a credential exists, and the pod's end waited for the
# three of them to be unmounted (an umount process each: 0.4 s of a TCG pod's end, bench_run.py). A pod
# is given no credentials: the stage1 resets the list for these units (an empty LoadCredential=).
NO_CREDENTIALS_UNITS: tuple[str, ...] = (
    "systemd-sysctl.service",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
)
NO_CREDENTIALS_DROPIN = "50-kvmpod-no-credentials.conf"
NO_CREDENTIALS = """# kvmpod's stage1 (kvmpod/host/images/stage1_trim.py): no credentials, so no /run/credentials mount
[Service]
LoadCredential=
"""


# Ctrl-Alt-Del powers a pod off (Debian links ctrl-alt-del.target to reboot.target): it is how `kvmpod
# stop` and Ctrl-C reach systemd since logind is masked (host/hypervisor/guest_stop.py), and a pod that
# is stopped powers off as it did through logind's power button, its console ending "reboot: Power
# down" (QEMU's -no-reboot ended a reboot too, as "reboot: Restarting system").
# dbus started at boot only because Debian's dbus package links it into multi-user.target (its postinst
# ships /lib/systemd/system/multi-user.target.wants/dbus.service): with logind masked, nothing in a pod
# needs the bus at boot, and its start took the guest's CPUs beside a short pod's app (a traced boot:
# "Starting dbus.service" 0.04 s before the app's end, its record unit's start 0.2 s after it). The
# link is removed from the stage1's copy of the base; dbus.socket stays in sockets.target, so the bus
# starts when something asks for it (`kvmpod status` in the guest).
DBUS_AT_BOOT = "systemd/system/multi-user.target.wants/dbus.service"  # under usr/lib, or lib before merged /usr
CTRL_ALT_DEL = "etc/systemd/system/ctrl-alt-del.target"
CTRL_ALT_DEL_TARGET = "/lib/systemd/system/poweroff.target"


def _link(path: Path, target: str) -> None:
    """path as a link to target, replacing whatever was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def _null_link(path: Path) -> None:
    _link(path, "/dev/null")


def trim(root: Path) -> None:
    """Mask MASKED and disable DISABLED_GENERATORS in the stage1 root (systemd's own way: a link to
    /dev/null in /etc/systemd/system and /etc/systemd/system-generators); udev's module loading
    limited to UDEV_DRIVERS; Ctrl-Alt-Del a poweroff; the journal volatile (VOLATILE_JOURNAL removed, the flush only when a kept
    pod has it)."""
    for unit in MASKED:
        _null_link(root / "etc/systemd/system" / unit)
    for generator in DISABLED_GENERATORS:
        _null_link(root / "etc/systemd/system-generators" / generator)
    for unit in NO_CREDENTIALS_UNITS:
        dropin = root / "etc/systemd/system" / f"{unit}.d" / NO_CREDENTIALS_DROPIN
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(NO_CREDENTIALS)
    rules = root / UDEV_DRIVERS_RULES
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(UDEV_DRIVERS)
    journal = root / VOLATILE_JOURNAL
    if journal.is_dir() and not journal.is_symlink():
        shutil.rmtree(journal)
    elif journal.is_symlink() or journal.exists():
        journal.unlink()
    for lib in ("usr/lib", "lib"):
        if (root / lib).is_symlink():  # merged /usr (Debian 12): lib -> usr/lib, done above; never followed
            continue
        dbus = root / lib / DBUS_AT_BOOT
        if dbus.is_symlink() or dbus.exists():
            dbus.unlink()
    _link(root / CTRL_ALT_DEL, CTRL_ALT_DEL_TARGET)
    flush = root / "etc/systemd/system" / f"{FLUSH_UNIT}.d" / FLUSH_DROPIN
    flush.parent.mkdir(parents=True, exist_ok=True)
    flush.write_text(FLUSH_CONDITION)
