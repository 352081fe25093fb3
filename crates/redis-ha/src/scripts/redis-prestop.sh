# The Redis container's preStop hook.
info=$(redis_cli -h 127.0.0.1 -p "$REDIS_PORT" INFO replication)
field() { printf '%s\n' "$info" | sed -n "s/^$1://p"; }
[ "$(field role)" = master ] || exit 0
connected=$(field connected_slaves)
if [ "${connected:-0}" -eq 0 ]; then
  log "no replica connected: nothing to hand over to"
  exit 0
fi
# A master the Sentinels no longer name (left by a planned failover, not yet demoted) has nothing
# to hand over: asking would fail over the new master.
named=$(sentinel_master)
if [ -n "$named" ]; then
  # shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
  set -- $named
  if ! is_me "$1" "$2"; then log "the Sentinels name $1:$2: nothing to hand over"; exit 0; fi
fi
# Writes wait (rather than land on a master about to stop) until the handover is done.
redis_cli -h 127.0.0.1 -p "$REDIS_PORT" CLIENT PAUSE "$PRESTOP_PAUSE_MS" WRITE >/dev/null
requested=no
request_failover 0 && requested=yes
waited=0
while [ "$waited" -lt "$PRESTOP_POLLS" ]; do
  sleep "$PRESTOP_POLL_SECONDS"
  waited=$((waited + 1))
  master=$(sentinel_master)
  if [ -n "$master" ]; then
    # shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
    set -- $master
    if ! is_me "$1" "$2"; then log "handed over to $1:$2"; exit 0; fi
  fi
  # Refused (the Sentinels have not learnt a replica yet, or another failover runs): ask again
  # each second rather than leave it to the Sentinels' down-after once the process is gone.
  if [ "$requested" = no ] && [ $((waited % PRESTOP_REASK_POLLS)) -eq 0 ]; then
    request_failover 0 && requested=yes
  fi
done
log "the Sentinels did not fail over in time"
exit 0
