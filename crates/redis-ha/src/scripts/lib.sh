# The functions every script shares, after the variables header: logging, bounded redis-cli
# calls, and asking the Sentinels which master they name or to fail over.
# shellcheck disable=SC2317 # shared: not every script calls every function
log() { echo "capstan: $*" >&2; }
# Every call is bounded: a Sentinel or Redis that does not answer must not hang a Pod.
# shellcheck disable=SC2317 # shared: not every script calls every function
redis_cli() { timeout 3 redis-cli "$@" 2>/dev/null | tr -d '\r'; }
# The Sentinels take the set's password (REDISCLI_AUTH), as Redis does. One still without a password
# (spec.auth just set) refuses the AUTH, and redis-cli then runs the command without it.
# shellcheck disable=SC2317 # shared: not every script calls every function
sentinel_cli() { timeout 3 redis-cli "$@" 2>/dev/null | tr -d '\r'; }
# "config-epoch host port" of the master each answering Sentinel names, one line each.
# shellcheck disable=SC2317 # shared: not every script calls every function
sentinel_answers() {
  printf '%s\n' "$SENTINELS" | while read -r s_host s_port; do
    [ -n "$s_host" ] || continue
    epoch=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL MASTER "$MASTER_SET" | sed -n '/^config-epoch$/{n;p;q;}')
    case "$epoch" in ''|*[!0-9]*) continue ;; esac
    reply=$(sentinel_cli --raw -h "$s_host" -p "$s_port" SENTINEL get-master-addr-by-name "$MASTER_SET" | tr '\n' ' ')
    # shellcheck disable=SC2086 # split on purpose: "host port" becomes $1 $2
    set -- $reply
    [ $# -eq 2 ] && echo "$epoch $1 $2"
  done
}
# The master the Sentinels' newest configuration names (highest config-epoch: right after a
# failover only its leader has switched, the others follow by gossip), the one most of those
# Sentinels name on a tie, as "host port"; nothing when none answers.
# shellcheck disable=SC2317 # shared: not every script calls every function
sentinel_master() {
  answers=$(sentinel_answers | sort -k1,1nr)
  top=$(printf '%s\n' "$answers" | head -n 1 | cut -d' ' -f1)
  [ -n "$top" ] || return 0
  printf '%s\n' "$answers" | sed -n "s/^$top //p" | sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *[0-9]* //'
}
# shellcheck disable=SC2317 # shared: not every script calls every function
is_me() { [ "$1" = "$ANNOUNCE_HOST" ] && [ "$2" = "$REDIS_PORT" ]; }
# Asks the Sentinels, one after the other, until one starts a failover; $1 (default 0) Sentinels
# are asked last instead of first, so a repeated request goes through another one.
# Succeeds when a Sentinel accepted (it may refuse: NOGOODSLAVE, INPROG).
# shellcheck disable=SC2317 # shared: not every script calls every function
request_failover() {
  count=$(printf '%s\n' "$SENTINELS" | sed -n '$=')
  skip=$(( ${1:-0} % ${count:-1} ))
  { printf '%s\n' "$SENTINELS" | tail -n +$((skip + 1)); printf '%s\n' "$SENTINELS" | head -n "$skip"; } | {
    while read -r s_host s_port; do
      [ -n "$s_host" ] || continue
      reply=$(sentinel_cli -h "$s_host" -p "$s_port" SENTINEL FAILOVER "$MASTER_SET")
      log "SENTINEL FAILOVER $MASTER_SET via $s_host:$s_port: $reply"
      [ "$reply" = OK ] && exit 0
    done
    exit 1
  }
}
# A value for a config file: double-quoted, with backslashes and quotes escaped.
# shellcheck disable=SC2317 # shared: not every script calls every function
conf_quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }
