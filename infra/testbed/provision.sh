#!/usr/bin/env bash
# Provisions the test bed, idempotently: Docker Engine, Compose v1 and v2, cron,
# uv, zstd, age, Garage (built from crates.io), and the PostgreSQL images postgres:15, :13, :13.16 and :17-pgvector
# (pulled when a registry answers, otherwise built locally with debootstrap).
# Run as root on Debian bookworm; a machine that already has everything is only
# checked.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=/var/lib/hindsight-testbed
log() { printf '[provision %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else die "'$*' needs root: run this script as root, or install it by hand"; fi
}

apt_updated=
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror apt already uses: never a hard-coded host.
debian_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || die "cannot find a Debian mirror in apt's sources"
    printf '%s\n' "$uri"
}

# 1. Packages: engine, Compose v1, cron, debootstrap, zstd, the PostgreSQL client, and
# age (the offsite copies' encryption runs it; the offsite and age_interop tests need it).
apt_install docker.io docker-compose debootstrap cron zstd ca-certificates postgresql-client-15 age

# 2. Compose v2: Debian trixie's docker-compose package carries the CLI plugin.
plugin_dir=/usr/local/lib/docker/cli-plugins
if ! docker compose version >/dev/null 2>&1; then
    log "installing the Compose v2 plugin from Debian trixie's docker-compose package"
    tmp=$(mktemp -d) && chmod 0755 "$tmp"  # apt downloads as _apt
    mirror=$(debian_mirror)
    mkdir -p "$tmp/lists/partial" "$tmp/parts"
    printf 'deb %s trixie main\n' "$mirror" >"$tmp/trixie.list"
    apt_opts=(-o "Dir::Etc::SourceList=$tmp/trixie.list" -o "Dir::Etc::SourceParts=$tmp/parts"
        -o "Dir::State::Lists=$tmp/lists" -o "APT::Get::List-Cleanup=0")
    as_root apt-get "${apt_opts[@]}" update -qq
    (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq docker-compose)
    dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/root"
    as_root install -D -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugin_dir/docker-compose"
    rm -rf "$tmp"
    docker compose version >/dev/null || die "the Compose v2 plugin was installed but 'docker compose version' fails"
fi

# 3. The engine.
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    as_root bash -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s: see /var/log/dockerd.log"
fi

# 4. The cron daemon (the install-cron end-to-end test needs a running one).
if ! pgrep -x cron >/dev/null; then
    log "starting cron"
    as_root cron
fi

# 5. uv, for the Alembic project.
if ! command -v uv >/dev/null; then
    log "installing uv"
    python3 -m pip install --quiet uv
    command -v uv >/dev/null || die "uv was installed but is not on PATH"
fi

# 6. Garage, the S3 server the offsite tests run on loopback: built once from crates.io
# into a fixed root outside the repository and its target directory, and reused while
# the version matches. It is AGPL: the tests only run it as a program, nothing links it.
garage_version=2.5.0
garage_root=/opt/hindsight-testbed/garage
garage_bin=$garage_root/bin/garage
if ! "$garage_bin" --version 2>/dev/null | grep -qwF "$garage_version"; then
    command -v cargo >/dev/null || die "cargo is not on PATH: Garage $garage_version is built with 'cargo install'; install a Rust toolchain (rustup) first"
    as_root mkdir -p "$garage_root"
    log "building Garage $garage_version from crates.io into $garage_root (about 9 minutes on 2 cores)"
    started=$(date +%s)
    # A private target directory, removed by cargo afterwards: never the repository's.
    if ! as_root env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR cargo install --quiet --locked --force \
        --root "$garage_root" --version "=$garage_version" garage >"$garage_root/build.log" 2>&1; then
        tail -n 30 "$garage_root/build.log" >&2
        die "building Garage $garage_version failed: see $garage_root/build.log"
    fi
    "$garage_bin" --version 2>/dev/null | grep -qwF "$garage_version" \
        || die "Garage was built but '$garage_bin --version' does not say v$garage_version"
    log "built Garage $garage_version in $(($(date +%s) - started)) s"
fi

# 7. The PostgreSQL images: 15 for the whole suite; 13 (with bullseye's security
# updates), 13.16 (bullseye as released: a psql older than `\restrict`) and 17 with
# pgvector for the version matrix.

# The security archive apt already uses, next to the main mirror: never a hard-coded host.
security_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep security | head -n1 || true)
    [ -n "$uri" ] || die "cannot find a Debian security mirror in apt's sources (/etc/apt/sources.list*): postgres:13 needs bullseye-security"
    printf '%s\n' "$uri"
}

# Fails, naming the suite and the mirror, when a suite has left the mirror (old
# releases move to archive.debian.org): better than a debootstrap log to read.
require_suite() {
    local mirror=$1 suite=$2 tmp
    tmp=$(mktemp -d) && chmod 0755 "$tmp"
    mkdir -p "$tmp/lists/partial" "$tmp/parts"
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$tmp/probe.list"
    if ! as_root apt-get -o "Dir::Etc::SourceList=$tmp/probe.list" -o "Dir::Etc::SourceParts=$tmp/parts" \
        -o "Dir::State::Lists=$tmp/lists" -o "APT::Get::List-Cleanup=0" update -qq >"$tmp/update.log" 2>&1 \
        || grep -q '^[EW]:' "$tmp/update.log"; then
        cat "$tmp/update.log" >&2
        rm -rf "$tmp"
        die "Debian suite '$suite' is not on $mirror (it may have moved to an archive): cannot build the images that need it; point apt at a mirror that still carries $suite"
    fi
    rm -rf "$tmp"
}

# build_image TAG SUITE MAJOR SECURITY PACKAGES...: TAG from SUITE's PACKAGES, with
# SUITE-security's updates when SECURITY is "yes". The debootstrap tree stays under
# $state so that a rebuild after an entrypoint change only re-imports it.
build_image() {
    local tag=$1 suite=$2 major=$3 security=$4
    shift 4
    local entry_sum label rootfs mirror started
    entry_sum=$(sha256sum "$here/postgres-entrypoint.sh" | cut -c1-16)
    label=$(docker image inspect -f '{{ index .Config.Labels "hindsight.testbed" }}' "$tag" 2>/dev/null || true)
    if docker image inspect "$tag" >/dev/null 2>&1 && { [ -z "$label" ] || [ "$label" = "$entry_sum" ]; }; then
        return 0 # present: pulled (no label) or built from this very entrypoint
    fi
    # Only official tags can be pulled; the official postgres:13 images already
    # carry the security updates.
    if [ "$tag" = "${tag%-pgvector}" ] && timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
        log "pulled $tag"
        return 0
    fi
    started=$(date +%s)
    log "no registry: building $tag locally with debootstrap (Debian $suite$([ "$security" = yes ] && echo " with $suite-security"))"
    as_root mkdir -p "$state"
    rootfs="$state/rootfs-pg${tag#postgres:}"
    [ "$tag" = postgres:15 ] && rootfs="$state/rootfs-pg15" # the tree earlier versions of this script made
    # The marker is written last: a tree from an interrupted build is started again.
    if [ ! -e "$rootfs/.hindsight-complete" ] && ! { [ "$tag" = postgres:15 ] && [ -x "$rootfs/usr/lib/postgresql/15/bin/postgres" ]; }; then
        mirror=$(debian_mirror)
        require_suite "$mirror" "$suite"
        # An interrupted build may have left the tree's /proc mounted: never delete through it.
        if mountpoint -q "$rootfs/proc" 2>/dev/null; then umount "$rootfs/proc"; fi
        rm -rf "$rootfs"
        if [ "$security" = yes ]; then
            local secmirror
            secmirror=$(security_mirror)
            require_suite "$secmirror" "$suite-security"
            as_root debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$state/debootstrap-${tag#postgres:}.log" 2>&1 \
                || die "debootstrap of $suite failed: see $state/debootstrap-${tag#postgres:}.log"
            # The security suite is not something debootstrap can add: install from
            # inside the tree, with the host's resolver and no services started.
            printf 'deb %s %s main\ndeb %s %s-security main\n' "$mirror" "$suite" "$secmirror" "$suite" >"$rootfs/etc/apt/sources.list"
            cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
            printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d" && chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
            mount -t proc proc "$rootfs/proc"
            if ! { chroot "$rootfs" apt-get update -qq && chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "$@"; } >"$state/apt-${tag#postgres:}.log" 2>&1; then
                umount "$rootfs/proc"
                die "installing $* from $suite and $suite-security failed: see $state/apt-$suite.log"
            fi
            umount "$rootfs/proc"
            rm -f "$rootfs/usr/sbin/policy-rc.d"
            chroot "$rootfs" apt-get clean
        else
            as_root debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$suite" "$rootfs" "$mirror" \
                >"$state/debootstrap-${tag#postgres:}.log" 2>&1 \
                || die "debootstrap of $suite with $* failed: see $state/debootstrap-${tag#postgres:}.log"
        fi
        [ -x "$rootfs/usr/lib/postgresql/$major/bin/postgres" ] || die "$tag: no PostgreSQL $major server in $rootfs after the install"
        rm -rf "$rootfs/var/lib/postgresql/$major" "$rootfs/var/cache/apt/archives"/*.deb
        touch "$rootfs/.hindsight-complete"
    fi
    install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
    tar -C "$rootfs" --exclude=./.hindsight-complete -c . | docker import \
        -c "ENV PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'ENV LANG=C.UTF-8' \
        -c "LABEL hindsight.testbed=$entry_sum" \
        -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        -c 'CMD ["postgres"]' \
        -c 'EXPOSE 5432' \
        - "$tag" >/dev/null
    log "built $tag in $(($(date +%s) - started)) s"
}

# POSTGRES_IMAGE picks one image to build (as before); by default all four.
if [ -n "${POSTGRES_IMAGE:-}" ] && [ "$POSTGRES_IMAGE" != postgres:15 ]; then
    case $POSTGRES_IMAGE in
    postgres:13) build_image postgres:13 bullseye 13 yes postgresql-13 postgresql-client-13 ;;
    postgres:13.16) build_image postgres:13.16 bullseye 13 no postgresql-13 postgresql-client-13 ;;
    postgres:17-pgvector) build_image postgres:17-pgvector trixie 17 no postgresql-17 postgresql-17-pgvector ;;
    *) die "POSTGRES_IMAGE=$POSTGRES_IMAGE: this script builds postgres:15, postgres:13, postgres:13.16 and postgres:17-pgvector" ;;
    esac
else
    build_image postgres:15 bookworm 15 no postgresql-15
    [ -n "${POSTGRES_IMAGE:-}" ] || {
        build_image postgres:13 bullseye 13 yes postgresql-13 postgresql-client-13
        build_image postgres:13.16 bullseye 13 no postgresql-13 postgresql-client-13
        build_image postgres:17-pgvector trixie 17 no postgresql-17 postgresql-17-pgvector
    }
fi

log "ready: $(docker --version), $(docker compose version --short 2>/dev/null | sed 's/^/compose v/'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose v/'), $(uv --version), $(age --version | sed 's/^/age /'), $("$garage_bin" --version | head -n1)"
