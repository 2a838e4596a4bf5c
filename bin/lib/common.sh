# Shared by bin/run and bin/test: find Python, make the virtualenv, install Debian packages.
# Sourced, not run. Everything is idempotent and quick the second time.

UNCLOUD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$UNCLOUD_ROOT/.venv"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

# Debian packages, installed only when missing (non-interactive).
ensure_debian_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! is_root; then
    say "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    return 1
  fi
  say "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

python_for_venv() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  say "uncloud needs Python 3.11 or newer"; return 1
}

# The virtualenv, reinstalled only when the requirements file changed.
ensure_venv() {
  local requirements="$1" stamp python
  if [ ! -x "$VENV/bin/python" ]; then
    python=$(python_for_venv) || return 1
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      ensure_debian_packages python3-venv || return 1
      "$python" -m venv "$VENV" || return 1
    fi
  fi
  stamp="$VENV/.installed-$(basename "$requirements")"
  local digest
  digest=$(cat "$UNCLOUD_ROOT/requirements.txt" "$requirements" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    if is_root; then ensure_debian_packages "${PYTHON_BUILD_PACKAGES[@]}" || return 1; fi
    say "installing Python packages from $(basename "$requirements")"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -c "import django, celery, paramiko" || { say "pip install failed"; return 1; }
    echo "$digest" > "$stamp"
  fi
}

# What a hypervisor (and the lab that imitates several) needs.
HYPERVISOR_PACKAGES=(qemu-system-x86 qemu-utils qemu-block-extra radvd nftables iproute2 socat procps kmod
                     busybox-static syslinux syslinux-common mtools dosfstools genisoimage tayga)

# What pip needs to build python-ldap (django-auth-ldap) from source.
PYTHON_BUILD_PACKAGES=(gcc python3-dev libldap2-dev libsasl2-dev)

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
