"""Host volumes as lkvm and QEMU arguments: rkt's VolumesToKvmDiskArgs table, then kvmpod's rules."""

import pytest
from helpers import empty, host, pod

from kvmpod.host.hypervisor.volumes import checked_host_volumes, lkvm_9p_args, qemu_volume_args
from kvmpod.pod.problems import InvalidInput
from kvmpod.pod.staging import staged_host_volumes


def lkvm(p) -> list[str]:
    return lkvm_9p_args(p, staged_host_volumes(p))


# ---------------------------------------------------------------- the seed's table (rkt kvm_test.go)

def test_host_volumes_only():
    assert lkvm(pod([host("foo", "/foo")])) == ["--9p=/foo,foo"]


def test_empty_volume_is_ignored():
    assert lkvm(pod([empty("foo")])) == []


def test_order_is_kept_and_empty_volumes_skipped():
    p = pod([host("foo", "/foo"), empty("baz"), host("bar", "/bar")])
    assert lkvm(p) == ["--9p=/foo,foo", "--9p=/bar,bar"]


def test_two_host_volumes():
    assert lkvm(pod([host("foo", "/foo"), host("bar", "/bar")])) == ["--9p=/foo,foo", "--9p=/bar,bar"]


# ---------------------------------------------------------------- lkvm's comma

def test_lkvm_refuses_a_comma_in_the_source_naming_the_field():
    p = pod([host("ok", "/ok"), host("data", "/srv/a,b")])
    with pytest.raises(InvalidInput) as error:
        lkvm(p)
    [problem] = error.value.problems
    assert problem.field == "volumes[1].source"
    assert "comma" in problem.message and "/srv/a,b" in problem.message


def test_long_volume_name_gets_the_shared_short_tag():
    name = "a-very-long-volume-name-that-is-over-thirty-two-bytes"
    [arg] = lkvm(pod([host(name, "/data")]))
    tag = arg.split(",", 1)[1]
    assert tag.startswith("kvmpod_") and len(tag) == 31


def test_app_volume_is_exported_under_its_stage_name():
    apps = [{"name": "web", "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
             "mounts": [{"volume": "data", "path": "/data",
                         "appVolume": {"name": "data", "kind": "host", "source": "/srv/web"}}]}]
    p = pod([host("data", "/srv/pod")], apps)
    assert lkvm(p) == ["--9p=/srv/pod,data", "--9p=/srv/web,web.data"]


# ---------------------------------------------------------------- QEMU

def test_qemu_read_only_volume_gets_readonly_on_and_commas_are_doubled():
    p = pod([host("db", "/srv/db", readOnly=True), host("out", "/srv/a,b c")])
    assert qemu_volume_args(staged_host_volumes(p), "mapped-xattr") == [
        # read-only: exported from its read-only staged bind (volume_staging), readonly=on as well
        "-fsdev", "local,id=vol0,path=/run/kvmpod/staging/vol0,security_model=mapped-xattr,multidevs=remap,readonly=on",
        "-device", "virtio-9p-pci,fsdev=vol0,mount_tag=db",
        "-fsdev", "local,id=vol1,path=/srv/a,,b c,security_model=mapped-xattr,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=vol1,mount_tag=out",
    ]


def test_qemu_default_security_model_is_mapped_xattr():
    args = qemu_volume_args(staged_host_volumes(pod([host("db", "/srv/db")])))
    assert args[1] == "local,id=vol0,path=/srv/db,security_model=mapped-xattr,multidevs=remap"


def test_qemu_empty_volumes_produce_nothing():
    assert qemu_volume_args(staged_host_volumes(pod([empty("scratch")]))) == []


# ---------------------------------------------------------------- sources must exist

def test_missing_source_is_an_error_naming_the_volume():
    p = pod([host("db", "/exists"), host("logs", "/missing")])
    with pytest.raises(InvalidInput) as error:
        checked_host_volumes(p, is_dir=lambda path: path == "/exists")
    [problem] = error.value.problems
    assert problem.field == "volumes[1].source"
    assert "'logs'" in problem.message and "/missing" in problem.message


def test_existing_sources_pass(fs):
    fs.create_dir("/srv/db")
    p = pod([host("db", "/srv/db")])
    assert [s.tag for s in checked_host_volumes(p)] == ["db"]
