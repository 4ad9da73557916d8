"""The generator's edges: all-or-nothing writes, the kernel log, usage errors."""

import os

from kvmpod.guest.generator import main
from kvmpod.guest.kmsg import Log

MANIFEST = """{"acKind": "PodManifest", "acVersion": "0.8.11",
 "apps": [{"name": "web", "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
           "mounts": [{"volume": "data", "path": "/data"}, {"volume": "cache", "path": "/cache"}]}],
 "volumes": [{"name": "data", "kind": "host", "source": "/srv/data"},
             {"name": "cache", "kind": "host", "source": "/srv/cache"}]}"""
OUT = "/run/systemd/generator"


def tree(directory: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(top, name), directory)
                  for top, dirs, files in os.walk(directory) for name in dirs + files)


def test_a_name_already_taken_fails_the_run_and_removes_what_it_wrote(fs, capsys):
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=MANIFEST)
    # Another generator already wrote this unit; kvmpod must neither overwrite it nor leave a half set.
    fs.create_file(f"{OUT}/mnt-data.mount", contents="someone else's\n")

    status = main(["--root", "/guest", OUT])

    assert status == 1
    assert tree(OUT) == ["mnt-data.mount"]
    assert open(f"{OUT}/mnt-data.mount").read() == "someone else's\n"
    assert capsys.readouterr().err == (
        f"kvmpod-generator: cannot write {OUT}/mnt-data.mount: File exists; nothing of this run was left behind\n")


def test_a_clean_run_writes_the_whole_set(fs):
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=MANIFEST)
    fs.create_dir(OUT)

    assert main(["--root", "/guest", OUT]) == 0
    assert tree(OUT) == [
        "mnt-cache.mount", "mnt-data.mount", "multi-user.target.wants", "multi-user.target.wants/web.service",
        "opt-stage2-web-rootfs-cache.mount", "opt-stage2-web-rootfs-data.mount", "web.service",
        "web.service.requires", "web.service.requires/opt-stage2-web-rootfs-cache.mount",
        "web.service.requires/opt-stage2-web-rootfs-data.mount"]


def test_errors_at_boot_go_to_the_kernel_log_with_name_and_pid(fs):
    fs.create_file("/dev/kmsg")
    log = Log("kvmpod-generator", use_kmsg=True, verbose=False)

    log.error("apps[0].mounts[0].volume: no volume named 'db'")
    log.debug("not shown without -v")

    assert open("/dev/kmsg").read() == f"<3>kvmpod-generator[{os.getpid()}]: apps[0].mounts[0].volume: no volume named 'db'\n"


def test_without_a_kernel_log_errors_go_to_stderr(fs, capsys):
    Log("kvmpod-generator", use_kmsg=True, verbose=True).warning("w")

    assert capsys.readouterr().err == "kvmpod-generator: w\n"


def test_usage_errors_exit_2(capsys):
    assert main(["a", "b"]) == 2
    assert capsys.readouterr().err.startswith("kvmpod-generator: give one output directory or three")
    assert main(["--manifest", "relative.json", "/out"]) == 2
    assert main(["--frobnicate", "/out"]) == 2
