# The Redis readiness probe.
info=$(redis_cli -h 127.0.0.1 -p "$REDIS_PORT" INFO replication)
field() { printf '%s\n' "$info" | sed -n "s/^$1://p"; }
case "$(field role)" in
  master) exit 0 ;;
  slave)
    if [ "$(field master_link_status)" = up ] && [ "$(field master_sync_in_progress)" = 0 ]; then exit 0; fi
    echo "replica of $(field master_host): link $(field master_link_status), syncing $(field master_sync_in_progress)"
    exit 1 ;;
  *) echo "Redis does not answer"; exit 1 ;;
esac
