"""@frozen: immutable value classes, declared like frozen dataclasses but cheap to define at boot.

`dataclasses` costs the generator ~20-40 ms of every boot: it imports `inspect` (and with it `ast`,
`dis`, `tokenize`, `enum`...) and compiles every generated method with `exec`. The model only needs
what a frozen dataclass gives, so this decorator gives exactly that and nothing else:

    @frozen
    class Volume:
        name: str
        kind: str
        source: str | None = None

- fields are the class's annotations, in order (a base class's @frozen fields first; so no ClassVar); a field with
  a value in the class body has that default, and a field without one may not follow it;
- `__init__` takes the fields positionally or by keyword, like the dataclass's, then calls
  `__post_init__()` if the class has one (it may check values; it cannot assign them);
- instances are immutable (`__slots__`, no `__dict__`; assigning or deleting raises
  FrozenInstanceError, an AttributeError);
- `==` compares the fields of instances of the same class, `hash()` hashes the same tuple, so equal
  values hash equal; `repr()` reads like the call that makes the value;
- `replace(value, **changes)` is `dataclasses.replace`, and copy and pickle work.

A method the class body defines itself (`__str__`, `__repr__`, `__eq__`...) is kept. No mutable
defaults and no `field()`: every default is a value shared by all instances, so it must be
immutable (a tuple, not a list). Zero-argument `super()` does not work in a @frozen class's methods
(the class is remade with its slots, as `dataclass(slots=True)` does).
"""

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Raised on assigning or deleting a field of a @frozen instance."""


def frozen(cls: type) -> type:
    """Make `cls` an immutable value class with slots; see the module's docstring."""
    inherited = getattr(cls, "_fields", ())
    own = tuple(n for n in cls.__dict__.get("__annotations__", {}) if n not in inherited)
    fields = inherited + own
    defaults = dict(getattr(cls, "_defaults", {}))
    namespace = dict(cls.__dict__)
    for name in own:
        value = namespace.pop(name, _MISSING)
        if value is not _MISSING:
            defaults[name] = value
    first_default = next((i for i, n in enumerate(fields) if n in defaults), len(fields))
    required_after = [n for n in fields[first_default:] if n not in defaults]
    if required_after:
        raise TypeError(f"{cls.__qualname__}: field {required_after[0]!r} without a default follows "
                        f"{fields[first_default]!r}, which has one")
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = own
    namespace["_fields"] = fields
    namespace["_defaults"] = defaults
    namespace["__match_args__"] = fields
    namespace["_post_init"] = getattr(cls, "__post_init__", None)
    if namespace.get("__hash__", _MISSING) is None and "__eq__" in namespace:
        del namespace["__hash__"]  # set by Python for a body's own __eq__; hashing the fields stays right
    for name, method in _METHODS.items():
        namespace.setdefault(name, method)
    made = type(cls)(cls.__name__, cls.__bases__, namespace)
    made.__qualname__ = cls.__qualname__
    return made


def replace(value, **changes):
    """A copy of a @frozen value with some fields changed (dataclasses.replace)."""
    cls = type(value)
    for name in cls._fields:
        if name not in changes:
            changes[name] = getattr(value, name)
    return cls(**changes)


def _init(self, *args, **kwargs):
    cls = type(self)
    fields = cls._fields
    if len(args) > len(fields):
        raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments but {len(args)} were given")
    set_field = object.__setattr__
    for name, value in zip(fields, args):
        set_field(self, name, value)
    if len(args) < len(fields) or kwargs:
        defaults = cls._defaults
        for name in fields[len(args):]:
            value = kwargs.pop(name, _MISSING)
            if value is _MISSING:
                value = defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            set_field(self, name, value)
        if kwargs:
            name = next(iter(kwargs))
            problem = "got multiple values for argument" if name in fields else "got an unexpected argument"
            raise TypeError(f"{cls.__name__}() {problem} {name!r}")
    if cls._post_init is not None:
        cls._post_init(self)


def _values(self) -> tuple:
    return tuple([getattr(self, name) for name in self._fields])


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self):
    return hash(_values(self))


def _repr(self):
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
    return f"{type(self).__qualname__}({fields})"


def _setattr(self, name, value):
    raise FrozenInstanceError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")


def _delattr(self, name):
    raise FrozenInstanceError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")


def _reduce(self):
    # copy, deepcopy and pickle remake the value through __init__, never by assigning its slots.
    return type(self), _values(self)


_METHODS = {"__init__": _init, "__eq__": _eq, "__hash__": _hash, "__repr__": _repr,
            "__setattr__": _setattr, "__delattr__": _delattr, "__reduce__": _reduce}
