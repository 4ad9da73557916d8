"""The limits kvmpod checks up front, each derived from systemd's or the kernel's, so that a
manifest that breaks one is an input error naming its field, never a failed write at boot.

- A unit name is at most 255 bytes (systemd's UNIT_NAME_MAX is 256 with the NUL), and so is any
  file name the generator writes (the kernel's NAME_MAX). The longest name made from an app's name
  is its reaper under `kvmpod run`, `kvmpod-reaper-<app>.service` (guest/lifecycle.py), so an app
  name has at most 233 bytes.
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
