#!/bin/sh
# test_package.sh — the Debian package, end to end: CPack builds it from a built tree, dpkg-deb
# shows the files in place (binaries, proto, a manual page per command, the unit, the conffile),
# the maintainer scripts and sane dependencies; it unpacks into a clean root where the binary
# runs, the manual pages render without warnings and `systemd-analyze verify` accepts the unit;
# lintian finds no errors. Usage: test_package.sh SOURCE_DIR BUILD_DIR (ctest -L package).
set -eu
src=$1
build=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$build/man.stamp" ] || fail "$build/man.stamp is missing: build the serval_man target (cmake --build $build)"
[ -x "$build/bin/serval" ] || fail "no $build/bin/serval"
commands=$("$build/bin/serval" help-man --list) && [ -n "$commands" ] \
    || fail "$build/bin/serval help-man --list names no commands"

tmp=$(mktemp -d /tmp/serval-package-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---- build it -----------------------------------------------------------------------------
( cd "$tmp" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 ) \
    || { cat "$tmp/cpack.log" >&2; fail "cpack -G DEB failed ('could not write new RPATH' means a binary is older than the build's configuration: rebuild it)"; }
deb=$(ls "$tmp"/out/serval_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "cpack wrote no serval_*.deb (see above)"
echo "package: $(basename "$deb"), $(stat -c %s "$deb") bytes"

# ---- control: name, dependencies, scripts, conffile ---------------------------------------
info=$(dpkg-deb --info "$deb")
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = serval ] || fail "Package is '$(field Package)', not serval"
depends=$(field Depends)
echo "depends: $depends"
for lib in libc6 libgrpc29 libmicrohttpd12 libjansson4 libprotobuf-c1 libtomlplusplus3 adduser; do
    echo "$depends" | grep -Eq "(^|, )$lib( |,|$)" || fail "Depends lacks $lib: $depends"
done
echo "$depends" | grep -q -- "-dev" && fail "Depends names a -dev package: $depends"
for s in postinst prerm postrm conffiles; do
    echo "$info" | grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$s" || fail "no $s in the control archive"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/serval/serval.toml \
    || fail "/etc/serval/serval.toml is not a conffile"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -q "adduser --system" \
    || fail "postinst does not create the serval system user"

# ---- data: every file where it belongs --------------------------------------------------------
contents=$(dpkg-deb --contents "$deb")
has() { echo "$contents" | grep -Eq " \./$1\$" || fail "the package has no /$1"; }
has usr/bin/serval
has usr/bin/serval-bench
has usr/share/serval/serval.proto
has usr/share/serval/serval.toml
has etc/serval/serval.toml
has lib/systemd/system/serval.service
has usr/share/man/man1/serval.1.gz
for cmd in $commands; do
    has "usr/share/man/man1/serval-$cmd.1.gz"
    "$build/bin/serval" help-man "$cmd" >/dev/null 2>&1 \
        || echo "note: serval-$cmd(1) is help2man's rendering of its --help: 'serval $cmd' does not parse with cli/flags.h"
done
echo "$contents" | grep -q " \./usr/local/" && fail "files under /usr/local in a package"

# ---- unpacked into a clean root -----------------------------------------------------------
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/serval" version | grep -q "^serval " || fail "the packaged serval does not run"
cmp -s "$root/etc/serval/serval.toml" "$src/docs/serval.toml" \
    || fail "/etc/serval/serval.toml differs from docs/serval.toml"
unit="$root/lib/systemd/system/serval.service"
grep -qx "ExecStart=/usr/bin/serval serve" "$unit" || fail "unit's ExecStart is not /usr/bin/serval: $(grep ExecStart "$unit")"
for k in Type=notify "ExecReload=/bin/kill -HUP \$MAINPID" User=serval ProtectSystem=strict NoNewPrivileges=yes ReadWritePaths=/var/lib/serval \
         StateDirectory=serval Restart=on-failure PrivateTmp=yes ProtectHome=yes; do
    grep -qx "$k" "$unit" || fail "the unit lacks $k"
done
# The pages render (man's warnings are lintian's check too) and carry the flag tables.
for page in "$root"/usr/share/man/man1/*.1.gz; do
    warn=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
    [ -z "$warn" ] || fail "$(basename "$page"): $warn"
done
# Every option --help lists is on the page (they come from one table: this is what "never
# drifts" means to a reader).
for cmd in $commands; do
    "$build/bin/serval" help-man "$cmd" >/dev/null 2>&1 || continue
    page=$(zcat "$root/usr/share/man/man1/serval-$cmd.1.gz")
    help=$("$root/usr/bin/serval" "$cmd" --help) || fail "serval $cmd --help failed"
    flags=$(printf '%s\n' "$help" | sed -n 's/^  \(--[a-z0-9-]*\).*/\1/p')
    [ -n "$flags" ] || fail "serval $cmd --help lists no options"
    for flag in $flags; do
        roff=$(printf '%s' "$flag" | sed 's/-/\\-/g')
        printf '%s\n' "$page" | grep -qF ".B $roff" || fail "serval-$cmd(1) lacks $flag, which --help lists"
    done
done

# systemd-analyze verify: the unit as installed, its ExecStart resolved in the unpacked root; no
# systemd needs to be running (this works in a container). The root gets what a system has
# around the unit: the targets it is ordered against (the host's), /bin/kill and the user.
# Any line verify prints (an unknown key, a bad value, a missing binary) fails the test.
if command -v systemd-analyze >/dev/null && [ -d /lib/systemd/system ]; then
    cp /lib/systemd/system/*.target "$root/lib/systemd/system/"
    mkdir -p "$root/bin" && cp /bin/kill "$root/bin/"                      # ExecReload's
    mkdir -p "$root/etc" && getent passwd root > "$root/etc/passwd"
    echo "serval:x:999:999::/var/lib/serval:/usr/sbin/nologin" >> "$root/etc/passwd"
    verify=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$root" --man=no serval.service 2>&1) \
        || fail "systemd-analyze verify: $verify"
    [ -z "$verify" ] || { echo "$verify" >&2; fail "systemd-analyze verify printed the above"; }
    echo "systemd-analyze verify: clean"
    # The hardening, rated as `systemd-analyze security` rates a running unit (lower is better).
    sec=$(SYSTEMD_LOG_COLOR=0 systemd-analyze security --offline=yes --root="$root" serval.service 2>&1 | tail -n 1)
    echo "systemd-analyze security: $sec"
    echo "$sec" | grep -q "exposure level for serval.service: [0-9.]* OK" || fail "the unit is not rated OK: $sec"
else
    echo "systemd-analyze: not installed, unit not verified"
fi

# ---- cmake --install with another prefix ----------------------------------------------------
inst="$tmp/inst"
DESTDIR="$inst" cmake --install "$build" --prefix /opt/serval >"$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
for f in opt/serval/bin/serval opt/serval/share/serval/serval.proto opt/serval/share/man/man1/serval-serve.1.gz \
         opt/serval/lib/systemd/system/serval.service etc/serval/serval.toml; do
    [ -f "$inst/$f" ] || fail "cmake --install --prefix /opt/serval put no /$f"
done
grep -qx "ExecStart=/opt/serval/bin/serval serve" "$inst/opt/serval/lib/systemd/system/serval.service" \
    || fail "the installed unit does not start /opt/serval/bin/serval"
echo "data_dir = \"/srv/serval\"  # edited" >> "$inst/etc/serval/serval.toml"
DESTDIR="$inst" cmake --install "$build" --prefix /opt/serval >"$tmp/install.log" 2>&1
grep -q "# edited" "$inst/etc/serval/serval.toml" || fail "a second cmake --install overwrote an edited /etc/serval/serval.toml"

# ---- the maintainer scripts, run for real in a private mount namespace ----------------------
# /etc, /var/lib and the unit directory are overlays there, so the user, the directories and the token file they
# make never reach this machine. Needs root and unshare(1); skipped without them.
ctrl="$tmp/ctrl"
mkdir -p "$ctrl" && dpkg-deb -e "$deb" "$ctrl"
for s in postinst prerm postrm; do sh -n "$ctrl/$s" || fail "$s: syntax error"; done
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    ov="$tmp/ov"
    mkdir -p "$ov/etc-up" "$ov/etc-work" "$ov/lib-up" "$ov/lib-work" "$ov/unit-up" "$ov/unit-work"
    unshare -m sh -eu -c '
        ov=$1 root=$2 ctrl=$3
        export DPKG_MAINTSCRIPT_PACKAGE=serval DPKG_ROOT=   # as dpkg runs them
        mount -t overlay overlay -o lowerdir=/etc,upperdir=$ov/etc-up,workdir=$ov/etc-work /etc
        mount -t overlay overlay -o lowerdir=/var/lib,upperdir=$ov/lib-up,workdir=$ov/lib-work /var/lib
        ! getent passwd serval >/dev/null || { echo "this machine already has a serval user"; exit 1; }
        units=$(readlink -f /lib/systemd/system)
        mount -t overlay overlay -o lowerdir=$units,upperdir=$ov/unit-up,workdir=$ov/unit-work $units
        mkdir -p /etc/serval && cp "$root/etc/serval/serval.toml" /etc/serval/   # what dpkg unpacks
        cp "$root/lib/systemd/system/serval.service" $units/
        sh "$ctrl/postinst" configure "" >/dev/null
        # Not enabled by the first install: there is no model yet (docs/DEPLOY.md).
        [ ! -e /etc/systemd/system/multi-user.target.wants/serval.service ] || { echo "the first install enabled the unit"; exit 1; }
        uid=$(id -u serval); [ "$uid" -lt 1000 ] || { echo "serval is not a system user (uid $uid)"; exit 1; }
        [ "$(getent passwd serval | cut -d: -f7)" = /usr/sbin/nologin ] || { echo "serval has a login shell"; exit 1; }
        [ "$(stat -c "%U %a" /var/lib/serval)" = "serval 700" ] || { echo "/var/lib/serval: $(stat -c "%U %a" /var/lib/serval)"; exit 1; }
        [ "$(stat -c "%U %a" /etc/serval/tokens)" = "serval 600" ] || { echo "/etc/serval/tokens: $(stat -c "%U %a" /etc/serval/tokens)"; exit 1; }
        grep -Eqx "[0-9a-f]{64}" /etc/serval/tokens || { echo "/etc/serval/tokens holds no 64-hex token"; exit 1; }
        before=$(cat /etc/serval/tokens)
        systemctl enable serval.service 2>/dev/null                               # the admin
        sh "$ctrl/postinst" configure 0.0.9 >/dev/null                            # an upgrade
        [ "$(cat /etc/serval/tokens)" = "$before" ] || { echo "an upgrade replaced the token"; exit 1; }
        [ -L /etc/systemd/system/multi-user.target.wants/serval.service ] || { echo "an upgrade disabled the unit"; exit 1; }
        # The packaged binary, as the serval user, with the packaged config: the settings the
        # unit will run with.
        cfg=$(setpriv --reuid=serval --regid=serval --init-groups "$root/usr/bin/serval" serve --print-config)
        echo "$cfg" | grep -q "^data_dir = \"/var/lib/serval\"" || { echo "data_dir: $cfg"; exit 1; }
        sh "$ctrl/prerm" remove && sh "$ctrl/postrm" remove && sh "$ctrl/postrm" purge
        [ ! -e /etc/serval/tokens ] || { echo "purge left /etc/serval/tokens"; exit 1; }
        [ ! -L /etc/systemd/system/multi-user.target.wants/serval.service ] || { echo "purge left the unit enabled"; exit 1; }
    ' sh "$ov" "$root" "$ctrl" || fail "the maintainer scripts (above)"
    echo "maintainer scripts: user, /var/lib/serval, token file, not enabled at install, upgrade keeps token and enablement, purge cleans up"
else
    echo "maintainer scripts: checked for syntax only (run as root with unshare to run them)"
fi

# ---- lintian ------------------------------------------------------------------------------
if command -v lintian >/dev/null; then
    lint=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
    echo "$lint" | sed 's/^/lintian: /'
    echo "$lint" | grep -q "^E: " && fail "lintian reports errors"
else
    echo "lintian: not installed (apt-get install lintian), skipped"
fi
echo "ok"
