#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, the Python venv, the Kafka jars.
# Safe to run twice at once (the second waits for the first), and it repairs what an interrupted
# run left half done: the jars are fetched into a temporary folder and moved into place whole.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${KPI_STREAM_CACHE:-$HOME/.cache/kpi-stream}"
KAFKA_DIR="$CACHE/kafka-4.1.1"
KAFKA_LIBS="$KAFKA_DIR/libs"
JAR_LIST="$KAFKA_DIR/jars.txt"  # written last: the fetch is complete when every jar it lists is there

step="starting"
trap 'echo "setup: failed while $step; fix the cause above and run scripts/setup.sh again" >&2' ERR
mkdir -p "$CACHE"
exec 9>"$CACHE/setup.lock"
if ! flock -n 9; then
  echo "setup: another set-up is running; waiting for it"
  flock 9
fi

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# the dashboard's browser test (tests/e2e/test_dashboard_browser.py) drives Debian's headless chromium
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  step="installing the Debian packages ${need_apt[*]} (apt-get)"
  echo "setup: installing ${need_apt[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # The packages start system services on their default ports; the project runs its own.
  for service in redis-server prometheus; do
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true; fi
    if command -v service >/dev/null 2>&1; then $SUDO service "$service" stop >/dev/null 2>&1 || true; fi
  done
fi

step="creating the Python virtual environment .venv"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.kpi-stream-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step="installing the package and its extras into .venv (pip, from PyPI)"
  echo "setup: installing the package and its test, bench and rocksdb extras into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,bench,rocksdb]'
  echo "$want" > "$stamp"
fi

kafka_jars_complete() {
  [ -s "$JAR_LIST" ] || return 1
  while read -r jar; do [ -s "$KAFKA_LIBS/$jar" ] || return 1; done < "$JAR_LIST"
}

if ! kafka_jars_complete; then
  step="fetching the Apache Kafka 4.1.1 jars from Maven Central (mvn dependency:copy-dependencies)"
  echo "setup: fetching Apache Kafka 4.1.1 jars from Maven Central into $KAFKA_LIBS"
  fetch="$(mktemp -d "$CACHE/kafka-fetch.XXXXXX")"
  mvn -q -f deploy/local/pom.xml dependency:copy-dependencies -DoutputDirectory="$fetch/libs" -DincludeScope=runtime
  step="checking the fetched Kafka jars (each must be a whole zip file)"
  ls "$fetch/libs"/kafka_2.13-4.1.1.jar "$fetch/libs"/kafka-clients-4.1.1.jar >/dev/null
  for jar in "$fetch/libs"/*.jar; do python3 -m zipfile -t "$jar" >/dev/null; done
  (cd "$fetch/libs" && ls -1 -- *.jar) > "$fetch/jars.txt"
  same_jars_in_place=yes
  while read -r jar; do
    cmp -s "$fetch/libs/$jar" "$KAFKA_LIBS/$jar" || { same_jars_in_place=no; break; }
  done < "$fetch/jars.txt"
  if [ "$same_jars_in_place" = yes ]; then
    # a folder from before jars.txt existed: complete already, and brokers may be running from it
    step="recording the Kafka jar list ($JAR_LIST)"
    mv "$fetch/jars.txt" "$JAR_LIST"
    rm -rf "$fetch"
  else
    step="moving the Kafka jars into place ($KAFKA_DIR)"
    rm -rf "$KAFKA_DIR.old"
    if [ -e "$KAFKA_DIR" ]; then mv "$KAFKA_DIR" "$KAFKA_DIR.old"; fi
    mv "$fetch" "$KAFKA_DIR"
    rm -rf "$KAFKA_DIR.old"
  fi
fi
