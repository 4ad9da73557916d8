"""Read `kvmpod.*` settings from the kernel command line."""


def split_cmdline(text: str) -> list[str]:
    """Words as the kernel and systemd see them: split on white space, double quotes group."""
    words, word, quoted, started = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            started = True
    if started:
        words.append("".join(word))
    return words


def kvmpod_settings(cmdline: str) -> dict[str, str]:
    """`kvmpod.KEY=VALUE` words as {KEY: VALUE}; the last one wins, as systemd does."""
    settings = {}
    for word in split_cmdline(cmdline):
        key, _, value = word.partition("=")
        if key.startswith("kvmpod."):
            settings[key.removeprefix("kvmpod.")] = value
    return settings


def debug_requested(cmdline: str) -> bool:
    return any(w in ("systemd.log_level=debug", "kvmpod.debug") for w in split_cmdline(cmdline))
