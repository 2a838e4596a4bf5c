"""A command runner for the host program's unit tests: it records every argv, answers from a table
the test wrote, and fails on any command the test did not expect (the way Ubicloud's rhizome specs
stub their `r` helper). Only the external commands are replaced; the program's own logic, its file
writes under a temp state_dir and its JSON parsing all run for real, without root.
"""
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest


class UnexpectedCommand(AssertionError):
    pass


@dataclass
class Expectation:
    argv: list[str]
    stdout: str = ""
    stderr: str = ""
    returncode: int = 0
    input_text: str | None = None
    used: bool = False


@dataclass
class CommandTable:
    expected: list[Expectation] = field(default_factory=list)
    ran: list[list[str]] = field(default_factory=list)
    unexpected: list[list[str]] = field(default_factory=list)

    def expect(self, *argv, stdout="", stderr="", returncode=0, input_text=None):
        """The command (program name, not path, then its arguments) runs once and answers this."""
        self.expected.append(Expectation([str(part) for part in argv], stdout, stderr, returncode, input_text))

    def run(self, argv, *args, input=None, **kwargs):
        command = [os.path.basename(str(argv[0])), *[str(part) for part in argv[1:]]]
        self.ran.append(command)
        for expectation in self.expected:
            if not expectation.used and expectation.argv == command:
                if expectation.input_text is not None:
                    assert input == expectation.input_text, (command, input)
                expectation.used = True
                text = kwargs.get("text") or kwargs.get("universal_newlines")
                stdout, stderr = expectation.stdout, expectation.stderr
                if not text:
                    stdout, stderr = stdout.encode(), stderr.encode()
                return subprocess.CompletedProcess(argv, expectation.returncode, stdout, stderr)
        self.unexpected.append(command)
        raise UnexpectedCommand(f"a command no test expected: {command}")

    def unused(self):
        return [expectation.argv for expectation in self.expected if not expectation.used]


def _refuse_popen(argv, *args, **kwargs):
    raise UnexpectedCommand(f"a process no test expected: {argv}")


@pytest.fixture
def commands(monkeypatch):
    """Replace subprocess.run (every module of the program calls it through the subprocess module)
    and Popen with the table; every program is "installed" in /usr/bin. At the end, a command that
    was not expected, or an expected one that never ran, fails the test."""
    table = CommandTable()
    monkeypatch.setattr(subprocess, "run", table.run)
    monkeypatch.setattr(subprocess, "Popen", _refuse_popen)
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    yield table
    assert table.unexpected == [], f"unexpected commands: {table.unexpected}"
    assert table.unused() == [], f"expected commands that never ran: {table.unused()}"
