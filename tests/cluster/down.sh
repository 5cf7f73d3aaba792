#!/bin/sh
# Stops, by the pids in their pid files, the nodes tests/cluster/up.sh started in DIR.
set -eu
cd "$(dirname "$0")/../.."
exec python -m tests.cluster.rabbit_cluster down "${1:-/tmp/cogman-rabbit-cluster}"
