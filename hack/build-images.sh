#!/usr/bin/env bash
# build-images.sh - build the kubelvs, e2e-echo and pause images from their
# Dockerfiles into image archives, on a machine without a Docker engine or a
# registry (make image).
#
#   hack/build-images.sh
#
# Out, in $KUBELVS_IMAGE_DIR (~/.cache/kubelvs/images):
#   kubelvs.tar  e2e-echo.tar  pause.tar   docker-archive, one tag each: what
#                                          `ctr -n k8s.io images import` and
#                                          `docker load` read
#   images.txt                             "file tag size-bytes", one line each
#   kubelvs.packages.txt                   Debian packages in the kubelvs image
#   *.stamp                                the inputs an archive was built from
# Tags: IMG (ghcr.io/kubelvs/kubelvs:$VERSION), ECHO_IMG (kubelvs/e2e-echo:dev),
# PAUSE_IMG (localhost/kubelvs/pause:3.10); VERSION (git describe) is the
# kubelvs build argument.
#
# How: the Dockerfiles stay the only definition of the images (docker build
# still works where Docker exists). Debian's buildah builds them here: `bud`
# with --isolation chroot needs no daemon, no OCI runtime and no user
# namespaces when run as root, and it works in a private containers storage
# under $KUBELVS_IMAGE_CACHE (~/.cache/kubelvs/buildah) that nothing else
# shares: overlay when the kernel mounts it there, else vfs (a full copy per
# layer: slower, more disk; KUBELVS_BUILDAH_DRIVER=vfs forces it).
# The base images the Dockerfiles name are made here and never pulled
# (--pull=never) nor pushed anywhere; they live only in that storage, under
# the names the Dockerfiles use:
#   debian:bookworm-slim  mmdebstrap --variant=minbase of the pinned suite,
#                         docs, man pages and locales excluded as in Debian's
#                         slim images, and apt configured to keep neither its
#                         package caches nor the .debs it installed (both stay
#                         in force for a Dockerfile's apt-get install)
#   golang:1.26           that base + the pinned Go toolchain from the Go
#                         module proxy (the golang.org/toolchain module,
#                         checked by the go command against the sums pinned
#                         below), GOPATH=/go, GOTOOLCHAIN=local, + the build
#                         host's CA bundle, so that `go mod download` in a
#                         build trusts what the host trusts (e.g. a
#                         TLS-intercepting egress proxy). No gcc or git: our
#                         builds are CGO_ENABLED=0 and fetch modules through
#                         the proxy. Only build stages use it; no final image
#                         holds any of it.
# Each base is made once per recipe (a hash of what it is made of, kept next
# to the storage) and reused; delete the cache to refresh Debian's packages.
# An archive is rebuilt only when the hash of its inputs changes: this
# script, the bases' recipes, the tag, the build arguments, the Dockerfile,
# its ignore file and the files the ignore file lets into the build context
# (a superset: the `!` entries of an ignore file that starts with `*`, else
# the whole context). A run with nothing to rebuild reads only those files.
#
# Knobs: KUBELVS_IMAGE_DIR  KUBELVS_IMAGE_CACHE  KUBELVS_BUILDAH_DRIVER=overlay|vfs
#        KUBELVS_DEBIAN_MIRROR (http://deb.debian.org/debian)
#        KUBELVS_DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security)
#        KUBELVS_IMAGE_FORCE=1 (rebuild the archives, not the bases)
#        KUBELVS_IMAGES="kubelvs ..." (build and list only these; default all)
# Needs: root, apt-get (Debian bookworm), the Go toolchain (fetches Go for the
# builder base); installs buildah, mmdebstrap and unzip when missing.
set -euo pipefail

log() { echo "build-images: $*" >&2; }
die() { echo "build-images: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/hack/build-images.sh
OUT=${KUBELVS_IMAGE_DIR:-$HOME/.cache/kubelvs/images}
CACHE=${KUBELVS_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubelvs/buildah}
VERSION=${VERSION:-$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)}
IMG=${IMG:-ghcr.io/kubelvs/kubelvs:$VERSION}
ECHO_IMG=${ECHO_IMG:-kubelvs/e2e-echo:dev}
PAUSE_IMG=${PAUSE_IMG:-localhost/kubelvs/pause:3.10}

# Pinned bases. The names are what the Dockerfiles' FROM lines say.
DEBIAN_NAME=debian:bookworm-slim
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${KUBELVS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${KUBELVS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
GO_NAME=golang:1.26
GO_VERSION=1.26.8
# go.sum lines of golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch (the
# module zip and its go.mod). Its bin/go and pkg/tool binaries are the same
# bytes as the go1.26.8 release tarball's.
declare -A GO_SUM=(
	[amd64]="h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM="
)
GO_MOD_SUM="h1:8wlg68NqwW7eMnI1aABk/C2pDYXj8mrMY4TyRfiLeS0="

command -v go >/dev/null || die "the Go toolchain must be on PATH (it fetches Go for the builder base)"

# name  Dockerfile (context: the repository root)  tag  build arguments...
IMAGES=(
	"kubelvs Dockerfile $IMG VERSION=$VERSION TARGETARCH=$(go env GOARCH)"
	"e2e-echo test/e2e/echo/Dockerfile $ECHO_IMG"
	"pause test/cluster/pause/Dockerfile $PAUSE_IMG"
)
if [[ -n ${KUBELVS_IMAGES:-} ]]; then
	selected=()
	for spec in "${IMAGES[@]}"; do
		[[ " $KUBELVS_IMAGES " == *" ${spec%% *} "* ]] && selected+=("$spec")
	done
	((${#selected[@]})) || die "KUBELVS_IMAGES=$KUBELVS_IMAGES names none of kubelvs, e2e-echo, pause"
	IMAGES=("${selected[@]}")
fi

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f s", b-a}'; }
sha() { sha256sum | cut -d' ' -f1; }

# --------------------------------------------------------------------------
# Inputs and stamps
# --------------------------------------------------------------------------

# ignore_file DOCKERFILE: the ignore file BuildKit and buildah (1.28 too) read
# for it: <Dockerfile>.dockerignore, else the context's .dockerignore. It is
# passed explicitly, so that the build and the inputs hash use the same file.
ignore_file() {
	if [[ -f $ROOT/$1.dockerignore ]]; then
		echo "$1.dockerignore"
	elif [[ -f $ROOT/.dockerignore ]]; then
		echo .dockerignore
	fi
}

# context_files IGNOREFILE: NUL-separated paths (relative to the context) of
# at least every file the build can see.
context_files() {
	local -a pats=() allow=()
	if [[ -n $1 ]]; then
		mapfile -t pats < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$ROOT/$1")
	fi
	if [[ ${pats[0]:-} == '*' ]]; then
		local p
		for p in "${pats[@]:1}"; do
			[[ $p == '!'* ]] || continue
			p=${p#!}
			p=${p#/}
			p=${p%/}
			if [[ $p == *[*?[]* ]]; then
				allow=()
				break
			fi
			allow+=("$p")
		done
	fi
	if ((${#allow[@]} == 0)); then
		allow=(.)
	fi
	(cd "$ROOT" && find "${allow[@]}" -path ./.git -prune -o -type f -print0 2>/dev/null) || true
}

# base_recipes: sets DEBIAN_KEY and GO_KEY, hashes of what each base is made of.
base_recipes() {
	DEBIAN_RECIPE="suite=$DEBIAN_SUITE variant=minbase mirror=$DEBIAN_MIRROR security=$DEBIAN_SECURITY_MIRROR
$(declare -f make_debian_base)"
	DEBIAN_KEY=$(sha <<<"$DEBIAN_RECIPE")
	GO_ARCH=$(go env GOHOSTARCH)
	GO_PROXY_ENV=$(go env GOPROXY)
	[[ $GO_PROXY_ENV == https://proxy.golang.org,direct ]] && GO_PROXY_ENV=
	HOST_CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
	[[ -f $HOST_CA ]] || die "no CA bundle at $HOST_CA (set SSL_CERT_FILE)"
	GO_RECIPE="debian=$DEBIAN_KEY go=$GO_VERSION arch=$GO_ARCH sum=${GO_SUM[$GO_ARCH]:-} goproxy=$GO_PROXY_ENV ca=$(sha <"$HOST_CA")
$(declare -f make_go_base fetch_go)"
	GO_KEY=$(sha <<<"$GO_RECIPE")
}

# inputs_hash NAME DOCKERFILE TAG ARGS...
inputs_hash() {
	local dockerfile=$2 tag=$3 ignore
	shift 3
	ignore=$(ignore_file "$dockerfile")
	{
		echo "script $(sha <"$SELF")"
		echo "bases $DEBIAN_KEY $GO_KEY"
		echo "tag $tag"
		printf 'arg %s\n' "$@"
		cd "$ROOT"
		sha256sum "$dockerfile" ${ignore:+"$ignore"}
		context_files "$ignore" | LC_ALL=C sort -z | xargs -0r sha256sum
	} | sha
}

# --------------------------------------------------------------------------
# Tools and storage
# --------------------------------------------------------------------------

ensure_packages() {
	local -a need=()
	command -v buildah >/dev/null || need+=(buildah)
	command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
	command -v unzip >/dev/null || need+=(unzip)
	((${#need[@]})) || return 0
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${need[@]}" >&2; then
		apt-get update -q >&2
		apt-get install -y -q --no-install-recommends "${need[@]}" >&2
	fi
}

# pick_driver: overlay if the kernel mounts it on the cache's filesystem
# (not, for example, when that is itself an overlay), else vfs.
pick_driver() {
	if [[ -n ${KUBELVS_BUILDAH_DRIVER:-} ]]; then
		DRIVER=$KUBELVS_BUILDAH_DRIVER
		return
	fi
	if [[ -s $CACHE/driver ]]; then
		DRIVER=$(<"$CACHE/driver")
		return
	fi
	local t=$CACHE/overlay-probe
	rm -rf "$t"
	mkdir -p "$t"/{lower,upper,work,merged}
	if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" "$t/merged" 2>/dev/null; then
		umount "$t/merged"
		DRIVER=overlay
	else
		DRIVER=vfs
	fi
	rm -rf "$t"
	echo "$DRIVER" >"$CACHE/driver"
}

# TMPDIR: buildah keeps the contents of RUN --mount=type=cache there.
bh() { TMPDIR=$CACHE/tmp buildah --root "$CACHE/storage-$DRIVER" --runroot "$CACHE/run-$DRIVER" --storage-driver "$DRIVER" "$@"; }

# qualified NAME: NAME with the registry a short name stands for (buildah
# would otherwise file a tag like kubelvs/e2e-echo:dev under localhost/).
qualified() {
	local first=${1%%/*}
	if [[ $1 != */* ]]; then
		echo "docker.io/library/$1"
	elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
		echo "$1"
	else
		echo "docker.io/$1"
	fi
}

# A base's recipe key is kept next to the storage, with the image ID it
# made, not as a label: images built on the base would inherit a label.
have_base() { # NAME KEY
	local id
	id=$(bh inspect --type image --format '{{.FromImageID}}' "$(qualified "$1")" 2>/dev/null) || return 1
	[[ $(cat "$CACHE/bases/${1//[:\/]/_}" 2>/dev/null) == "$2 $id" ]]
}

commit_base() { # CONTAINER NAME KEY
	local id
	mkdir -p "$CACHE/bases"
	id=$(bh commit -q --rm "$1" "$(qualified "$2")")
	echo "$3 $id" >"$CACHE/bases/${2//[:\/]/_}"
}

# --------------------------------------------------------------------------
# Bases
# --------------------------------------------------------------------------

make_debian_base() {
	local dir c
	# Not under ~: apt downloads as _apt, who needs to reach the directory.
	dir=$(mktemp -d /tmp/kubelvs-debian.XXXXXX)
	chmod 0755 "$dir"
	mmdebstrap --variant=minbase --mode=root --format=directory \
		--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/lintian/*' \
		--aptopt='Acquire::Languages "none"' \
		"$DEBIAN_SUITE" "$dir" \
		"deb $DEBIAN_MIRROR $DEBIAN_SUITE main" \
		"deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main" \
		"deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main" >&2
	# The runtime provides /dev, the resolver and the host name; these are
	# the build host's.
	rm -rf "${dir:?}"/dev/* "$dir/etc/resolv.conf" "$dir/etc/hostname"
	# Installs in the images' own RUN lines keep neither apt's package
	# caches nor the downloaded .debs (mmdebstrap itself needs both).
	cat >"$dir/etc/apt/apt.conf.d/90kubelvs-slim" <<-'EOF'
		// hack/build-images.sh: no binary package caches, no kept .debs.
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
		APT::Keep-Downloaded-Packages "false";
	EOF
	dpkg-query --admindir="$dir/var/lib/dpkg" -W -f '${Package}\t${Version}\t${Architecture}\n' >"$CACHE/debian-packages.txt"
	c=$(bh from --pull=never scratch)
	bh add "$c" "$dir" / >/dev/null
	bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$c"
	commit_base "$c" "$DEBIAN_NAME" "$DEBIAN_KEY"
	rm -rf "$dir"
}

# fetch_go: the pinned toolchain, unpacked into $GOROOT_DIR, as the go command
# itself unpacks a toolchain it switches to.
fetch_go() {
	GOROOT_DIR=$CACHE/go/go$GO_VERSION.linux-$GO_ARCH
	[[ -x $GOROOT_DIR/bin/go ]] && return
	local v=v0.0.1-go$GO_VERSION.linux-$GO_ARCH mod=$CACHE/go/mod tmp=$CACHE/go/unzip f
	[[ -n ${GO_SUM[$GO_ARCH]:-} ]] || die "no pinned sum for golang.org/toolchain@$v: add it to GO_SUM"
	mkdir -p "$mod"
	printf 'module kubelvs.local/image-toolchain\n' >"$mod/go.mod"
	# The go command checks the module against go.sum (the toolchain module
	# is never taken unchecked, and the checksum database may be out of reach).
	printf 'golang.org/toolchain %s %s\ngolang.org/toolchain %s/go.mod %s\n' \
		"$v" "${GO_SUM[$GO_ARCH]}" "$v" "$GO_MOD_SUM" >"$mod/go.sum"
	rm -rf "$tmp"
	(
		# A module cache of its own, dropped afterwards: the toolchain would
		# take 300 MB in the user's.
		export GOMODCACHE=$CACHE/go/modcache GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local
		cd "$mod"
		go mod download golang.org/toolchain@"$v" >&2
		unzip -q "$GOMODCACHE/cache/download/golang.org/toolchain/@v/$v.zip" -d "$tmp"
		go clean -modcache
	)
	# Module zips cannot hold nested go.mod files; the toolchain ships them
	# as _go.mod.
	while IFS= read -r -d '' f; do
		cp "$f" "${f%_go.mod}go.mod"
	done < <(find "$tmp" -name _go.mod -print0)
	rm -rf "$GOROOT_DIR"
	mv "$tmp/golang.org/toolchain@$v" "$GOROOT_DIR"
	rm -rf "$tmp"
	[[ $("$GOROOT_DIR/bin/go" env GOVERSION) == go$GO_VERSION ]] || die "$GOROOT_DIR is not go$GO_VERSION"
}

make_go_base() {
	local c
	fetch_go
	c=$(bh from --pull=never "$(qualified "$DEBIAN_NAME")")
	bh run --isolation chroot "$c" -- sh -c 'mkdir -p /go/bin /go/src /etc/ssl/certs && chmod -R 1777 /go'
	bh copy "$c" "$HOST_CA" /etc/ssl/certs/ca-certificates.crt >/dev/null
	bh copy "$c" "$GOROOT_DIR" /usr/local/go >/dev/null
	bh config --env GOLANG_VERSION="$GO_VERSION" --env GOPATH=/go --env GOTOOLCHAIN=local \
		--env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		${GO_PROXY_ENV:+--env GOPROXY="$GO_PROXY_ENV"} \
		--workingdir /go --cmd bash "$c"
	commit_base "$c" "$GO_NAME" "$GO_KEY"
}

ensure_bases() {
	local t
	if ! have_base "$DEBIAN_NAME" "$DEBIAN_KEY"; then
		t=$(now)
		log "making $DEBIAN_NAME (mmdebstrap $DEBIAN_SUITE)"
		make_debian_base
		log "made $DEBIAN_NAME in $(since "$t")"
	fi
	if ! have_base "$GO_NAME" "$GO_KEY"; then
		t=$(now)
		log "making $GO_NAME (go$GO_VERSION)"
		make_go_base
		log "made $GO_NAME in $(since "$t")"
	fi
}

# check_froms DOCKERFILE: every base it names is one made here.
check_froms() {
	local -a stages=()
	local from name
	while read -r from name; do
		case $from in
		scratch | "$DEBIAN_NAME" | "$GO_NAME") ;;
		*) [[ " ${stages[*]} " == *" $from "* ]] || die "$1: FROM $from is not a base this script makes" ;;
		esac
		if [[ -n $name ]]; then
			stages+=("$name")
		fi
	done < <(awk 'toupper($1) == "FROM" {
		i = 2; while ($i ~ /^--/) i++
		n = (toupper($(i+1)) == "AS") ? $(i+2) : ""
		print $i, n }' "$ROOT/$1")
}

# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------

build_image() { # NAME DOCKERFILE TAG ARGS...
	local name=$1 dockerfile=$2 tag=$3 ignore a
	shift 3
	local -a args=()
	for a in "$@"; do args+=(--build-arg "$a"); done
	ignore=$(ignore_file "$dockerfile")
	check_froms "$dockerfile"
	bh bud --isolation chroot --pull=never --format docker --layers=false \
		-f "$ROOT/$dockerfile" ${ignore:+--ignorefile "$ROOT/$ignore"} \
		"${args[@]}" -t "$(qualified "$tag")" "$ROOT" >&2
	rm -f "$OUT/$name.tar.tmp"
	bh push -q "$(qualified "$tag")" "docker-archive:$OUT/$name.tar.tmp:$tag" >&2
	check_image "$name" "$tag"
	mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
	# The archive is the product; the storage keeps only the bases.
	bh rmi "$(qualified "$tag")" >/dev/null
}

# check_image NAME TAG: what the cluster relies on is in the image, and its
# binary runs (chrooted into the image's root file system, as its user).
check_image() {
	local name=$1 tag=$2 c m user f
	user=$(bh inspect --type image --format '{{.OCIv1.Config.User}}' "$(qualified "$tag")")
	c=$(bh from --pull=never "$(qualified "$tag")")
	m=$(bh mount "$c")
	case $name in
	kubelvs)
		[[ $user == 65532:65532 ]] || die "$tag: user $user, want 65532:65532"
		for f in /manager /bin/sh /usr/sbin/modprobe /usr/sbin/iptables-legacy-save /usr/sbin/iptables-legacy-restore \
			/usr/sbin/ip6tables-legacy-save /usr/sbin/ip6tables-legacy-restore /usr/sbin/ip6tables /usr/sbin/iptables-nft-restore; do
			[[ -e $m$f || -L $m$f ]] || die "$tag: no $f"
		done
		dpkg-query --admindir="$m/var/lib/dpkg" -W -f '${Package}\t${Version}\t${Architecture}\n' >"$OUT/kubelvs.packages.txt"
		chroot --userspec="$user" "$m" /manager version >&2 || die "$tag: /manager version failed"
		;;
	e2e-echo)
		[[ $user == 65532:65532 ]] || die "$tag: user $user, want 65532:65532"
		[[ -x $m/e2e-echo ]] || die "$tag: no /e2e-echo"
		# Without arguments it prints its usage and fails.
		[[ $(chroot --userspec="$user" "$m" /e2e-echo 2>&1) == *usage:* ]] || die "$tag: /e2e-echo does not run"
		;;
	pause)
		[[ $user == 65535:65535 ]] || die "$tag: user $user, want 65535:65535"
		local pid rc=0
		chroot --userspec="$user" "$m" /pause 2>/dev/null &
		pid=$!
		sleep 1 # time to install its signal handlers
		kill -TERM "$pid"
		wait "$pid" || rc=$?
		[[ $rc == 0 ]] || die "$tag: /pause exited $rc on SIGTERM, want 0"
		;;
	esac
	bh umount "$c" >/dev/null
	bh rm "$c" >/dev/null
}

main() {
	[[ $EUID == 0 ]] || die "needs root (buildah's chroot isolation and mmdebstrap's root mode)"
	mkdir -p "$OUT" "$CACHE/tmp"
	exec 9>"$CACHE/lock"
	flock 9
	base_recipes
	local spec name dockerfile tag hash t0 t ready=0
	local -a todo=() rest
	t0=$(now)
	for spec in "${IMAGES[@]}"; do
		read -r name dockerfile tag rest <<<"$spec"
		read -ra rest <<<"$rest"
		hash=$(inputs_hash "$name" "$dockerfile" "$tag" "${rest[@]}")
		if [[ ${KUBELVS_IMAGE_FORCE:-0} != 1 && -f $OUT/$name.tar && $(cat "$OUT/$name.stamp" 2>/dev/null) == "$hash $tag" ]]; then
			continue
		fi
		todo+=("$spec $hash")
	done
	for spec in "${todo[@]}"; do
		read -r name dockerfile tag rest <<<"$spec"
		read -ra rest <<<"$rest"
		hash=${rest[-1]}
		unset 'rest[-1]'
		if ((!ready)); then
			ensure_packages
			pick_driver
			# Working containers a failed run left (the storage is ours alone).
			bh rm --all >/dev/null 2>&1 || true
			ensure_bases
			ready=1
		fi
		t=$(now)
		log "building $name ($tag)"
		rm -f "$OUT/$name.stamp"
		build_image "$name" "$dockerfile" "$tag" "${rest[@]}"
		echo "$hash $tag" >"$OUT/$name.stamp"
		log "built $OUT/$name.tar in $(since "$t")"
	done
	if ((ready)); then
		bh rmi --prune >/dev/null 2>&1 || true
	fi
	{
		for spec in "${IMAGES[@]}"; do
			read -r name dockerfile tag rest <<<"$spec"
			echo "$name.tar $tag $(stat -c %s "$OUT/$name.tar")"
		done
	} >"$OUT/images.txt.tmp"
	mv "$OUT/images.txt.tmp" "$OUT/images.txt"
	log "${#todo[@]} of ${#IMAGES[@]} archives rebuilt in $(since "$t0"): $OUT/images.txt"
	cat "$OUT/images.txt"
}

main "$@"
