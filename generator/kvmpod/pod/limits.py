"""The limits kvmpod checks up front, each derived from systemd's or the kernel's, so that a
manifest that breaks one is an input error naming its field, never a failed write at boot.

- A unit name is at most 255 bytes (systemd's UNIT_NAME_MAX is 256 with the NUL), and so is any
  file name the generator writes (the kernel's NAME_MAX). The longest name made from an app's name
  is its reaper under `kvmpod run`, `kvmpod-reaper-<app>.service` (guest/lifecycle.py; its record
  units, `kvmpod-ended-`/`kvmpod-failed-<app>.service`, are as long), so an app name has at most 233
  bytes.
- A volume is staged at /mnt/<stage name>: a stage name (a volume name, `<app>.<volume>` for an
  appVolume, `<app>-<mount point>` for an implicit one) is one path component, at most 255 bytes.
  Units named after it (`kvmpod-empty-volume-<name>.service`, mount units) take systemd's hashed
  form when they would be longer, as systemd itself does for long paths.
- A path must not end in an odd run of backslashes: systemd reads a unit file line that does as
  continued on the next line, and a path is written as it is (Where=, WorkingDirectory=, …).
- A path is at most 4,095 bytes (PATH_MAX with the NUL) and each component 255 (NAME_MAX); a path
  must not hold a control character (systemd cannot hold a newline in a unit file line, and the
  others would be mangled in messages and names).
"""

NAME_MAX = 255
PATH_MAX = 4096
MAX_APP_NAME_BYTES = NAME_MAX - len("kvmpod-reaper-.service")  # 233
MAX_VOLUME_NAME_BYTES = NAME_MAX  # also the limit of every stage name


def path_problem(path: str) -> str | None:
    """Why `path` cannot be used, as the end of a sentence; None when it can."""
    if any(c < " " or c == "\x7f" for c in path):
        return "contains a control character (a newline, NUL, tab, …); rename it"
    if path.endswith(" "):
        return "ends in white space, which systemd strips from a unit's values; rename it"
    if (len(path) - len(path.rstrip("\\"))) % 2:
        return "ends in a backslash, which a unit file cannot hold (systemd joins the next line onto it); rename it"
    if len(path.encode("utf-8", "surrogatepass")) >= PATH_MAX:
        return f"is longer than {PATH_MAX - 1} bytes (PATH_MAX); use a shorter path"
    if any(len(c.encode("utf-8", "surrogatepass")) > NAME_MAX for c in path.split("/")):
        return f"has a component longer than {NAME_MAX} bytes (NAME_MAX); use a shorter name"
    return None


def stage_name_problem(name: str) -> str | None:
    if len(name.encode()) > NAME_MAX:
        return (f"makes the staging directory /mnt/{name[:40]}… longer than {NAME_MAX} bytes; "
                "use shorter app or volume names")
    return None


# systemd mounts these over an app's root (MountAPIVFS=, PrivateDevices=): no file of the image is there.
API_FILESYSTEMS = ("proc", "sys", "dev")


def program_problem(program: str) -> str | None:
    """Why systemd 252 would refuse `program` as an ExecStart= path (load-fragment.c
    config_parse_exec: string_is_safe, "Executable path specifies a directory", path_is_valid or
    filename_is_valid), or could never run it (a path in /proc, /sys, /dev); None when it may.
    The end of a sentence about exec[0]."""
    if not program.strip():
        return "is empty or white space only; give the program's path in the image, or its name on the app's PATH"
    if any(c < " " or c == "\x7f" or c in "\"'\\" for c in program):
        return ("contains a quote, a backslash or a control character, which systemd refuses in a program's path "
                "(\"Executable name contains special characters\"); rename the program")
    if program.endswith("/"):
        return "ends in '/', which names a directory (systemd: \"Executable path specifies a directory\"); give the " \
               "program's file"
    if len(program.encode("utf-8", "surrogatepass")) >= PATH_MAX:
        return f"is longer than {PATH_MAX - 1} bytes (PATH_MAX); use a shorter path"
    if any(len(c.encode("utf-8", "surrogatepass")) > NAME_MAX for c in program.split("/")):
        return f"has a component longer than {NAME_MAX} bytes (NAME_MAX), which systemd refuses; use a shorter name"
    if program.startswith("/"):
        parts: list[str] = []
        for part in program.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        if not parts:
            return "names the root directory; give the program's file"
        if parts[0] in API_FILESYSTEMS:
            return (f"is in /{parts[0]}, which systemd mounts over the app's root: no file of the image is there; "
                    "give the program's path in the image")
    return None
