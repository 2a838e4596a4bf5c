"""The uncloud command-line client. It needs only click, httpx and PyYAML (never Django), and
imports httpx and PyYAML only when a command needs them, so `uncloud --help` starts fast."""

__version__ = "0.1.0"
