#!/bin/bash
# Runs the ping, body and frame floods of issue 31 against two builds of the
# examples and prints each server's resident memory (before, peak, after).
# Build `chat` and `counter_server` (cargo build --release -p examples
# --example chat --example counter_server) from each commit, in separate
# target directories, and copy them to ./chat-old, ./chat-new,
# ./counter_server-old, ./counter_server-new (or set CHAT_BIN_PREFIX and
# COUNTER_SERVER_BIN_PREFIX). The old build is taken to speak protocol 2, the new one 4.
for which in old new; do
  for mode in ping body; do
    d=$(mktemp -d); CHAT_DATA=$d "${CHAT_BIN_PREFIX:-./chat}-$which" 127.0.0.1:18787 > /dev/null 2>&1 & pid=$!
    sleep 1.5
    echo "== $mode flood, $which build"
    timeout 120 python3 "$(dirname "$0")/flood.py" $mode $pid 127.0.0.1 18787
    kill $pid; wait $pid 2>/dev/null; rm -rf $d
  done
  v=2; [ $which = new ] && v=4
  d=$(mktemp -d); COUNTER_DATA=$d "${COUNTER_SERVER_BIN_PREFIX:-./counter_server}-$which" 127.0.0.1:17878 s3cret > /dev/null 2>&1 & pid=$!
  sleep 1.5
  echo "== frame flood, $which build"
  timeout 120 python3 "$(dirname "$0")/flood.py" frame $pid 127.0.0.1 17878 $v s3cret
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
done
