#!/usr/bin/env bash
# Starts a cluster on this machine: etcd, three NATS servers (a JetStream
# cluster) and three runtimes serving the Counter example (counter_node),
# all on loopback, with their files in one temporary directory. Ctrl-C
# stops everything. Needs the servers of scripts/install-servers.sh.
#
#   scripts/local-cluster.sh
#   cargo run --example counter_client -- alice 1 127.0.0.1:7001   # any node reaches alice
#   cargo run -p do-cli -- cluster status --etcd http://127.0.0.1:2379
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null && command -v nats-server >/dev/null ||
  { echo "run scripts/install-servers.sh first" >&2; exit 1; }
cargo build -q --example counter_node && cargo build -q -p do-cli
work="$(mktemp -d)"
pids=()
stop() {
  trap - INT TERM EXIT
  # The nodes first: they hand their shards over while the servers run.
  for pid in "${pids[@]:3}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait "${pids[@]:3}" 2>/dev/null || true
  for pid in "${pids[@]:0:3}"; do kill "$pid" 2>/dev/null || true; done
  kill "$etcd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "stopped; files were in $work"
}
trap stop INT TERM EXIT

etcd --name local --data-dir "$work/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster local=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
etcd_pid=$!

routes="nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224"
for i in 0 1 2; do
  nats-server -n "nats-$i" -a 127.0.0.1 -p $((4222 + i)) -js -sd "$work/nats-$i" \
    --cluster_name local --cluster "nats://127.0.0.1:$((6222 + i))" --routes "$routes" \
    >"$work/nats-$i.log" 2>&1 &
  pids+=($!)
done
# JetStream needs its meta leader before the first stream is made.
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:2379/health >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 3

export ETCD=http://127.0.0.1:2379
export NATS=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 1 2 3; do
  COUNTER_DATA="$work/node-$i" target/debug/examples/counter_node "n$i" "127.0.0.1:$((7000 + i))" \
    >"$work/node-$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 300); do
    grep -q serving "$work/node-$i.log" 2>/dev/null && break
    if ! kill -0 "${pids[$((2 + i))]}" 2>/dev/null; then
      echo "node n$i did not start:" >&2; cat "$work/node-$i.log" >&2; exit 1
    fi
    sleep 0.2
  done
done
# Placed: every shard owned, where placement puts it.
for _ in $(seq 1 150); do
  target/debug/do-cli cluster status --etcd http://127.0.0.1:2379 2>/dev/null |
    grep -q "3 members, 0 unowned, 0 misplaced" && break
  sleep 0.2
done
sleep 1
echo "cluster up: nodes on 127.0.0.1:7001, :7002, :7003; logs in $work"
echo "  cargo run --example counter_client -- alice 1 127.0.0.1:7002"
echo "  cargo run -p do-cli -- cluster status --etcd $ETCD"
wait
