#!/usr/bin/env bash
# Debian packages with the real data the demo and tests use: WordNet glosses and Fashion-MNIST.
set -u
need=()
[ -e /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null && exit 0
  echo "apt-get could not install ${need[*]}." >&2
else
  echo "Missing Debian packages: ${need[*]} (needs root and apt-get)." >&2
fi
echo "Install them with:  sudo apt-get install ${need[*]}" >&2
echo "Tests that need them are skipped; 'make demo' needs wordnet-base." >&2
exit 0
