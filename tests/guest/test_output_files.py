"""write_outputs on a real file system: exact bytes, the umask's mode, exclusive create, all or nothing."""

import os
import stat

import pytest

from kvmpod.guest.output import write_outputs
from kvmpod.guest.unitfile import GeneratedFile, GeneratedLink

OUTPUTS = [
    GeneratedFile("app.service", "[Service]\nExecStart=/bin/caf\u00e9 100%%\n"),
    GeneratedFile("app.service.d/50-kvmpod.conf", "[Unit]\nAfter=x.mount\n"),
    GeneratedLink("app.service.requires/x.mount", "../x.mount"),
    GeneratedFile("x.mount", "[Mount]\nWhat=x\n" * 3000),  # larger than one pipe or page
]


def tree(directory) -> dict[str, object]:
    found = {}
    for base, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(base, name)
            key = os.path.relpath(path, directory)
            if os.path.islink(path):
                found[key] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                found[key] = ("file", open(path, "rb").read(), stat.S_IMODE(os.stat(path).st_mode))
            else:
                found[key] = ("dir",)
    return found


def test_files_hold_the_exact_utf8_bytes_with_the_umasks_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        write_outputs(OUTPUTS, str(tmp_path))
    finally:
        os.umask(umask)
    got = tree(tmp_path)
    for output in OUTPUTS:
        if isinstance(output, GeneratedFile):
            assert got[output.path] == ("file", output.content.encode("utf-8"), 0o644)
        else:
            assert got[output.path] == ("link", output.target)
    assert set(got) == {o.path for o in OUTPUTS} | {"app.service.d", "app.service.requires"}


def test_a_clash_leaves_only_what_was_there_before(tmp_path):
    (tmp_path / "x.mount").write_text("someone else's\n")
    before = tree(tmp_path)
    with pytest.raises(FileExistsError):
        write_outputs(OUTPUTS, str(tmp_path))  # x.mount comes last: everything before it is undone
    assert tree(tmp_path) == before
