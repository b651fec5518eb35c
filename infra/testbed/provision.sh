#!/usr/bin/env bash
# Provisions the test bed, idempotently: Docker Engine, Compose v1 and v2, cron,
# uv, zstd, and a `postgres:15` image (pulled when a registry answers, otherwise
# built locally with debootstrap). Run as root on Debian bookworm; a machine that
# already has everything is only checked.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${POSTGRES_IMAGE:-postgres:15}
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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror apt already uses: never a hard-coded host.
debian_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
    [ -n "$uri" ] || die "cannot find a Debian mirror in apt's sources"
    printf '%s\n' "$uri"
}

# 1. Packages: engine, Compose v1, cron, debootstrap, zstd, the PostgreSQL client.
apt_install docker.io docker-compose debootstrap cron zstd ca-certificates postgresql-client-15

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

# 6. The PostgreSQL image.
entry_sum=$(sha256sum "$here/postgres-entrypoint.sh" | cut -c1-16)
label=$(docker image inspect -f '{{ index .Config.Labels "hindsight.testbed" }}' "$image" 2>/dev/null || true)
if docker image inspect "$image" >/dev/null 2>&1 && { [ -z "$label" ] || [ "$label" = "$entry_sum" ]; }; then
    : # present: pulled (no label) or built from this very entrypoint
elif timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    log "pulled $image"
else
    log "no registry: building $image locally with debootstrap"
    as_root mkdir -p "$state"
    rootfs="$state/rootfs-pg15"
    if [ ! -x "$rootfs/usr/lib/postgresql/15/bin/postgres" ]; then
        rm -rf "$rootfs"
        as_root debootstrap --variant=minbase --include=postgresql-15 bookworm "$rootfs" "$(debian_mirror)" >"$state/debootstrap.log" 2>&1 \
            || die "debootstrap failed: see $state/debootstrap.log"
        rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/var/cache/apt/archives"/*.deb
    fi
    install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'ENV LANG=C.UTF-8' \
        -c "LABEL hindsight.testbed=$entry_sum" \
        -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        -c 'CMD ["postgres"]' \
        -c 'EXPOSE 5432' \
        - "$image" >/dev/null
    log "built $image"
fi

log "ready: $(docker --version), $(docker compose version --short 2>/dev/null | sed 's/^/compose v/'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose v/'), $(uv --version)"
