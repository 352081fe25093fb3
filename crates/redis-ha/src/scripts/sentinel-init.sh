# The Sentinel init container: seeds sentinel.conf on the writable volume.
CONF="$RUNTIME_DIR/sentinel.conf"
if [ -s "$CONF" ]; then
  log "keeping $CONF, which Sentinel maintains"
  exit 0
fi
master=""
round=0
while [ "$round" -lt "$SEED_ASK_ROUNDS" ]; do
  master=$(sentinel_master)
  [ -n "$master" ] && break
  round=$((round + 1))
  sleep 1
done
# No peer answered: a first creation, or every Sentinel restarted at once (their state is on
# an emptyDir). Then the last master the operator verified holds the newest data (the Redis Pods
# may have come back from their claims): seed it, not blindly ordinal 0, whose replica data
# would become the master's and the others' would be resynced away.
recorded=$(cat "$BOOTSTRAP_DIR/$BOOTSTRAP_MASTER_KEY" 2>/dev/null)
case "$recorded" in
  "$MASTER_SET"-[0-9]|"$MASTER_SET"-[0-9][0-9]) recorded_master="$recorded$REDIS_HOST_SUFFIX $REDIS_PORT" ;;
  *) recorded_master="" ;;
esac
if [ -z "$master" ] && [ -n "$recorded_master" ]; then
  master=$recorded_master
  log "no other Sentinel answered: monitoring $recorded, the last master the operator verified"
elif [ -z "$master" ]; then
  master=$BOOTSTRAP_MASTER
  log "no other Sentinel answered: monitoring the bootstrap master $master"
else
  log "the other Sentinels name $master"
fi
# shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
set -- $master
# Sentinel exits when a monitored hostname does not resolve; a Pod's DNS record appears shortly
# after its Pod (publishNotReadyAddresses), so wait for it, bounded.
waited=0
while [ "$waited" -lt "$RESOLVE_WAIT_SECONDS" ] && ! getent hosts "$1" >/dev/null 2>&1; do
  waited=$((waited + 1))
  sleep 1
done
umask 077
sed -e "s|@ANNOUNCE_HOST@|$ANNOUNCE_HOST|" -e "s|@MASTER_HOST@|$1|" -e "s|@MASTER_PORT@|$2|" \
  "$CONFIG_DIR/sentinel.conf" > "$CONF.tmp" || exit 1
if [ -n "${REDIS_PASSWORD:-}" ]; then
  # The password Redis takes, required of every client and peer Sentinel too: without it
  # anyone who reaches the Pod could fail the set over or point the Sentinels elsewhere.
  quoted=$(conf_quote "$REDIS_PASSWORD")
  {
    echo "sentinel auth-pass $MASTER_SET $quoted"
    echo "requirepass $quoted"
    echo "sentinel sentinel-pass $quoted"
  } >> "$CONF.tmp" || exit 1
fi
mv "$CONF.tmp" "$CONF"
