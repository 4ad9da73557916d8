"""A minimal QMP client (QEMU Machine Protocol, docs/interop/qmp-spec): enough to press the VM's
ACPI power button (`system_powerdown`), which the guest's logind turns into a clean poweroff, or to
end QEMU (`quit`)."""

import json
import socket


class QMPError(RuntimeError):
    pass


def qmp_command(socket_path: str, command: str, timeout: float = 5.0, arguments: dict | None = None) -> dict:
    """Connect, negotiate capabilities, run one command (with its arguments), return its reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            reader = sock.makefile("rb")

            def reply() -> dict:
                while True:  # asynchronous events may come before the reply
                    line = reader.readline()
                    if not line:
                        raise QMPError(f"QEMU closed {socket_path} before replying to {command}")
                    message = json.loads(line)
                    if "return" in message or "error" in message or "QMP" in message:
                        return message

            reply()  # the greeting
            for execute in ("qmp_capabilities", command):
                request = {"execute": execute, **({"arguments": arguments} if arguments and execute == command else {})}
                sock.sendall(json.dumps(request).encode() + b"\r\n")
                message = reply()
                if "error" in message:
                    raise QMPError(f"QEMU refused {execute}: {message['error'].get('desc', message['error'])}")
            return message
    except (OSError, ValueError) as error:
        raise QMPError(f"cannot talk to QEMU at {socket_path}: {error}") from None
