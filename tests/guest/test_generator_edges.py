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
        f"kvmpod-generator: cannot write {OUT}/mnt-data.mount: File exists; removed what this run had written\n"
        "kvmpod-generator: no app is staged in /opt/stage2: nothing to refuse\n")


def test_after_a_failed_write_it_says_it_refused_the_staged_apps(fs, capsys):
    """Issue 22: the generator fails closed after a failed write (refusal drop-ins), and says so."""
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=MANIFEST)
    fs.create_dir("/guest/opt/stage2/web/rootfs")
    fs.create_dir("/guest/opt/stage2/other/rootfs")
    fs.create_file(f"{OUT}/mnt-data.mount", contents="someone else's\n")

    assert main(["--root", "/guest", OUT]) == 1

    assert tree(OUT) == ["mnt-data.mount", "other.service.d", "other.service.d/50-kvmpod-invalid-manifest.conf",
                         "web.service.d", "web.service.d/50-kvmpod-invalid-manifest.conf"]
    assert "AssertPathExists=!/" in open(f"{OUT}/web.service.d/50-kvmpod-invalid-manifest.conf").read()
    assert capsys.readouterr().err == (
        f"kvmpod-generator: cannot write {OUT}/mnt-data.mount: File exists; removed what this run had written\n"
        "kvmpod-generator: wrote the refusal drop-in (50-kvmpod-invalid-manifest.conf) for other, web: these apps "
        "will not start\n")


def test_after_a_failed_write_it_names_the_apps_it_could_not_refuse(fs, capsys):
    fs.create_file("/guest/etc/kvmpod/pod.json", contents=MANIFEST)
    fs.create_dir("/guest/opt/stage2/web/rootfs")
    fs.create_dir("/guest/opt/stage2/other/rootfs")
    fs.create_file(f"{OUT}/mnt-data.mount", contents="someone else's\n")
    fs.create_file(f"{OUT}/other.service.d", contents="a file where the drop-in directory goes\n")

    assert main(["--root", "/guest", OUT]) == 1

    err = capsys.readouterr().err
    assert "wrote the refusal drop-in (50-kvmpod-invalid-manifest.conf) for web: these apps will not start\n" in err
    assert err.endswith("kvmpod-generator: could not refuse other: they may start without their volumes\n")


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
