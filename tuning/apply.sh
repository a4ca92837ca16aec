#!/usr/bin/env bash
# Applies martlet's kernel and limits profile on a bare-metal host (as root).
# Writes /etc/sysctl.d/60-martlet.conf and /etc/security/limits.d/martlet.conf, then loads
# the sysctls. Prints each setting before and after so the change is on record.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
keys=$(grep -E '^[a-z]' "$here/sysctl-martlet.conf" | cut -d= -f1 | tr -d ' ')
echo "before:"; for k in $keys; do printf '  %s = %s\n' "$k" "$(sysctl -n "$k" 2>/dev/null || echo n/a)"; done
install -m 0644 "$here/sysctl-martlet.conf" /etc/sysctl.d/60-martlet.conf
install -m 0644 "$here/limits-martlet.conf" /etc/security/limits.d/martlet.conf
sysctl -q -p /etc/sysctl.d/60-martlet.conf || echo "some keys are read-only here (containers); see above" >&2
echo "after:"; for k in $keys; do printf '  %s = %s\n' "$k" "$(sysctl -n "$k" 2>/dev/null || echo n/a)"; done
echo "systemd services ignore limits.d: set LimitNOFILE=2097152 and LimitMEMLOCK=infinity in the unit."
