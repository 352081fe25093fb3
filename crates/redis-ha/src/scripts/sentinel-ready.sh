# The Sentinel readiness probe.
reply=$(sentinel_cli --raw -h 127.0.0.1 -p "$SENTINEL_PORT" SENTINEL get-master-addr-by-name "$MASTER_SET" | tr '\n' ' ')
# shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
set -- $reply
[ $# -eq 2 ] && exit 0
echo "Sentinel knows no master for $MASTER_SET"
exit 1
