"""@frozen keeps the model what the frozen dataclasses made it: immutable values with equality and hash."""

import copy
import pickle

import pytest

from kvmpod.guest.unitfile import GeneratedFile, GeneratedLink
from kvmpod.pod.frozen import FrozenInstanceError, frozen, replace
from kvmpod.pod.model import App, AppSection, Mount, MountPoint, Pod, Volume
from kvmpod.pod.problems import Problem


def a_pod() -> Pod:
    return Pod(apps=(App("web", "example.com/web", AppSection(exec=("/bin/web",), mount_points=(
        MountPoint("data", "/var/data"),)), mounts=(Mount("data", "/var/data"),)),),
        volumes=(Volume("data", "host", source="/srv/data"),))


@pytest.mark.parametrize("value, name", [
    (Volume("data", "host", "/srv"), "source"),
    (a_pod(), "apps"),
    (Problem("apps[0].name", "is bad"), "message"),
    (GeneratedFile("a.mount", "text"), "content"),
])
def test_assigning_or_deleting_a_field_raises(value, name):
    before = getattr(value, name)
    with pytest.raises(FrozenInstanceError):
        setattr(value, name, "changed")
    with pytest.raises(AttributeError):
        delattr(value, name)
    with pytest.raises(AttributeError):
        value.not_a_field = 1  # no __dict__ to hide it in
    assert getattr(value, name) == before


def test_equal_values_compare_and_hash_equal():
    assert a_pod() == a_pod() and a_pod() is not a_pod()
    assert hash(a_pod()) == hash(a_pod())
    assert len({a_pod(), a_pod()}) == 1
    assert Volume("data", "host") == Volume(name="data", kind="host", read_only=None)


def test_values_that_differ_anywhere_compare_unequal():
    assert Volume("data", "host", read_only=True) != Volume("data", "host", read_only=False)
    assert a_pod() != replace(a_pod(), volumes=())
    # Same field values, different classes: not equal (as dataclasses), nor equal to a tuple.
    assert GeneratedFile("x", "y") != GeneratedLink("x", "y")
    assert MountPoint("a", "/a") != ("a", "/a", False)


def test_defaults_keywords_and_repr_read_like_the_declaration():
    volume = Volume("data", "empty")
    assert (volume.mode, volume.uid, volume.source) == (0o755, 0, None)
    assert repr(volume) == ("Volume(name='data', kind='empty', source=None, read_only=None, recursive=None, "
                            "mode=493, uid=0, gid=0)")
    assert eval(repr(volume)) == volume
    assert str(Problem("apps", "is required")) == "apps: is required"  # a class body's own method stays


@pytest.mark.parametrize("make, message", [
    (lambda: Volume("data"), "missing argument 'kind'"),
    (lambda: Volume("data", "host", name="x"), "multiple values for argument 'name'"),
    (lambda: Volume("data", "host", colour="red"), "unexpected argument 'colour'"),
    (lambda: MountPoint("a", "/a", False, "extra"), "takes 3 arguments but 4 were given"),
])
def test_wrong_arguments_are_refused_like_a_dataclass(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_replace_copy_and_pickle_give_equal_values():
    pod = a_pod()
    changed = replace(pod.volumes[0], read_only=True)
    assert changed.read_only is True and pod.volumes[0].read_only is None and changed.name == "data"
    assert copy.copy(pod) == pod and copy.deepcopy(pod) == pod
    assert pickle.loads(pickle.dumps(pod)) == pod


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="'b' without a default follows 'a'"):
        @frozen
        class Bad:
            a: int = 0
            b: int


def test_post_init_runs_and_subclasses_add_fields():
    @frozen
    class Port:
        number: int

        def __post_init__(self):
            if not 0 < self.number < 65536:
                raise ValueError(f"port {self.number} out of range")

    @frozen
    class NamedPort(Port):
        name: str = "http"

    with pytest.raises(ValueError, match="port 0"):
        Port(0)
    named = NamedPort(80)
    assert (named.number, named.name) == (80, "http") and named != Port(80)
    assert NamedPort._fields == ("number", "name")
    with pytest.raises(ValueError):
        NamedPort(70000, "x")


def test_a_class_body_eq_keeps_the_values_hashable():
    @frozen
    class Caseless:
        name: str

        def __eq__(self, other):
            return isinstance(other, Caseless) and self.name.lower() == other.name.lower()

    assert Caseless("A") == Caseless("a")
    assert isinstance(hash(Caseless("A")), int)
