"""The .deb and the RPM built from this tree: their file lists, metadata, lintian, and the
packaged generator run from the extracted .deb.

Needs the Debian packages dpkg (dpkg-deb), lintian, rpm (rpmbuild, rpm) and python3
(/usr/bin/python3, the generator's interpreter). A missing tool fails the test, never skips it.
"""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
SOURCE = REPO / "generator" / "kvmpod"
EXAMPLE_ROOT = SOURCE / "examples" / "appc-pod" / "root"
DRY_RUN_EXPECTED = REPO / "tests" / "guest" / "generator_cases" / "dry-run-appc-example" / "expected.stdout"
PKGDIR = "/usr/lib/python3/dist-packages"
GENERATOR = "/usr/lib/systemd/system-generators/kvmpod-generator"
ENTER_UNITS = {"/usr/lib/systemd/system/kvmpod-enter@.socket", "/usr/lib/systemd/system/kvmpod-enter@.service",
               "/usr/lib/udev/rules.d/60-kvmpod-enter.rules"}
CLI = "/usr/bin/kvmpod"
MAN_PAGES = {"/usr/share/man/man1/kvmpod.1.gz", "/usr/share/man/man8/kvmpod-generator.8.gz"}
DEB_DOCS = {"/usr/share/doc/kvmpod/copyright", "/usr/share/doc/kvmpod/changelog.gz"}
# Lintian tags accepted at warning or error level, each explained in packaging/README.md. None now.
ACCEPTED_LINTIAN_TAGS: set[str] = set()


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; install the Debian package '{package}' "
                    "(the README's test command should)")
    return path


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stderr}"
    return result


def version() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["metadata"]["version"]


def package_files() -> set[str]:
    """What the package directory must hold: every module and every file of the example pods."""
    files = {p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts}
    files |= {p for p in (SOURCE / "examples").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return {f"{PKGDIR}/kvmpod/{p.relative_to(SOURCE)}" for p in files}


def parents(paths: set[str]) -> set[str]:
    dirs = set()
    for path in paths:
        while (path := path.rpartition("/")[0]):
            dirs.add(path)
    return dirs


def built_path(script: str, outdir: Path, suffix: str) -> Path:
    """Run packaging/SCRIPT OUTDIR; it must print exactly one line, the package's path."""
    out = run([str(PACKAGING / script), str(outdir)]).stdout
    lines = out.splitlines()
    assert len(lines) == 1, f"{script} printed {out!r}, not one path"
    path = Path(lines[0])
    assert path.is_absolute() and path.is_file() and path.name.endswith(suffix), path
    assert path.parent == outdir.resolve()
    return path


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    require("dpkg-deb", "dpkg")
    return built_path("build-deb", tmp_path_factory.mktemp("deb"), "_all.deb")


@pytest.fixture(scope="module")
def deb_listing(deb) -> dict[str, str]:
    """{path: "mode owner/group"} from dpkg-deb -c; directories end with '/'."""
    listing = {}
    for line in run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines():
        mode, owner, _size, _date, _time, name = line.split(maxsplit=5)
        listing[name.removeprefix(".")] = f"{mode} {owner}"
    return listing


@pytest.fixture(scope="module")
def extracted(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extracted")
    run(["dpkg-deb", "-x", str(deb), str(root)])
    return root


@pytest.fixture(scope="module")
def lintian(deb) -> subprocess.CompletedProcess:
    """One lintian run for the session: it is slow. All levels, so the report shows everything."""
    require("lintian", "lintian")
    return subprocess.run(["lintian", "--display-level", ">=pedantic", "--display-experimental",
                           "--no-tag-display-limit", "--fail-on", "none", str(deb)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def rpm(tmp_path_factory) -> Path:
    require("rpmbuild", "rpm")
    require("rpm", "rpm")
    return built_path("build-rpm", tmp_path_factory.mktemp("rpm"), ".noarch.rpm")


def test_deb_holds_exactly_the_expected_files(deb_listing):
    files = package_files() | {GENERATOR, CLI} | MAN_PAGES | DEB_DOCS | ENTER_UNITS
    assert f"{PKGDIR}/kvmpod/examples/appc-pod/root/etc/kvmpod/pod.json" in files
    listed_files = {p for p in deb_listing if not p.endswith("/")}
    listed_dirs = {p.rstrip("/") for p in deb_listing if p.endswith("/")} - {""}
    assert sorted(listed_files - files) == [], "files in the .deb that should not be there"
    assert sorted(files - listed_files) == [], "files missing from the .deb"
    assert listed_dirs == parents(files), "directories in the .deb beyond the files' parents"
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in deb_listing), \
        "bytecode belongs to postinst (py3compile), not to the .deb"


def test_deb_modes_and_owners(deb_listing):
    for path, entry in deb_listing.items():
        mode, owner = entry.split()
        assert owner == "root/root", path
        if path.endswith("/"):
            assert mode == "drwxr-xr-x", path
        elif path in (GENERATOR, CLI):
            assert mode == "-rwxr-xr-x", path
        else:
            assert mode == "-rw-r--r--", path


def test_deb_control_fields(deb):
    def field(name: str) -> str:
        return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()

    assert field("Package") == "kvmpod"
    assert field("Version") == version()
    assert field("Architecture") == "all"
    assert field("Depends") == "python3 (>= 3.11~)"
    # kvmpod run boots QEMU; an installed kvmpod builds its stage1 with debootstrap (installed_tree.py)
    assert field("Recommends") == "qemu-system-x86, debootstrap"
    assert field("Suggests") == "python3-pystemd"
    info = run(["dpkg-deb", "-I", str(deb)]).stdout
    assert "postinst" in info and "prerm" in info


def test_maintainer_scripts_byte_compile_and_clean(extracted, deb, tmp_path):
    run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")])
    postinst = (tmp_path / "DEBIAN" / "postinst").read_text()
    prerm = (tmp_path / "DEBIAN" / "prerm").read_text()
    assert "py3compile -p kvmpod" in postinst
    assert "py3clean -p kvmpod" in prerm
    for script in ("postinst", "prerm"):
        run(["sh", "-n", str(tmp_path / "DEBIAN" / script)])


def test_launcher_interpreter_lines(extracted):
    """The generator's launcher is a POSIX shell script (it unpacks units the host rendered without
    starting Python) that execs the Python generator as `python3 -IS` otherwise."""
    generator = (extracted / GENERATOR.lstrip("/")).read_text()
    assert generator.splitlines()[0] == "#!/bin/sh"
    run(["sh", "-n", str(extracted / GENERATOR.lstrip("/"))])
    assert "\nexec /usr/bin/python3 -IS -c " in generator
    assert (extracted / CLI.lstrip("/")).read_text().splitlines()[0] == "#!/usr/bin/python3 -I"


def test_extracted_generator_prints_the_example_units(extracted):
    require("/usr/bin/python3", "python3")
    generator = extracted / GENERATOR.lstrip("/")
    # Run as systemd would: exec the script, so its interpreter line is what starts it.
    result = run([str(generator), "--dry-run", "--root", str(EXAMPLE_ROOT)], cwd="/")
    assert "==> mnt-dbvolume.mount <==" in result.stdout
    assert result.stdout == DRY_RUN_EXPECTED.read_text()
    assert result.stderr == ""


def test_extracted_generator_imports_the_extracted_package(extracted, tmp_path):
    """The launcher finds the package beside itself, not one installed elsewhere on the machine:
    a copy of the extracted tree whose generator module announces its own path."""
    copy = tmp_path / "copy"
    shutil.copytree(extracted, copy, symlinks=True)
    module = copy / PKGDIR.lstrip("/") / "kvmpod" / "guest" / "generator.py"
    module.write_text(module.read_text() + "\nsys.stderr.write(f'loaded {__file__}\\n')\n")
    result = run([str(copy / GENERATOR.lstrip("/")), "--dry-run", "--root", str(EXAMPLE_ROOT)], cwd="/")
    assert f"loaded {module}\n" in result.stderr, "kvmpod.guest.generator was not loaded from the extracted .deb"


def test_extracted_cli_launcher(extracted):
    cli = extracted / CLI.lstrip("/")
    compile(cli.read_text(), str(cli), "exec")
    result = run([str(cli), "--help"], cwd="/")
    assert "usage: kvmpod" in result.stdout


def test_lintian_reports_no_errors_or_warnings(lintian):
    assert lintian.returncode == 0, f"lintian failed to run:\n{lintian.stderr}"
    tags = [line for line in lintian.stdout.splitlines() if line.startswith(("E: ", "W: "))]
    unexplained = [t for t in tags if t.split()[2] not in ACCEPTED_LINTIAN_TAGS]
    assert unexplained == [], "lintian errors or warnings (fix them, or explain them in " \
                              "packaging/README.md and accept them here):\n" + "\n".join(unexplained)


def test_rpm_has_the_deb_layout(rpm, deb_listing):
    listed = set(run(["rpm", "-qlp", str(rpm)]).stdout.splitlines())
    docs = {p for p in listed if p.startswith(("/usr/share/doc/", "/usr/share/licenses/"))}
    bytecode = {p for p in listed if "/__pycache__" in p}
    deb_files = {p for p in deb_listing if not p.endswith("/")} - DEB_DOCS
    rpm_files = {p for p in listed - docs - bytecode if p not in parents(listed)}  # no directories
    assert sorted(rpm_files ^ deb_files) == [], "the RPM's files differ from the .deb's"
    modules = {p for p in deb_files if p.endswith(".py")}
    expected_bytecode = {
        f"{p.rpartition('/')[0]}/__pycache__/{p.rpartition('/')[2][:-3]}.cpython-{''.join(pyver())}.pyc"
        for p in modules}
    assert {p for p in bytecode if not p.endswith("/__pycache__")} == expected_bytecode
    assert any(p.endswith("/LICENSE") for p in docs)


def test_rpm_metadata(rpm):
    def query(fmt: str) -> str:
        return run(["rpm", "-qp", "--qf", fmt, str(rpm)]).stdout

    assert query("%{NAME} %{VERSION} %{ARCH}") == f"kvmpod {version()} noarch"
    requires = run(["rpm", "-qp", "--requires", str(rpm)]).stdout.splitlines()
    assert f"python(abi) = {'.'.join(pyver())}" in requires
    assert run(["rpm", "-qp", "--suggests", str(rpm)]).stdout.split() == ["python3-pystemd"]


def pyver() -> tuple[str, str]:
    """The version of /usr/bin/python3, which byte-compiles the RPM's modules."""
    out = run([require("/usr/bin/python3", "python3"), "-c",
               "import sys; print(*sys.version_info[:2])"]).stdout
    major, minor = out.split()
    return major, minor
