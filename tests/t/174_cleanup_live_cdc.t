#!/usr/bin/env bash
# Test 171 with CDC relays: 2-second partitions dropped by outboxd's janitor
# while bin/orders writes and the streaming relay publishes from the slot
# (the publication names the partitioned root), with a PostgreSQL restart
# half-way; nothing is lost.
RELAY_MODE=cdc exec bash "$(dirname "$0")/171_cleanup_live.t"
