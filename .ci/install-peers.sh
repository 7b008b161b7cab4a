#!/usr/bin/env bash
# Installs the real peers the interop suite talks to: Debian's node exporter,
# Prometheus, Pushgateway; Python's prometheus_client. Idempotent.
set -euo pipefail
need_apt=()
command -v prometheus-node-exporter >/dev/null || need_apt+=(prometheus-node-exporter)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' post-install scripts try to start services; there is no
  # init system here, and the tests start their own on 127.0.0.1.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
python3 -c 'import prometheus_client' 2>/dev/null || pip install -q prometheus-client
echo "peers: $(prometheus-node-exporter --version 2>&1 | head -1)"
echo "peers: $(prometheus --version 2>&1 | head -1)"
echo "peers: $(prometheus-pushgateway --version 2>&1 | head -1)"
echo "peers: prometheus_client $(python3 -c 'import prometheus_client, importlib.metadata as m; print(m.version("prometheus-client"))')"
