"""Shared setup for the end-to-end suite: the e2e marker, kept logs, and the timing summary."""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import pytest

from .kvmpod_guest import ROOTS

_FAILED_MODULES = pytest.StashKey[set[str]]()
_BOOTS = pytest.StashKey[list["BootRecord"]]()
_E2E_SPAN = pytest.StashKey[list[float]]()  # [first e2e test start, last e2e test end]


@dataclass(frozen=True)
class BootRecord:
    label: str
    accelerator: str
    qemu_seconds: float
    setup_seconds: float  # image (if built), root copy, install, staging, boot
    logs: Path
    install: str


def pytest_configure(config: pytest.Config) -> None:
    # Registered here so `-m "not e2e"` works without touching setup.cfg.
    config.addinivalue_line("markers", "e2e: boots a QEMU guest (slow; needs root, qemu, debootstrap)")
    config.stash[_FAILED_MODULES] = set()
    config.stash[_BOOTS] = []
    config.stash[_E2E_SPAN] = []


def record_boot(config: pytest.Config, label: str, accelerator: str, qemu_seconds: float, setup_seconds: float,
                logs: Path, install: str = "") -> None:
    config.stash[_BOOTS].append(BootRecord(label, accelerator or "(did not start)", qemu_seconds, setup_seconds,
                                           logs, install or "(not installed)"))


@dataclass
class BootState:
    """What one module's boot left for its tests: the reason it could not run, or its outputs."""

    LABEL: ClassVar[str]
    logs: Path
    error: str | None = None
    accelerator: str = ""
    seconds: float = 0.0
    install: str = ""

    def output_dir(self) -> Path | None:
        """Where the guest's findings are on the host (None until the boot ran)."""
        raise NotImplementedError

    def where(self) -> str:
        return f"(logs kept in {self.logs}: console.log, journal.txt, qemu.argv, and what the guest wrote)"

    def require(self) -> None:
        if self.error:
            pytest.fail(f"boot {self.LABEL} did not run: {self.error}\n{self.where()}", pytrace=False)

    def read(self, name: str) -> str:
        out = self.output_dir()
        assert out is not None, f"boot {self.LABEL} left no output {self.where()}"
        path = out / name
        assert path.is_file(), f"{path} missing {self.where()}"
        return path.read_text()


def module_boot(request: pytest.FixtureRequest, state: BootState, run_boot: Callable) -> Iterator[BootState]:
    """The body of a module-scoped boot fixture: boot once, share the result with the module's tests.

    A failure to build or boot is kept in `state.error` and reported by every test (FAILED with
    the reason, never an error or a skip); `run_boot` is a generator that boots on its first step
    and removes the guest root copy on its second.
    """
    started = time.monotonic()
    run = run_boot(state, ROOTS / state.logs.name)
    try:
        next(run)
    except Exception:
        state.error = traceback.format_exc(limit=-3)
        run = None
    record_boot(request.config, state.LABEL, state.accelerator, state.seconds, time.monotonic() - started, state.logs,
                state.install)
    try:
        yield state
    finally:
        if run is not None:
            next(run, None)  # removes the guest root copy
        forget_logs_unless_failed(request, state.logs)


def forget_logs_unless_failed(request: pytest.FixtureRequest, logs: Path) -> None:
    """A boot's kept logs are removed when every test of its module passed."""
    if request.node.nodeid not in request.config.stash[_FAILED_MODULES]:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        print(f"\nkvmpod-e2e: logs of the failing boot kept in {logs}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    e2e = item.get_closest_marker("e2e") is not None
    started = time.monotonic()
    yield
    if e2e:
        span = item.config.stash[_E2E_SPAN]
        if not span:
            span += [started, started]
        span[1] = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if outcome.get_result().failed:
        item.config.stash[_FAILED_MODULES].add(item.nodeid.split("::")[0])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from . import guestimage

    span = config.stash[_E2E_SPAN]
    if not span:
        return
    tr = terminalreporter
    tr.section("kvmpod e2e timing")
    wall = span[1] - span[0]
    cold = guestimage.BUILT_THIS_RUN
    if cold is not None:
        tr.write_line(f"cold guest image build: {cold:.1f} s (built in this run)")
        tr.write_line(f"warm e2e suite wall time: {wall - cold:.1f} s (total {wall:.1f} s with the build)")
    else:
        recorded = _recorded_build_seconds(guestimage)
        tr.write_line(f"cold guest image build: {recorded} (recorded in build-info.json; cached this run)")
        tr.write_line(f"warm e2e suite wall time: {wall:.1f} s")
    tr.write_line(_collect_stage1s())
    for boot in config.stash[_BOOTS]:
        tr.write_line(f"boot {boot.label}: accelerator {boot.accelerator}, QEMU ran {boot.qemu_seconds:.1f} s, "
                      f"setup+boot {boot.setup_seconds:.1f} s, kvmpod from {boot.install}, logs {boot.logs}"
                      + ("" if boot.logs.exists() else " (removed: its tests passed)"))


def _recorded_build_seconds(guestimage) -> str:
    try:
        entry = guestimage.CACHE_ROOT / guestimage.recipe_hash()
        return f"{guestimage.build_seconds(guestimage._paths(entry)):.1f} s"
    except (OSError, ValueError, KeyError) as error:
        return f"unknown ({error})"


def _collect_stage1s() -> str:
    """Issue 22: the suite leaves no more than one stage1 of its own behind: `kvmpod stage1 gc` (the
    newest and its base stay, and entries running pods use or used within the hour, maybe other
    checkouts' on this machine)."""
    from kvmpod.host.images import stage1
    from kvmpod.host.pod_commands import stage1_upkeep

    try:
        removed = stage1_upkeep("gc", "1h", stage1.CACHE_ROOT).splitlines()
    except OSError as error:
        return f"stage1 cache gc: {error}"
    return f"stage1 cache gc: removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}" + (
        f" ({', '.join(r.split()[1] for r in removed)})" if removed else "")
