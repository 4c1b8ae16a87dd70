#!/usr/bin/env bash
# Debian packages probekit's checks and optional datasets use. Idempotent; never fatal:
# where apt-get is missing or we are not root, say what to install and go on.
set -u
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium fonts-dejavu-core)
[ -d /usr/share/datasets/fashion-mnist ] || want+=(dataset-fashion-mnist)
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "system-deps: not installing ${want[*]} (needs root and apt-get); install them to enable report checks / Fashion-MNIST"
  exit 0
fi
echo "system-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
  || echo "system-deps: apt-get install ${want[*]} failed; report checks / Fashion-MNIST will say so"
exit 0
