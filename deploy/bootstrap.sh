#!/usr/bin/env bash
# Installs what Tollgate needs and is missing; safe to run again (each step checks first).
set -euo pipefail
cd "$(dirname "$0")/.."

# `--compose`: only what `make compose-up` needs on top: Debian's Docker engine (20.10) and
# client, docker-compose (1.29) and debootstrap for the local images' base.
if [[ ${1:-} == --compose ]]; then
  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "missing system packages: ${need[*]}; install them (apt-get install ${need[*]})" >&2
      exit 1
    fi
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  exit 0
fi

need_apt=()
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v redis-server >/dev/null || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# Headless Chromium for the console's end-to-end tests (Playwright drives Debian's build).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v runuser >/dev/null || need_apt+=(util-linux)
command -v setsid >/dev/null || need_apt+=(util-linux)
# The interpreter the project runs on: Debian's python3 (see below).
[[ -n ${TOLLGATE_PYTHON:-} || -x /usr/bin/python3 ]] || need_apt+=(python3)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "installing uv"
  python3 -m pip install --quiet --disable-pip-version-check "uv==0.13.8" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "uv==0.13.8"
fi
if command -v uv >/dev/null; then UV=uv; else UV="python3 -m uv"; fi
# The main environment on Debian's python3 when it is 3.11 or newer: built with profile-guided
# and link-time optimisation (as the container images run it), where a plain build such as
# pyenv's is not: the gateway spends about a seventh less CPU per request on it. Else the
# first Python uv finds; TOLLGATE_PYTHON (a path or a version) chooses another.
python=${TOLLGATE_PYTHON:-}
if [[ -z $python ]] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  python=/usr/bin/python3
fi
$UV sync --frozen --quiet ${python:+--python "$python"}
# Real clients in their own locked environments: Daft (it pins openai 2.x) and the openai
# SDK 1.x; the main environment tests with openai 3.x.
for client in tests/clients/*/; do $UV sync --frozen --quiet --project "$client"; done
$UV run --frozen python -c "from deploy.servers import fetch_kafka; fetch_kafka()"
