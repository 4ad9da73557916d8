"""Boot C: the apps' environment and isolators, in one booted pod (issue 10).

Each app writes what it finds into the host volume `results`; a finishing unit in the guest waits
for them, records how systemd saw the units, and powers off.

- envcheck: Debian's own dynamically linked dash and coreutils (copied with their libraries, no
  busybox) read /proc, write /dev/null, create a file in /tmp, and find /sys and the kernel's
  tunables read-only or hidden, a minimal /dev, and the guest's resolv.conf (the pod has a NIC).
- limits: memory, cpu, cpu-shares, oom-score-adj and supplementaryGIDs as its own cgroup and
  process see them; its image ships /etc/hosts, which stays the image's.
- memhog: over its memory limit, killed by the OOM killer; systemd records Result=oom-kill.
- nochown: CAP_CHOWN removed, chown is refused.
- noseccomp: chmod removed with errno ENOTSUP, chmod fails with that error.
- rorootfs: readOnlyRootFS: its rootfs refuses writes, its read-write volume and /tmp do not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from . import boot, guestimage
from .conftest import BootState, module_boot
from .kvmpod_guest import (BUSYBOX, WAIT_FOR_RESULTS, Netns, argv_value, finish_unit, host_kvmpod,
                           install_guest_script, install_guest_unit, install_kvmpod, kept_dir, make_app_rootfs,
                           pod_uuid, qemu_args, write_json)

pytestmark = pytest.mark.e2e

TIMEOUT = 900.0  # TCG on a shared 2-core machine: boot C ran 256 s idle, 478 s under load
HOST_IP, GUEST_IP, PREFIX = "10.99.2.1", "10.99.2.2", 24
TAP = "kvmpode2e2"
GUEST_RESOLV = "nameserver 10.99.2.53\n"
GUEST_HOSTS = "127.0.0.1 localhost\n10.99.2.2 kvmpod-e2e-guest\n"
IMAGE_HOSTS = "127.0.0.1 localhost limits-image-hosts\n"
# Debian programs the envcheck app runs, dynamically linked, copied with their libraries.
DYNAMIC = ("/bin/dash", "/bin/head", "/bin/ls", "/bin/touch", "/bin/cat", "/bin/tr", "/bin/wc", "/bin/id")

ENVCHECK = r"""
r=/results
{
  echo "status=$(head -n 1 /proc/self/status)"
  if echo x > /dev/null; then echo "devnull=ok"; fi
  echo "dev=$(ls /dev | tr '\n' ' ')"
  if touch /tmp/made; then echo "tmp=$(ls /tmp)"; fi
  echo "sys=$(ls /sys | tr '\n' ' ')"
  echo "sysfs_write=$( (echo kvmpod > /sys/kernel/uevent_helper) 2>&1)"
  echo "procsys_write=$( (echo kvmpod > /proc/sys/kernel/domainname) 2>&1)"
  echo "kallsyms_bytes=$(wc -c < /proc/kallsyms)"
  echo "sys_module_entries=$(ls /sys/module | wc -l)"
  echo "resolv=$(cat /etc/resolv.conf)"
  echo "hosts_lines=$(wc -l < /etc/hosts)"
  echo "id=$(id -u):$(id -g)"
} > $r/envcheck.txt 2>&1
echo "hello from envcheck"
echo > $r/envcheck.done
"""

LIMITS = r"""
r=/results
c=$(cat /proc/self/cgroup); c=/sys/fs/cgroup${c#0::}
{
  echo "memory.max=$(cat $c/memory.max)"
  echo "cpu.max=$(cat $c/cpu.max)"
  echo "cpu.weight=$(cat $c/cpu.weight)"
  echo "oom_score_adj=$(cat /proc/self/oom_score_adj)"
  echo "groups=$(id -G)"
  echo "nnp=$(busybox grep NoNewPrivs /proc/self/status | busybox tr -d '\t ')"
  echo "hosts=$(cat /etc/hosts)"
} > $r/limits.txt 2>&1
echo > $r/limits.done
"""

APPS: dict[str, dict] = {
    "envcheck": {"exec": ["/bin/sh", "-c", ENVCHECK]},
    "limits": {"script": LIMITS, "user": "1000", "group": "1000", "supplementaryGIDs": [4, 2727], "isolators": [
        {"name": "resource/memory", "value": {"limit": "48Mi"}},
        {"name": "resource/cpu", "value": {"limit": "500m"}},
        {"name": "os/linux/cpu-shares", "value": 512},
        {"name": "os/linux/oom-score-adj", "value": 300},
        {"name": "example.com/unknown-isolator", "value": 1}]},
    "memhog": {"script": "echo > /results/memhog.started; busybox dd if=/dev/zero of=/dev/null bs=96M count=1; "
                         "echo survived > /results/memhog.survived",
               "isolators": [{"name": "resource/memory", "value": {"limit": "32Mi"}}]},
    "nochown": {"script": "touch /tmp/f; busybox chown 1:1 /tmp/f 2> /results/nochown.txt; echo rc=$? >> /results/nochown.txt; "
                          "echo > /results/nochown.done",
                "isolators": [{"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_CHOWN"]}}]},
    "noseccomp": {"script": "touch /tmp/f; busybox chmod 600 /tmp/f 2> /results/noseccomp.txt; "
                            "echo rc=$? >> /results/noseccomp.txt; echo > /results/noseccomp.done",
                  "isolators": [{"name": "os/linux/seccomp-remove-set",
                                 "value": {"set": ["chmod", "fchmod", "fchmodat"], "errno": "ENOTSUP"}}]},
    "rorootfs": {"script": "{ touch /newfile 2>&1; echo rootfs_rc=$?; touch /tmp/ok; echo tmp_rc=$?; } "
                           "> /results/rorootfs.txt; echo > /results/rorootfs.done",
                 "readOnlyRootFS": True},
}
# App semantics: a program path with "$", found in the app's PATH or given whole; event handlers;
# "root" without /etc/passwd; a relative mount path; appc names systemd cannot pass.
SEMANTICS_SCRIPT = """#!/bin/sh
printf '%s\\n' "$0" "$@" > /results/semantics.argv
busybox tr '\\0' '\\n' < /proc/$$/environ > /results/semantics.env
echo "$(id -u):$(id -g)" > /results/semantics.id
echo > /results/semantics.done
"""
SEMANTICS_ENV = {"my.var": "a $b 100%", "MY-VAR": "dash", "PLAIN": "plain"}
APPS["semantics"] = {
    "exec": ["/bin/run$x", "$HOME", "a b"], "user": "root", "group": "root", "results_path": "results",
    "environment": [{"name": n, "value": v} for n, v in SEMANTICS_ENV.items()],
    "eventHandlers": [
        {"name": "pre-start", "exec": ["/bin/busybox", "sh", "-c", "echo pre-start > /results/semantics.pre"]},
        {"name": "post-stop", "exec": ["/bin/busybox", "sh", "-c", "echo post-stop > /results/semantics.post"]}]}
APPS["lookup"] = {"exec": ["hello", "world"], "environment": [{"name": "PATH", "value": "/opt/bin:/bin"}]}
HELLO_SCRIPT = '#!/bin/sh\nprintf "%s\\n" "$0" "$@" > /results/lookup.argv\necho > /results/lookup.done\n'
# Socket activation on the pod's host port; a notify-capable image; a Docker-converted image.
SOCKET_PORT, SOCKET_HOST_PORT = 7777, 7000
APPS["sockets"] = {"script": 'echo "fds=$LISTEN_FDS pid_ok=$([ "$LISTEN_PID" = $$ ] && echo yes)" > /results/sockets.txt; '
                             'busybox readlink /proc/$$/fd/3 >> /results/sockets.txt; echo > /results/sockets.done',
                   "ports": [{"name": "echo", "protocol": "tcp", "port": SOCKET_PORT, "socketActivated": True}]}
APPS["notifier"] = {"script": 'echo started > /results/notifier.started; /bin/systemd-notify --ready; sleep 2; '
                              'echo > /results/notifier.done'}
APPS["docker"] = {"image_app": True}  # its app comes from its image manifest, below
DOCKER_IMAGE = {
    "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "docker.io/library/worker",
    "annotations": [{"name": "appc.io/docker/repository", "value": "docker.io/library/worker"}],
    "app": {"exec": ["/bin/busybox", "sh", "-c", 'echo "$(id -u):$(id -g)" > /results/docker.id; '
                     'cat /data/seed.txt > /results/docker.seed 2>&1; echo > /results/docker.done'],
            "user": "worker", "group": "worker", "mountPoints": [{"name": "seeded", "path": "/data"}]}}
DONE = ["envcheck", "limits", "nochown", "noseccomp", "rorootfs", "semantics", "lookup", "sockets", "notifier",
        "docker"]

FINISH_SCRIPT = """#!/bin/sh
# kvmpod e2e (boot C): wait for the apps, record how systemd saw them, power off.
""" + WAIT_FOR_RESULTS + """i=0
while :; do
  missing=""
  for d in @DONE@; do [ -e $r/$d.done ] || missing="$missing $d"; done
  [ -e $r/semantics.post ] || missing="$missing semantics.post"
  state=$(systemctl show memhog.service -p ActiveState --value)
  [ -z "$missing" ] && [ "$state" != active ] && [ "$state" != activating ] && break
  [ $i -ge 120 ] && break
  sleep 1; i=$((i+1))
done
log "apps finished after ${i}s; missing:${missing:- none}"
for app in @APPS@; do
  systemctl show $app.service -p ActiveState -p Result -p ExecMainStatus > $r/$app.show
done
systemctl show sockets.socket -p Listen -p ActiveState > $r/sockets.socket.show
sync
log done
"""

FINISH_UNIT = finish_unit('collect results', 'mnt-results.mount network.target', 480)


def manifest(results: Path) -> dict:
    apps = []
    for name, spec in APPS.items():
        if spec.get("image_app"):
            apps.append({"name": name, "image": {"name": DOCKER_IMAGE["name"]},
                         "mounts": [{"volume": "results", "path": "/results"}]})
            continue
        app = {"exec": spec.get("exec") or ["/bin/busybox", "sh", "-c", spec["script"]],
               "user": spec.get("user", "0"), "group": spec.get("group", "0"),
               "isolators": spec.get("isolators", [])}
        for key in ("supplementaryGIDs", "environment", "eventHandlers", "ports"):
            if key in spec:
                app[key] = spec[key]
        entry = {"name": name, "image": {"name": f"example.com/kvmpod-e2e-{name}"}, "app": app,
                 "mounts": [{"volume": "results", "path": spec.get("results_path", "/results")}]}
        if spec.get("readOnlyRootFS"):
            entry["readOnlyRootFS"] = True
        apps.append(entry)
    return {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": apps,
            "volumes": [{"name": "results", "kind": "host", "source": str(results)}],
            "ports": [{"name": "echo", "hostPort": SOCKET_HOST_PORT}]}


def copy_dynamic(binary: str, rootfs: Path) -> None:
    """`binary` and every library `ldd` names, at the same paths inside `rootfs`."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = [binary]
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
            paths.append(words[words.index("=>") + 1])
        elif words and words[0].startswith("/"):
            paths.append(words[0])  # the loader
    for path in paths:
        dest = rootfs / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy2(path, dest)  # follows symlinks: the library itself under the name asked for


def make_dynamic_rootfs(root: Path, app: str) -> Path:
    rootfs = root / "opt/stage2" / app / "rootfs"
    rootfs.mkdir(parents=True)
    for binary in DYNAMIC:
        copy_dynamic(binary, rootfs)
    (rootfs / "bin/sh").symlink_to("dash")
    return rootfs


@dataclass
class BootC(BootState):
    LABEL: ClassVar[str] = "C"
    results: Path | None = None

    def output_dir(self) -> Path | None:
        return self.results

    def values(self, name: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.read(name).splitlines() if "=" in line)

    def journal(self) -> str:
        return (self.logs / "journal.txt").read_text(errors="replace")


def _run_boot(state: BootC, tmp: Path) -> Iterator[None]:
    image = guestimage.ensure_image()
    state.results = state.logs / "volumes/results"
    state.results.mkdir(parents=True)
    state.results.chmod(0o777)  # limits runs as uid 1000
    pod_file = write_json(state.logs / "pod.json", manifest(state.results))
    networks = write_json(state.logs / "networks.json", [
        {"name": "e2e", "tap": TAP, "hostIP": HOST_IP, "guestIP": GUEST_IP, "prefix": PREFIX}])
    uuid = pod_uuid()

    tmp.parent.mkdir(parents=True, exist_ok=True)
    with boot.private_root(image, tmp) as root:
        state.install = install_kvmpod(root, state.logs)
        make_dynamic_rootfs(root, "envcheck")
        for name in APPS:
            if name != "envcheck":
                make_app_rootfs(root, name)
        install_guest_script(root, "/opt/stage2/semantics/rootfs/bin/run$x", SEMANTICS_SCRIPT)
        install_guest_script(root, "/opt/stage2/lookup/rootfs/usr/lib/hello/real", HELLO_SCRIPT)
        (root / "opt/stage2/lookup/rootfs/opt/bin").mkdir(parents=True)
        (root / "opt/stage2/lookup/rootfs/opt/bin/hello").symlink_to("/usr/lib/hello/real")
        if not (root / "bin/busybox").exists():
            # The guest's static busybox passes variables systemd cannot (busybox-static in a stage1).
            shutil.copy2(BUSYBOX, root / "bin/busybox")
        notifier = root / "opt/stage2/notifier"
        copy_dynamic("/bin/systemd-notify", notifier / "rootfs")
        write_json(notifier / "manifest", {"acKind": "ImageManifest", "acVersion": "0.8.11",
                                           "name": "example.com/kvmpod-e2e-notifier", "annotations": [
                                               {"name": "appc.io/executor/supports-systemd-notify", "value": "true"}]})
        docker = root / "opt/stage2/docker"
        write_json(docker / "manifest", DOCKER_IMAGE)
        (docker / "rootfs/etc").mkdir()
        (docker / "rootfs/etc/passwd").write_text("root:x:0:0::/:/bin/sh\nworker:x:1234:1234::/:/bin/sh\n")
        (docker / "rootfs/etc/group").write_text("root:x:0:\n")  # no group "worker": gid = uid
        (docker / "rootfs/data").mkdir()
        (docker / "rootfs/data/seed.txt").write_text("from the image\n")
        limits_etc = root / "opt/stage2/limits/rootfs/etc"
        limits_etc.mkdir()
        (limits_etc / "hosts").write_text(IMAGE_HOSTS)
        for path, text in (("etc/resolv.conf", GUEST_RESOLV), ("etc/hosts", GUEST_HOSTS)):
            (root / path).unlink(missing_ok=True)
            (root / path).write_text(text)
        install_guest_script(root, "/usr/local/sbin/kvmpod-e2e-finish",
                             FINISH_SCRIPT.replace("@DONE@", " ".join(DONE)).replace("@APPS@", " ".join(APPS)))
        install_guest_unit(root, "kvmpod-e2e-finish.service", FINISH_UNIT)

        common = ["--manifest", str(pod_file), "--rootfs", str(root), "--uuid", uuid, "--networks", str(networks)]
        host_kvmpod("stage", *common)
        console = state.logs / "console.log"
        out = qemu_args(common, image, console)
        argv = json.loads(out.stdout)
        state.accelerator = argv_value(argv, "-accel")
        with Netns(f"kvmpod-e2e-{uuid[:8]}", TAP, f"{HOST_IP}/{PREFIX}") as ns:
            state.seconds = boot.run_until_poweroff(argv, root, state.logs, console, state.accelerator,
                                                    timeout=TIMEOUT, wrapper=ns.wrapper)
        yield


@pytest.fixture(scope="module")
def boot_c(request: pytest.FixtureRequest):
    yield from module_boot(request, BootC(logs=kept_dir("boot-c")), _run_boot)


# ---------------------------------------------------------------- the app's environment

def test_dynamic_program_reads_proc_writes_dev_null_and_tmp(boot_c: BootC) -> None:
    boot_c.require()
    found = boot_c.values("envcheck.txt")
    assert found.get("status") == "Name:\thead", (found, boot_c.where())
    assert found.get("devnull") == "ok"
    assert found.get("tmp") == "made"
    assert found.get("id") == "0:0"


def test_dev_is_minimal(boot_c: BootC) -> None:
    boot_c.require()
    dev = set(boot_c.values("envcheck.txt")["dev"].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= dev, dev
    assert not dev & {"vda", "ttyS0", "kmsg", "mem", "port", "console"}, dev


def test_sys_and_kernel_tunables_are_read_only_or_hidden(boot_c: BootC) -> None:
    boot_c.require()
    found = boot_c.values("envcheck.txt")
    assert {"kernel", "fs", "class", "devices"} <= set(found["sys"].split()), found
    assert found["sysfs_write"].endswith("Read-only file system"), found
    assert found["procsys_write"].endswith("Read-only file system"), found
    assert found["kallsyms_bytes"] == "0", found
    assert found["sys_module_entries"] == "0", found


def test_name_service_files_from_the_guest_unless_the_image_ships_them(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.values("envcheck.txt")["resolv"] == GUEST_RESOLV.strip()
    assert boot_c.values("envcheck.txt")["hosts_lines"] == "2"
    assert boot_c.read("limits.txt").split("hosts=", 1)[1] == IMAGE_HOSTS


def test_app_output_reaches_journal_and_console_under_its_name(boot_c: BootC) -> None:
    boot_c.require()
    assert "envcheck[" in boot_c.journal() and "]: hello from envcheck" in boot_c.journal(), boot_c.where()
    assert "hello from envcheck" in (boot_c.logs / "console.log").read_text(errors="replace"), boot_c.where()


# ---------------------------------------------------------------- isolators

def test_resource_isolators_reach_the_apps_cgroup_and_process(boot_c: BootC) -> None:
    boot_c.require()
    found = boot_c.values("limits.txt")
    assert found["memory.max"] == str(48 * 2**20), (found, boot_c.where())
    assert found["cpu.max"] == "50000 100000"
    assert found["cpu.weight"] == "50"
    assert found["oom_score_adj"] == "300"
    assert found["groups"].split() == ["1000", "4", "2727"]
    assert found["nnp"] == "NoNewPrivs:1"  # rkt: a non-root app with a seccomp filter


def test_app_over_its_memory_limit_is_killed_by_the_oom_killer(boot_c: BootC) -> None:
    boot_c.require()
    assert (boot_c.results / "memhog.started").exists(), boot_c.where()
    assert not (boot_c.results / "memhog.survived").exists(), boot_c.where()
    show = boot_c.values("memhog.show")
    assert (show["ActiveState"], show["Result"]) == ("failed", "oom-kill"), (show, boot_c.where())
    assert "memhog.service: A process of this unit has been killed by the OOM killer." in boot_c.journal()


def test_removed_capability_is_refused(boot_c: BootC) -> None:
    boot_c.require()
    text = boot_c.read("nochown.txt")
    assert "Operation not permitted" in text and "rc=1" in text, (text, boot_c.where())


def test_removed_syscall_fails_with_the_given_errno(boot_c: BootC) -> None:
    boot_c.require()
    text = boot_c.read("noseccomp.txt")
    assert "not supported" in text.lower() and "rc=1" in text, (text, boot_c.where())


def test_read_only_rootfs_refuses_writes_but_not_to_volumes_or_tmp(boot_c: BootC) -> None:
    boot_c.require()
    found = boot_c.values("rorootfs.txt")
    assert found["rootfs_rc"] == "1" and found["tmp_rc"] == "0", (boot_c.read("rorootfs.txt"), boot_c.where())
    assert "Read-only file system" in boot_c.read("rorootfs.txt")


def test_unknown_isolator_is_a_warning_on_the_kernel_log(boot_c: BootC) -> None:
    boot_c.require()
    assert "unknown isolator 'example.com/unknown-isolator'; ignored" in boot_c.journal(), boot_c.where()


# ---------------------------------------------------------------- app semantics

def test_program_path_keeps_its_dollar_and_arguments_arrive_as_written(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.read("semantics.argv").splitlines() == ["/bin/run$x", "$HOME", "a b"], boot_c.where()


def test_environment_names_with_dot_and_dash_reach_the_app_exactly(boot_c: BootC) -> None:
    boot_c.require()
    env = dict(line.split("=", 1) for line in boot_c.read("semantics.env").splitlines() if "=" in line)
    assert {n: env.get(n) for n in SEMANTICS_ENV} == SEMANTICS_ENV, (env, boot_c.where())
    assert env.get("AC_APP_NAME") == "semantics"
    assert "Invalid environment assignment" not in boot_c.journal()


def test_root_means_zero_without_passwd_and_relative_mount_path_is_in_the_app(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.read("semantics.id") == "0:0\n"  # written through the mount at "results", i.e. /results


def test_event_handlers_run_before_and_after_the_app(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.read("semantics.pre") == "pre-start\n", boot_c.where()
    assert boot_c.read("semantics.post") == "post-stop\n", boot_c.where()


def test_bare_program_name_is_found_on_the_apps_path(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.read("lookup.argv").splitlines() == ["/opt/bin/hello", "world"], boot_c.where()


# ---------------------------------------------------------------- ports, notify, Docker images

def test_socket_activated_port_listens_on_the_host_port_and_hands_the_app_its_socket(boot_c: BootC) -> None:
    boot_c.require()
    show = boot_c.values("sockets.socket.show")
    assert show["ActiveState"] == "active" and show["Listen"] == f"[::]:{SOCKET_HOST_PORT} (Stream)", show
    lines = boot_c.read("sockets.txt").splitlines()
    assert lines[0] == "fds=1 pid_ok=yes" and lines[1].startswith("socket:["), (lines, boot_c.where())


def test_notify_image_is_started_when_it_says_ready(boot_c: BootC) -> None:
    boot_c.require()
    show = boot_c.values("notifier.show")
    assert show["Result"] == "success", (show, boot_c.where())  # Type=notify without READY=1: "protocol"
    assert "Started notifier.service - kvmpod app notifier." in boot_c.journal()
    assert (boot_c.results / "notifier.done").exists()


def test_docker_image_group_falls_back_to_the_uid_and_its_implicit_volume_is_seeded(boot_c: BootC) -> None:
    boot_c.require()
    assert boot_c.read("docker.id") == "1234:1234\n", boot_c.where()
    assert boot_c.read("docker.seed") == "from the image\n", boot_c.where()
