# Shared by scripts/*.sh: bring up what the tests and the gateway need on this machine.

# Starts a throwaway Redis on 127.0.0.1:6379 unless one already answers there.
ensure_redis() {
    if redis_answers; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-server not found; installing Debian's package" >&2
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
        else
            sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
        fi
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile "${TMPDIR:-/tmp}/deja-redis.log"
    for _ in $(seq 1 50); do
        redis_answers && return 0
        sleep 0.1
    done
    echo "Redis did not start on 127.0.0.1:6379" >&2
    return 1
}

redis_answers() {
    # bash's /dev/tcp needs no redis-cli: send PING, expect +PONG.
    local reply
    reply=$( (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 1 head -c 5 <&3) 2>/dev/null) || return 1
    [ "$reply" = "+PONG" ]
}

# Starts a throwaway Postgres on 127.0.0.1:5432 (trust auth, superuser `postgres`) unless one
# already answers there; the store tests create and drop their own databases in it.
ensure_postgres() {
    if postgres_answers; then
        return 0
    fi
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "Postgres not found; installing Debian's package" >&2
        as_root apt-get update -qq && as_root apt-get install -y -qq postgresql >/dev/null
    fi
    local bin data
    bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    data="${TMPDIR:-/tmp}/deja-postgres"
    as_root rm -rf "$data" && as_root mkdir -p "$data" && as_root chown postgres "$data"
    as_root runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    as_root runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/log" \
        -o "-h 127.0.0.1 -p 5432 -k $data" start >/dev/null
    for _ in $(seq 1 50); do
        postgres_answers && return 0
        sleep 0.2
    done
    echo "Postgres did not start on 127.0.0.1:5432" >&2
    return 1
}

postgres_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432
    else
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}
