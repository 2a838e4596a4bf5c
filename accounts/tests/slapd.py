"""A real slapd for LDAP tests: its own config, database and port under a temp dir, stopped at the end."""

import shutil
import socket
import subprocess
from pathlib import Path

from tests.lab.waiting import wait_until_listening

SUFFIX = "dc=uncloud,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "admin-secret"
SCHEMA_DIR = Path("/etc/ldap/schema")


def available() -> str | None:
    """None if slapd can run here, else why not."""
    for tool in ("slapd", "slappasswd", "ldapadd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (bin/test installs slapd and ldap-utils)"
    if not (SCHEMA_DIR / "inetorgperson.schema").exists():
        return "the LDAP schemas are missing (/etc/ldap/schema)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Slapd:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = _free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}/"
        self.process = None

    def start(self) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True)
        root_hash = subprocess.check_output([_tool("slappasswd"), "-s", ROOT_PASSWORD], text=True).strip()
        schemas = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis"))
        config = self.workdir / "slapd.conf"
        config.write_text(
            f"{schemas}\n"
            f"pidfile {self.workdir / 'slapd.pid'}\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {root_hash}\n"
            f"directory {data}\n"
        )
        subprocess.run([_tool("slaptest"), "-f", str(config), "-u"], check=True, capture_output=True)
        # -d 0 keeps slapd in the foreground, so we own its pid and stop it ourselves.
        self.process = subprocess.Popen(
            [_tool("slapd"), "-f", str(config), "-h", self.uri, "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        wait_until_listening(self.process, self.port, "slapd")

    def add(self, ldif: str) -> None:
        subprocess.run(
            [_tool("ldapadd"), "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif.encode(), check=True, capture_output=True,
        )

    def hash(self, password: str) -> str:
        return subprocess.check_output([_tool("slappasswd"), "-s", password], text=True).strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
