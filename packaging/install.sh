#!/bin/sh
# Install (or upgrade) the spored agent from its bundle: offline, idempotent (running it twice
# leaves the same system, with the agent restarted on the installed code).
#
#   install.sh [--python PY] [--no-start] [BUNDLE_DIR]
#       BUNDLE_DIR: an extracted spored-bundle-<version>/ (default: this script's directory)
#   install.sh --sha256 HEX --bundle TARBALL [--python PY] [--no-start]
#       verifies TARBALL against HEX first (refuses on mismatch), extracts it, then installs
#       with the installer inside it.
#
# What it does: picks a Python >= 3.11 (installs python3.11 with dnf/yum/apt when there is none;
# the wheelhouse is pure Python, so any such Python on any architecture will do), creates a venv
# for this bundle (PREFIX/venv links to it) and installs the agent (the `spored` wheel and its
# locked dependencies) into it with `pip install --no-index` from the bundle's wheelhouse,
# links BINDIR/spored, creates the system user and group `spored` (and adds the image's default
# user to the group so it may run `spored complete`), installs the units, reloads systemd,
# enables spored.service, spored-poweroff.path and spored-failsafe.path and (re)starts them. Without a running systemd (an image being built, a
# chroot) the units are enabled offline and not started.
#
# Environment (defaults are the real locations):
#   SPORED_PYTHON       the Python to use (like --python)
#   SPORED_ROOT         install into this root instead of / (staging; venv scripts point into it)
#   SPORED_PREFIX       /opt/spored          SPORED_BINDIR   /usr/local/bin
#   SPORED_UNITDIR      /etc/systemd/system  SPORED_GROUP_MEMBERS  "ec2-user ubuntu admin"
set -eu
umask 022   # the venv and units must be readable by the unprivileged agent and by systemd

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
log() { printf 'install.sh: %s\n' "$*" >&2; }

python="${SPORED_PYTHON:-}"
sha256=''
tarball=''
start=yes
bundle_dir=''
while [ $# -gt 0 ]; do
    case "$1" in
        --python) [ $# -ge 2 ] || die "--python needs a value"; python=$2; shift 2 ;;
        --sha256) [ $# -ge 2 ] || die "--sha256 needs a value"; sha256=$2; shift 2 ;;
        --bundle) [ $# -ge 2 ] || die "--bundle needs a value"; tarball=$2; shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1; accepted: --python PY, --sha256 HEX --bundle TARBALL, --no-start" ;;
        *) bundle_dir=$1; shift ;;
    esac
done

root="${SPORED_ROOT:-}"
root="${root%/}"
prefix="${SPORED_PREFIX:-/opt/spored}"
bindir="${SPORED_BINDIR:-/usr/local/bin}"
unitdir="${SPORED_UNITDIR:-/etc/systemd/system}"
members="${SPORED_GROUP_MEMBERS:-ec2-user ubuntu admin}"
units="spored.service spored-poweroff.path spored-poweroff.service spored-failsafe.path
       spored-failsafe.service spored-failed.timer spored-failed.service"

# --- verify-then-extract mode ------------------------------------------------------------
if [ -n "$sha256" ] || [ -n "$tarball" ]; then
    [ -n "$sha256" ] && [ -n "$tarball" ] || die "--sha256 and --bundle go together"
    [ -f "$tarball" ] || die "--bundle $tarball: no such file"
    case "$sha256" in
        *[!0-9a-fA-F]*) die "--sha256: accepted: 64 hex digits" ;;
    esac
    [ "${#sha256}" -eq 64 ] || die "--sha256: accepted: 64 hex digits"
    want=$(printf '%s' "$sha256" | tr 'A-F' 'a-f')
    got=$(sha256sum "$tarball" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$tarball: sha256 $got does not match the expected $want; not installing"
    log "bundle sha256 verified"
    mkdir -p "$root$prefix"
    work=$(mktemp -d "$root$prefix/.bundle.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    tar -xzf "$tarball" -C "$work" --no-same-owner
    inner=$(find "$work" -mindepth 2 -maxdepth 2 -name install.sh -type f | head -n 1)
    [ -n "$inner" ] || die "$tarball: no install.sh inside"
    set -- "$(dirname "$inner")"
    [ "$start" = yes ] || set -- --no-start "$@"
    [ -z "$python" ] || set -- --python "$python" "$@"
    sh "$inner" "$@"
    exit $?
fi

[ -n "$bundle_dir" ] || bundle_dir=$(dirname "$0")
bundle_dir=$(cd "$bundle_dir" && pwd)
wheelhouse="$bundle_dir/wheelhouse"
[ -d "$wheelhouse" ] || die "$bundle_dir: no wheelhouse/ (pass an extracted spored bundle)"
for unit in $units; do
    [ -f "$bundle_dir/systemd/$unit" ] || die "$bundle_dir/systemd/$unit: missing from the bundle"
done

# --- a Python the wheelhouse supports ----------------------------------------------------
supported() {
    # $1: a python; true when its version >= 3.11 and, should the wheelhouse hold compiled wheels
    # (an older bundle), it has them for this Python.
    command -v "$1" >/dev/null 2>&1 || return 1
    tag=$("$1" -c 'import sys; v = sys.version_info; print(f"cp{v[0]}{v[1]}" if v >= (3, 11) else "")' \
          2>/dev/null) || return 1
    [ -n "$tag" ] || return 1
    for whl in "$wheelhouse"/*-cp3*.whl; do
        [ -e "$whl" ] || return 0
        case "$whl" in *"-$tag-"*) return 0 ;; esac
    done
    return 1
}
if [ -n "$python" ]; then
    supported "$python" || die "--python $python: not a Python >= 3.11 this bundle has wheels for"
else
    for candidate in python3.11 python3.12 python3.13 python3; do
        if supported "$candidate"; then python=$candidate; break; fi
    done
    if [ -z "$python" ]; then
        log "no suitable Python found: installing python3.11"
        if command -v dnf >/dev/null 2>&1; then dnf install -y python3.11 >&2
        elif command -v yum >/dev/null 2>&1; then yum install -y python3.11 >&2
        elif command -v apt-get >/dev/null 2>&1; then apt-get update >&2 && apt-get install -y python3.11 >&2
        else die "no Python >= 3.11 and no dnf, yum or apt-get to install one"
        fi
        python=python3.11
        supported "$python" || die "python3.11 was installed but is not usable"
    fi
fi
python=$(command -v "$python")
log "using $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"

# --- venv + offline install --------------------------------------------------------------
# One venv per bundle content (venvs/<id>, id from bundle.json, which lists every file's sha256)
# and PREFIX/venv a symlink to the current one: re-running with the same bundle reuses it, a new
# bundle gets a fresh venv and the switch is one rename. Old venvs are removed after the switch.
[ -f "$bundle_dir/bundle.json" ] || die "$bundle_dir: no bundle.json"
bundle_id=$(sha256sum "$bundle_dir/bundle.json" | cut -c1-16)
py_tag=$("$python" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
venvs="$root$prefix/venvs"
target="$venvs/$bundle_id-$py_tag"
if [ -f "$target/.complete" ] && "$target/bin/python" -c 'import spored' >/dev/null 2>&1; then
    log "this bundle is already installed in $target"
else
    pip_wheel=$(find "$wheelhouse" -maxdepth 1 -name 'pip-*.whl' | head -n 1)
    [ -n "$pip_wheel" ] || die "$wheelhouse: no pip wheel"
    project_wheel=$(find "$wheelhouse" -maxdepth 1 -name 'spored-*.whl' | head -n 1)
    [ -n "$project_wheel" ] || die "$wheelhouse: no spored wheel"
    rm -rf "$target"
    mkdir -p "$venvs"
    "$python" -m venv --without-pip "$target"
    # pip runs from its own wheel: the instance needs no ensurepip (Debian's python3-venv).
    "$target/bin/python" "$pip_wheel/pip" --disable-pip-version-check --no-input -q install \
        --no-index --find-links "$wheelhouse" --no-compile "$project_wheel" >&2
    # Byte-compile now, on all cores: the sandboxed agent cannot write __pycache__ later.
    # (a file that does not compile for this Python is skipped, as pip itself does)
    "$target/bin/python" -m compileall -q -j 0 "$target/lib" >/dev/null || true
    touch "$target/.complete"
fi
"$target/bin/spored" --help >/dev/null || die "$target/bin/spored does not run"
if [ -d "$root$prefix/venv" ] && [ ! -L "$root$prefix/venv" ]; then
    rm -rf "$root$prefix/venv"   # a plain venv from an older installer
fi
ln -sfn "venvs/$(basename "$target")" "$root$prefix/venv.new"
mv -Tf "$root$prefix/venv.new" "$root$prefix/venv"
mkdir -p "$root$bindir"
ln -sfn "$prefix/venv/bin/spored" "$root$bindir/spored.new"
mv -f "$root$bindir/spored.new" "$root$bindir/spored"
if [ -d "$bundle_dir/docs" ]; then
    mkdir -p "$root$prefix/docs"
    cp "$bundle_dir"/docs/* "$root$prefix/docs/"
fi

# --- user and group ----------------------------------------------------------------------
has_entry() { grep -q "^$1:" "$root/etc/$2" 2>/dev/null; }
if [ -n "$root" ]; then prefix_opt="--prefix $root"; else prefix_opt=''; fi
nologin=/usr/sbin/nologin
[ -x "$root$nologin" ] || nologin=/sbin/nologin
# shellcheck disable=SC2086
has_entry spored group || groupadd $prefix_opt --system spored
# shellcheck disable=SC2086
has_entry spored passwd || useradd $prefix_opt --system --gid spored --no-create-home \
    --home-dir /var/lib/spored --shell "$nologin" --comment "spored agent" spored
for member in $members; do
    if has_entry "$member" passwd; then
        # shellcheck disable=SC2086
        usermod $prefix_opt --append --groups spored "$member"
        log "added $member to group spored (may run 'spored complete')"
    fi
done

# --- units -------------------------------------------------------------------------------
mkdir -p "$root$unitdir"
for unit in $units; do
    sed "s#/opt/spored/#$prefix/#g" "$bundle_dir/systemd/$unit" > "$root$unitdir/$unit.new"
    chmod 0644 "$root$unitdir/$unit.new"
    mv -f "$root$unitdir/$unit.new" "$root$unitdir/$unit"
done
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable spored.service spored-poweroff.path spored-failsafe.path >&2
    if [ "$start" = yes ]; then
        systemctl start spored-poweroff.path spored-failsafe.path
        systemctl restart spored.service
        log "spored.service (re)started"
    fi
else
    systemctl --root="${root:-/}" enable spored.service spored-poweroff.path spored-failsafe.path >&2
    log "systemd is not running here: units installed and enabled, not started"
fi
for old in "$venvs"/*; do   # after the restart: the old agent ran from these
    [ "$old" = "$target" ] || rm -rf "$old"
done
log "installed spored into $prefix/venv ($(basename "$target"))"
