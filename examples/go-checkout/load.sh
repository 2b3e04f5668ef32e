#!/bin/sh
# Sends GET /orders to the checkout service for a while, each request a new trace, and a few
# requests under one known trace (the one the README looks for).
#
#   load.sh [address] [seconds]
set -eu
address=${1:-127.0.0.1:8090}
seconds=${2:-20}
known="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

end=$(( $(date +%s) + seconds ))
i=0
while [ "$(date +%s)" -lt "$end" ]; do
    if [ $((i % 10)) -eq 5 ]; then
        curl -fsS -o /dev/null -H "traceparent: $known" "http://$address/orders"
    else
        curl -fsS -o /dev/null "http://$address/orders"
    fi
    i=$((i + 1))
done
echo "sent $i requests; the known trace is 0af7651916cd43dd8448eb211c80319c"
