"""9p mount options: the kernel command line's overrides merge key by key, but read-only is the
manifest's to decide: `ro` or `rw` given there are ignored."""

from kvmpod.guest.mount_units import ninep_mount_options

DEFAULT = "trans=virtio,version=9p2000.L,cache=mmap,msize=262144"


def test_defaults():
    assert ninep_mount_options(None, read_only=False) == DEFAULT
    assert ninep_mount_options(None, read_only=True) == DEFAULT + ",ro"


def test_ro_from_the_command_line_does_not_make_a_volume_read_only():
    assert ninep_mount_options("ro,cache=loose", read_only=False) == "trans=virtio,version=9p2000.L,cache=loose,msize=262144"


def test_rw_from_the_command_line_does_not_make_a_read_only_volume_writable():
    assert ninep_mount_options("rw,noatime", read_only=True) == DEFAULT + ",noatime,ro"
