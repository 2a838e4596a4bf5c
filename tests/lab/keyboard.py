"""Typing on a guest's keyboard through QMP (send-key), as a customer types at the VM's console: the
demo guest runs a root shell on tty1, so a test can do there what a customer would do by hand."""

import json
import socket
import time

SHIFTED = {"_": "minus", ">": "dot", "<": "comma", "&": "7", "|": "backslash", ":": "semicolon", '"': "apostrophe",
           "!": "1", "$": "4", "*": "8", "(": "9", ")": "0", "+": "equal", "?": "slash", "~": "grave_accent"}
PLAIN = {" ": "spc", "\n": "ret", "-": "minus", ".": "dot", "/": "slash", ",": "comma", ";": "semicolon",
         "'": "apostrophe", "=": "equal", "\\": "backslash", "`": "grave_accent"}


def keys_of(character: str) -> list[str]:
    if character.isascii() and character.isalpha():
        return ["shift", character.lower()] if character.isupper() else [character]
    if character.isdigit():
        return [character]
    if character in SHIFTED:
        return ["shift", SHIFTED[character]]
    if character in PLAIN:
        return [PLAIN[character]]
    raise ValueError(f"no key for {character!r}")


def type_text(qmp_socket, text: str, *, pause_s: float = 0.02) -> None:
    """Press the keys of `text` in order, one QMP connection for all of them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(qmp_socket))
        reader = connection.makefile("rb")
        reader.readline()  # the greeting

        def execute(command, arguments=None):
            connection.sendall(json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
                               .encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:  # anything else is an event
                    assert "return" in reply, reply
                    return reply["return"]

        execute("qmp_capabilities")
        for character in text:
            execute("send-key", {"keys": [{"type": "qcode", "data": key} for key in keys_of(character)],
                                 "hold-time": 10})
            time.sleep(pause_s)  # the guest's PS/2 queue is short: let it drain
