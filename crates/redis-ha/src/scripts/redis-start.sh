# The Redis container's command.
RUNTIME_CONF="$RUNTIME_DIR/redis.conf"

# Writes the effective config (the ConfigMap's plus this Pod's lines) and becomes redis-server.
# $1: "master", or "host port" of the master to replicate.
start() {
  umask 077
  {
    cat "$CONFIG_DIR/redis.conf"
    echo "replica-announce-ip $ANNOUNCE_HOST"
    if [ -n "${REDIS_PASSWORD:-}" ]; then
      quoted=$(conf_quote "$REDIS_PASSWORD")
      echo "requirepass $quoted"
      echo "masterauth $quoted"
    fi
    if [ "$1" != master ]; then echo "replicaof $1"; fi
    # An isolated master stops taking writes once no replica has acknowledged for the lag; one
    # Redis alone has no replica to wait for. The count comes from the operator's record (read
    # at start, so a scale changes no template); without one, replicas are required.
    if [ "$(cat "$BOOTSTRAP_DIR/$BOOTSTRAP_REPLICAS_KEY" 2>/dev/null)" = 1 ]; then
      echo "min-replicas-to-write 0"
    else
      echo "min-replicas-to-write 1"
      echo "min-replicas-max-lag $MIN_REPLICAS_MAX_LAG"
    fi
  } > "$RUNTIME_CONF.tmp" || exit 1
  mv "$RUNTIME_CONF.tmp" "$RUNTIME_CONF" || exit 1
  log "starting as ${1} (announcing $ANNOUNCE_HOST:$REDIS_PORT)"
  exec redis-server "$RUNTIME_CONF"
}

# How the answering Sentinels see the master they monitor: "failover" when one of them fails
# over, "down" when every one that answers has marked it down (s_down or o_down), else "up".
sentinels_judgement() {
  printf '%s\n' "$SENTINELS" | {
    seen=0
    down=0
    while read -r s_host s_port; do
      [ -n "$s_host" ] || continue
      flags=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^flags$/{n;p;q;}')
      [ -n "$flags" ] || continue
      seen=$((seen + 1))
      case ",$flags," in *,failover_in_progress,*) echo failover; exit 0 ;; esac
      case ",$flags," in *,s_down,*|*,o_down,*) down=$((down + 1)) ;; esac
    done
    if [ "$seen" -gt 0 ] && [ "$down" -eq "$seen" ]; then echo down; else echo up; fi
  }
}

# The most replicas any Sentinel knows for the master set.
known_replicas() {
  printf '%s\n' "$SENTINELS" | while read -r s_host s_port; do
    [ -n "$s_host" ] || continue
    n=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^num-slaves$/{n;p;q;}')
    case "$n" in ''|*[!0-9]*) ;; *) echo "$n" ;; esac
  done | sort -n | tail -n 1
}

master=""
round=0
while [ "$round" -lt "$ASK_SENTINEL_ROUNDS" ]; do
  master=$(sentinel_master)
  [ -n "$master" ] && break
  round=$((round + 1))
  sleep 2
done
if [ -z "$master" ]; then
  log "no Sentinel answered: waiting for the operator to choose a master"
  start "$WAITING_MASTER_HOST $REDIS_PORT"
fi
# shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
set -- $master
if ! is_me "$1" "$2"; then
  start "$1 $2"
fi

known=$(known_replicas)
if [ "${known:-0}" -eq 0 ]; then
  # The Sentinels name this Pod and know no replica: first creation, nothing to hand over to.
  start master
fi

# Restart safety: the Sentinels still name this Pod master, but it may have come back empty.
# Serving as master now would make the replicas resync from it and lose everything, so hand over.
# Not at once: a Sentinel whose last INFO of a replica predates that Pod's recreation (when it
# was master) turns a replica promoted now straight back, and the failover hangs until its
# timeout. Once every answering Sentinel has marked this Pod down, each has polled the replicas
# every second since their links dropped, so none holds a stale role. The Sentinels then fail
# over on their own (o_down); only if none has started after a moment is one asked, then every
# 2 s another one, never while a failover is in progress (a second would raise the epoch twice).
log "the Sentinels still name this Pod master ($known replicas known): waiting until they see it down"
waited=0
down_for=0
asked=0
while [ "$waited" -lt "$FAILOVER_WAIT_HALVES" ]; do
  master=$(sentinel_master)
  if [ -n "$master" ]; then
    # shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
    set -- $master
    if ! is_me "$1" "$2"; then start "$1 $2"; fi
  fi
  case "$(sentinels_judgement)" in
    down)
      down_for=$((down_for + 1))
      if [ "$down_for" -ge "$OWN_FAILOVER_HALVES" ] && [ $(((down_for - OWN_FAILOVER_HALVES) % REASK_HALVES)) -eq 0 ]; then
        log "the Sentinels see this Pod down and have not failed over: asking"
        request_failover "$asked"
        asked=$((asked + 1))
      fi ;;
    failover) down_for=0 ;;
  esac
  sleep 0.5
  waited=$((waited + 1))
done
log "no failover after ${FAILOVER_WAIT_SECONDS}s: waiting for the operator to choose a master"
start "$WAITING_MASTER_HOST $REDIS_PORT"
