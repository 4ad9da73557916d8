import os

from kvmpod.host.pods import reserved_room


def test_the_reserve_holds_real_blocks_and_release_is_idempotent(tmp_path):
    reserved_room.reserve(str(tmp_path), 3 * 8192 + 100)
    st = os.stat(tmp_path / reserved_room.NAME)
    assert st.st_size == 3 * 8192 + 100 and st.st_blocks * 512 >= st.st_size  # not sparse
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        reserved_room.release(dir_fd=fd)
        reserved_room.release(dir_fd=fd)
    finally:
        os.close(fd)
    reserved_room.release(str(tmp_path))
    assert os.listdir(tmp_path) == []
