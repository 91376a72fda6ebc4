# Sourced by the A/B benches. PairOrder ROUND [BUILDS]: the order in which round ROUND runs the
# builds (indices 0 .. BUILDS-1, default 2): 0 1 in even rounds, 1 0 in odd ones, so that each
# build takes the first and the second slot of a pair equally often. On these VMs the slot alone
# moved a 1-thread conversion's system time by about 4 s, whichever build held it
# (docs/results.md, "Which run of a pair").
PairOrder() {
  local round="$1" count="${2:-2}"
  if [ "$count" = 1 ]; then
    echo 0
  elif [ $((round % 2)) = 0 ]; then
    echo 0 1
  else
    echo 1 0
  fi
}
