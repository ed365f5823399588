#!/usr/bin/env bash
# Installs the dependencies, builds Zuma and runs zumad in the foreground with
# config/default.yaml (Ctrl-C stops it). Run as root on Debian 12:
#   sudo bash scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${ZUMA_CONFIG:-config/default.yaml}
bash scripts/install-deps.sh
bash scripts/build.sh build
mkdir -p var

# The iSCSI URLs of the configured LUNs, read from the YAML (portals: and each target's
# iqn:/id: lines); zumad's own startup log lists them as well.
print_urls() {
  awk '
    { sub(/[ \t]#.*/, ""); sub(/^#.*/, "") }
    /^[A-Za-z_]+:/ { in_portals = /^portals:/ }
    in_portals {
      s = $0
      while (match(s, /[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+/)) {
        portals[++np] = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH)
      }
    }
    /iqn:[ \t]*iqn\./ { s = $0; sub(/.*iqn:[ \t]*/, "", s); sub(/[ \t,}].*/, "", s); iqn = s }
    /(^|[-{ \t])id:[ \t]*[0-9]+/ && iqn != "" {
      s = $0; sub(/.*id:[ \t]*/, "", s); sub(/[^0-9].*/, "", s); urls[++nu] = iqn "/" s
    }
    END {
      p = np ? portals[1] : "127.0.0.1:3260"
      sub(/^0\.0\.0\.0:/, "127.0.0.1:", p)
      print "Discovery: iscsi-ls -s iscsi://" p
      for (i = 1; i <= nu; i++) print "LUN:       iscsi://" p "/" urls[i]
    }
  ' "$CONFIG"
}
if [[ -f $CONFIG ]]; then
  print_urls
else
  echo "Discovery: iscsi-ls -s iscsi://127.0.0.1:3260"
  echo "LUN:       iscsi://127.0.0.1:3260/iqn.2026-11.org.zuma:default/0"
  echo "LUN:       iscsi://127.0.0.1:3260/iqn.2026-11.org.zuma:default/1"
fi
echo "Starting zumad --config $CONFIG (Ctrl-C to stop)"
exec build/apps/zumad --config "$CONFIG"
