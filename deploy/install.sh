#!/bin/sh
# Installs cctelegram on a device over ssh, or removes it.
#
#   deploy/install.sh [--uninstall] [--binary PATH] user@host
#
# It asks the device for its architecture (uname -m) and init system
# (systemd, OpenRC or OpenWrt's procd), picks dist/cctelegram-<target> (built
# by deploy/build-all) unless --binary is given, copies the binary, the
# matching service file and the example config, and sets them up:
#
#   user and group cctelegram            created if missing
#   /usr/local/bin/cctelegram            (/usr/bin/cctelegram on OpenWrt)
#   the service file                     /etc/systemd/system/cctelegram.service
#                                        or /etc/init.d/cctelegram; enabled
#   /etc/cctelegram/config.toml          0600 cctelegram, only if none exists:
#                                        an existing config is never touched
#   /etc/cctelegram/mcp.toml             0640 root:cctelegram, only if none
#                                        exists: the paths and the health
#                                        address, no secrets, for members of
#                                        the group to run `cctelegram mcp`
#   /var/lib/cctelegram/{events,responses,state}
#                                        events/ is 2770: programs in the
#                                        cctelegram group write events there;
#                                        responses/ is 2750 and the daemon
#                                        writes response files 0640, so the
#                                        group reads them
#
# The service is (re)started when the config is valid and has a bot token;
# a fresh install stops short of that and says what to edit. Running it
# again is safe: what is already in place is left as it is.
#
# --uninstall stops and disables the service and removes the binary and the
# service file. It keeps the config, /var/lib/cctelegram (queued events,
# state) and the user, and prints how to remove them.
#
# The same file runs on the device: it is fed to `sh -s` over ssh with
# `--on-device ACTION`, so what runs there is exactly what was checked here,
# and nothing of it is left behind. Logins that are not root use `sudo -n`.
#
# Environment:
#   SSH, SCP          the commands to use (default: ssh, scp); they may carry
#                     options, e.g. SSH="ssh -p 2222" SCP="scp -P 2222"
#   CCTELEGRAM_DIST   where the built binaries are (default: dist/ beside deploy/)
#   CCTELEGRAM_ROOT   on the device: a prefix for every path it touches (for
#                     tests and image staging); empty on a real device
#
# Exit codes: 0 done, 64 bad usage, 1 anything else (including a config that
# does not pass `cctelegram check-config`: installed, but not started).

set -eu

SERVICE=cctelegram
CONF_DIR=/etc/cctelegram
CONF=$CONF_DIR/config.toml
MCP_CONF=$CONF_DIR/mcp.toml
DATA=/var/lib/cctelegram

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

# Where each init system wants things. Sets BIN, UNIT_SRC (a file in deploy/),
# UNIT_DST and UNIT_MODE. Used on both sides, so they cannot disagree.
layout() {
	case $1 in
	systemd)
		BIN=/usr/local/bin/cctelegram
		UNIT_SRC=cctelegram.service
		UNIT_DST=/etc/systemd/system/cctelegram.service
		UNIT_MODE=0644
		;;
	openrc)
		BIN=/usr/local/bin/cctelegram
		UNIT_SRC=cctelegram.openrc
		UNIT_DST=/etc/init.d/cctelegram
		UNIT_MODE=0755
		;;
	procd)
		# /usr/local/bin is not on OpenWrt's PATH.
		BIN=/usr/bin/cctelegram
		UNIT_SRC=cctelegram.procd
		UNIT_DST=/etc/init.d/cctelegram
		UNIT_MODE=0755
		;;
	*)
		die "unsupported init system '$1' (supported: systemd, OpenRC, OpenWrt procd)"
		;;
	esac
}

# ---------------------------------------------------------------------------
# On the device. Everything below runs as root (or through sudo -n) with
# R=$CCTELEGRAM_ROOT in front of every path.

# Echoes a step, then runs it.
run() {
	printf '  + %s\n' "$*"
	"$@"
}

note() { printf '  = %s\n' "$*"; }

device_probe() {
	echo "arch=$(uname -m)"
	# /run/systemd/system is sd_booted(3)'s test: systemd is running, not
	# merely installed. OpenWrt's release file is checked before OpenRC's
	# openrc-run, which is only a hint that OpenRC is the init system.
	if [ -d "$R/run/systemd/system" ]; then
		echo "init=systemd"
	elif [ -f "$R/etc/openwrt_release" ] || [ -x "$R/sbin/procd" ]; then
		echo "init=procd"
	elif [ -x "$R/sbin/openrc-run" ]; then
		echo "init=openrc"
	else
		echo "init=unknown"
	fi
	echo "uid=$(id -u)"
}

# Prints the first free id from 200 up that is neither a uid nor a gid, for
# systems without useradd or adduser (OpenWrt's default BusyBox).
free_id() {
	n=200
	while grep -q "^[^:]*:[^:]*:$n:" "$R/etc/passwd" "$R/etc/group" 2>/dev/null; do
		n=$((n + 1))
	done
	echo "$n"
}

ensure_user() {
	if id -u "$SERVICE" >/dev/null 2>&1; then
		note "user $SERVICE exists"
		return 0
	fi
	nologin=/bin/false
	for s in /usr/sbin/nologin /sbin/nologin; do
		if [ -x "$R$s" ]; then
			nologin=$s
			break
		fi
	done
	have_group=no
	if grep -q "^$SERVICE:" "$R/etc/group" 2>/dev/null; then
		have_group=yes
	fi
	if command -v useradd >/dev/null 2>&1; then
		[ "$have_group" = yes ] || run groupadd --system "$SERVICE"
		run useradd --system --gid "$SERVICE" --home-dir "$DATA" --no-create-home \
			--shell "$nologin" --comment "cctelegram daemon" "$SERVICE"
	elif command -v adduser >/dev/null 2>&1 && command -v addgroup >/dev/null 2>&1; then
		# BusyBox and Alpine.
		[ "$have_group" = yes ] || run addgroup -S "$SERVICE"
		run adduser -S -D -H -h "$DATA" -s "$nologin" -G "$SERVICE" -g "cctelegram daemon" "$SERVICE"
	else
		# No user tools: write the entries the way OpenWrt's own packages do.
		uid=$(free_id)
		if [ "$have_group" = no ]; then
			note "adding group $SERVICE ($uid) to /etc/group"
			echo "$SERVICE:x:$uid:" >>"$R/etc/group"
		fi
		gid=$(grep "^$SERVICE:" "$R/etc/group" | cut -d: -f3)
		note "adding user $SERVICE ($uid) to /etc/passwd"
		echo "$SERVICE:x:$uid:$gid:cctelegram daemon:$DATA:$nologin" >>"$R/etc/passwd"
		if [ -f "$R/etc/shadow" ]; then
			echo "$SERVICE:*:0:0:99999:7:::" >>"$R/etc/shadow"
		fi
	fi
}

# install_file SRC DST MODE [CHECK]: copies unless DST already has these
# bytes. The new file is renamed into place, so a running binary is
# replaced, not overwritten (which fails with "text file busy"); CHECK, if
# given, must accept the new file first, so a bad upgrade leaves the old one.
install_file() {
	if [ -f "$R$2" ] && command -v cmp >/dev/null 2>&1 && cmp -s "$1" "$R$2"; then
		note "$2 is up to date"
		run chmod "$3" "$R$2"
		return 0
	fi
	run mkdir -p "$(dirname "$R$2")"
	run cp "$1" "$R$2.new"
	run chmod "$3" "$R$2.new"
	if [ -n "${4:-}" ] && ! "$4" "$R$2.new"; then
		rm -f "$R$2.new"
		die "$2 was left as it was: the new one does not run on this device (wrong architecture?)"
	fi
	run mv -f "$R$2.new" "$R$2"
}

# A binary for the wrong CPU fails here, not at the next boot.
runs_here() {
	run "$1" --version
}

# ensure_dir PATH MODE OWNER: creates it if missing, then sets owner and mode
# (both idempotent, so a second run changes nothing).
ensure_dir() {
	[ -d "$R$1" ] || run mkdir -p "$R$1"
	run chown "$3" "$R$1"
	run chmod "$2" "$R$1"
}

# What to tell the admin to type, per init system.
start_hint() {
	case $1 in
	systemd) echo "systemctl restart $SERVICE" ;;
	openrc) echo "rc-service $SERVICE restart" ;;
	procd) echo "/etc/init.d/$SERVICE restart" ;;
	esac
}

# procd init scripts are run through /etc/rc.common, which is what their
# `#!/bin/sh /etc/rc.common` line does; spelled out so that R applies.
procd_rc() {
	run /bin/sh "$R/etc/rc.common" "$R$UNIT_DST" "$@"
}

device_install() {
	init=$1
	stage=$2
	layout "$init"
	trap 'rm -rf "$stage"' EXIT

	say "installing $SERVICE for $init"
	ensure_user
	install_file "$stage/cctelegram" "$BIN" 0755 runs_here
	install_file "$stage/$UNIT_SRC" "$UNIT_DST" "$UNIT_MODE"

	ensure_dir "$CONF_DIR" 0755 0:0
	fresh=no
	if [ -e "$R$CONF" ]; then
		note "keeping $CONF (an existing config is never overwritten)"
	else
		# umask first: the file is never readable by others, not even briefly.
		old_umask=$(umask)
		umask 077
		run cp "$stage/config.example.toml" "$R$CONF.new"
		umask "$old_umask"
		run chown "$SERVICE:$SERVICE" "$R$CONF.new"
		run chmod 0600 "$R$CONF.new"
		run mv -f "$R$CONF.new" "$R$CONF"
		fresh=yes
	fi

	# `cctelegram mcp` run by a member of the group cannot read config.toml
	# (it holds the token); it needs only where the files are and where
	# /health answers. Keep listen in step with config.toml's [health].
	if [ -e "$R$MCP_CONF" ]; then
		note "keeping $MCP_CONF"
	else
		note "writing $MCP_CONF"
		printf '%s\n' \
			'# For cctelegram mcp --config /etc/cctelegram/mcp.toml, run by a member' \
			'# of the cctelegram group: paths and the health address only, no secrets.' \
			'[paths]' \
			"events_dir = \"$DATA/events\"" \
			"responses_dir = \"$DATA/responses\"" \
			'' \
			'[health]' \
			'listen = "127.0.0.1:8080"   # as in config.toml' >"$R$MCP_CONF.new"
		run chown "0:$SERVICE" "$R$MCP_CONF.new"
		run chmod 0640 "$R$MCP_CONF.new"
		run mv -f "$R$MCP_CONF.new" "$R$MCP_CONF"
	fi

	# The data directory: the group may enter it and write events; response
	# files are written 0640 by the daemon, so the group reads them (the
	# daemon's umask is 027); state is the daemon's alone.
	ensure_dir "$DATA" 0750 "$SERVICE:$SERVICE"
	ensure_dir "$DATA/events" 2770 "$SERVICE:$SERVICE"
	ensure_dir "$DATA/responses" 2750 "$SERVICE:$SERVICE"
	ensure_dir "$DATA/state" 0700 "$SERVICE:$SERVICE"

	case $init in
	systemd)
		run systemctl daemon-reload
		run systemctl enable "$SERVICE.service"
		;;
	openrc)
		if [ -L "$R/etc/runlevels/default/$SERVICE" ]; then
			note "$SERVICE is in runlevel default"
		else
			run rc-update add "$SERVICE" default
		fi
		;;
	procd)
		procd_rc enable
		;;
	esac

	# Start only what can run: check-config exits 78 on a bad config, and
	# notes (exit 0) a missing bot token, which `run` refuses.
	printf '  + %s check-config --config %s\n' "$BIN" "$CONF"
	result=0
	problems=$("$R$BIN" check-config --config "$R$CONF" 2>&1 >/dev/null) || result=$?
	if [ "$result" -ne 0 ]; then
		printf '%s\n' "$problems" >&2
		warn "$CONF does not pass check-config; $SERVICE is installed but not started."
		warn "Fix it, then: $(start_hint "$init")"
		exit 1
	fi
	case $problems in
	*"no bot token"*)
		if [ "$fresh" = yes ]; then
			note "installed the example config: set bot_token and allowed_users in $CONF"
		else
			note "$CONF has no bot token yet"
		fi
		note "then: $(start_hint "$init")"
		;;
	*)
		[ -z "$problems" ] || printf '%s\n' "$problems"
		case $init in
		systemd) run systemctl restart "$SERVICE.service" ;;
		openrc) run rc-service "$SERVICE" restart ;;
		procd) procd_rc restart ;;
		esac
		;;
	esac

	say "done. Programs that send events join the group $SERVICE:"
	note "usermod -aG $SERVICE USER   (BusyBox: addgroup USER $SERVICE)"
	note "and write *.json files into $DATA/events (see the README),"
	note "or run: cctelegram mcp --config $MCP_CONF"
}

device_uninstall() {
	init=$1
	layout "$init"
	say "removing $SERVICE ($init)"
	if [ -e "$R$UNIT_DST" ]; then
		case $init in
		systemd)
			run systemctl disable --now "$SERVICE.service" || warn "could not stop $SERVICE"
			run rm -f "$R$UNIT_DST"
			run systemctl daemon-reload
			;;
		openrc)
			run rc-service "$SERVICE" stop || warn "could not stop $SERVICE"
			if [ -L "$R/etc/runlevels/default/$SERVICE" ]; then
				run rc-update del "$SERVICE" default
			fi
			run rm -f "$R$UNIT_DST"
			;;
		procd)
			procd_rc stop || warn "could not stop $SERVICE"
			procd_rc disable
			run rm -f "$R$UNIT_DST"
			;;
		esac
	else
		note "no $UNIT_DST"
	fi
	if [ -e "$R$BIN" ]; then
		run rm -f "$R$BIN"
	else
		note "no $BIN"
	fi
	say "kept $CONF, $MCP_CONF, $DATA (queued events and state) and the user $SERVICE."
	note "To remove them too: rm -rf $CONF_DIR $DATA; userdel $SERVICE (BusyBox: deluser $SERVICE)"
}

# Removes a staging directory left by a failed copy; only ever one of ours.
device_cleanup() {
	case $1 in
	*/cctelegram-install.*) rm -rf "$1" ;;
	*) die "refusing to remove $1" ;;
	esac
}

device_main() {
	R=${CCTELEGRAM_ROOT:-}
	action=${1:-}
	[ $# -eq 0 ] || shift
	case $action in
	probe) device_probe ;;
	stage) mktemp -d "${TMPDIR:-/tmp}/cctelegram-install.XXXXXX" ;;
	install) device_install "$@" ;;
	uninstall) device_uninstall "$@" ;;
	cleanup) device_cleanup "$@" ;;
	*) die "unknown device action '$action'" ;;
	esac
}

# ---------------------------------------------------------------------------
# On this machine.

usage() {
	cat <<EOF
usage: deploy/install.sh [--uninstall] [--binary PATH] user@host

Installs cctelegram on user@host over ssh (BatchMode: key authentication,
known host key) for systemd, OpenRC or OpenWrt's procd. Without --binary it
copies dist/cctelegram-<target> for the device's architecture (deploy/build-all
builds them). --uninstall removes the binary and the service but keeps the
config, the data and the user. SSH and SCP override the commands.
EOF
}

bad_usage() {
	printf 'install.sh: %s\n\n' "$1" >&2
	usage >&2
	exit 64
}

# The Rust target for a `uname -m`.
triple_for() {
	case $1 in
	aarch64 | arm64) echo aarch64-unknown-linux-musl ;;
	# armv8l: a 32-bit userland on a 64-bit CPU runs armv7 code.
	armv7l | armv8l) echo armv7-unknown-linux-musleabihf ;;
	armv6l) echo arm-unknown-linux-musleabihf ;;
	x86_64 | amd64) echo x86_64-unknown-linux-musl ;;
	*) return 1 ;;
	esac
}

# SSH and SCP may carry options, so they are split on purpose.
remote() {
	# shellcheck disable=SC2086
	$SSH $SSH_OPTS "$TARGET" "$@"
}

# on_device ACTION ARGS...: runs this very file on the device.
on_device() {
	printf '==> ssh %s: %s %s\n' "$TARGET" "${SUDO:+$SUDO }sh -s -- --on-device" "$*" >&2
	# shellcheck disable=SC2086
	remote $SUDO sh -s -- --on-device "$@" <"$SELF"
}

copy_to_device() {
	dest=$1
	shift
	say "scp $* -> $TARGET:$dest"
	# shellcheck disable=SC2086
	$SCP $SCP_OPTS "$@" "$TARGET:$dest"
}

local_main() {
	action=install
	binary=
	TARGET=
	while [ $# -gt 0 ]; do
		case $1 in
		--uninstall) action=uninstall ;;
		--binary)
			[ $# -ge 2 ] || bad_usage "--binary needs a path"
			binary=$2
			shift
			;;
		--binary=*) binary=${1#--binary=} ;;
		-h | --help)
			usage
			exit 0
			;;
		-*) bad_usage "unknown option $1" ;;
		*)
			[ -z "$TARGET" ] || bad_usage "one user@host only"
			TARGET=$1
			;;
		esac
		shift
	done
	[ -n "$TARGET" ] || bad_usage "no user@host given"
	if [ "$action" = uninstall ] && [ -n "$binary" ]; then
		bad_usage "--binary is for installing"
	fi

	SELF=$0
	[ -f "$SELF" ] || die "run this script from a file, not a pipe"
	deploy=$(cd "$(dirname "$SELF")" && pwd)
	dist=${CCTELEGRAM_DIST:-$(dirname "$deploy")/dist}

	# BatchMode: fail at once instead of prompting for a password or a host
	# key in the middle of an install.
	SSH_OPTS="-o BatchMode=yes -o ConnectTimeout=15"
	SCP_OPTS="-q -o BatchMode=yes -o ConnectTimeout=15"
	if [ -z "${SCP:-}" ]; then
		# OpenSSH 9 scp speaks SFTP, which Dropbear (OpenWrt) does not serve;
		# -O asks for the old protocol where scp knows it.
		if scp 2>&1 | grep -q '^usage: scp \[-[0-9A-Za-z]*O'; then
			SCP_OPTS="-O $SCP_OPTS"
		fi
	fi
	SSH=${SSH:-ssh}
	SCP=${SCP:-scp}
	SUDO=

	probe=$(on_device probe) || die "cannot run commands on $TARGET over ssh (key login and a known host key are needed)"
	arch=$(printf '%s\n' "$probe" | sed -n 's/^arch=//p')
	init=$(printf '%s\n' "$probe" | sed -n 's/^init=//p')
	uid=$(printf '%s\n' "$probe" | sed -n 's/^uid=//p')
	say "$TARGET: $arch, $init"
	layout "$init"
	if [ "$uid" != 0 ]; then
		SUDO="sudo -n"
		say "not root on $TARGET: using sudo -n (passwordless sudo needed)"
	fi

	if [ "$action" = uninstall ]; then
		on_device uninstall "$init"
		return
	fi

	if [ -z "$binary" ]; then
		triple=$(triple_for "$arch") ||
			die "no build for architecture '$arch' (aarch64, armv7l, armv6l, x86_64); pass --binary PATH"
		binary=$dist/cctelegram-$triple
		[ -f "$binary" ] || die "$binary is missing: build it with deploy/build-all, or pass --binary PATH"
	fi
	[ -f "$binary" ] || die "$binary is not a file"
	say "binary: $binary"

	stage=$(on_device stage) || die "cannot create a staging directory on $TARGET"
	if ! copy_to_device "$stage/cctelegram" "$binary" ||
		! copy_to_device "$stage/" "$deploy/$UNIT_SRC" "$deploy/config.example.toml"; then
		on_device cleanup "$stage" || true
		die "copying to $TARGET failed"
	fi
	on_device install "$init" "$stage"
}

if [ "${1:-}" = --on-device ]; then
	shift
	device_main "$@"
else
	local_main "$@"
fi
