#!/usr/bin/env bash
# Install what the tests need from Debian when it is missing: Java, ImageJ 1 (libij-java), Xvfb, xdotool,
# Chromium.
# Needs root for apt-get; without root it only reports what is missing.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
[ -f /usr/share/java/ij.jar ] || [ -n "${IJ_JAR:-}" ] || need+=(libij-java)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb xauth)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)  # clicks through the Fiji macros' dialogs in tests
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # renders the evaluation report in tests

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them (sudo apt-get install ${need[*]}) or set IJ_JAR" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
