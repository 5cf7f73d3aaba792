#!/bin/sh
# A three-node RabbitMQ cluster on 127.0.0.1:5681-5683 for trying cogman by hand (the tests start their own).
# Usage: tests/cluster/up.sh [DIR]   (default /tmp/cogman-rabbit-cluster); stop it with tests/cluster/down.sh [DIR].
set -eu
cd "$(dirname "$0")/../.."
exec python -m tests.cluster.rabbit_cluster up "${1:-/tmp/cogman-rabbit-cluster}"
