#!/usr/bin/env bash
# Smoke test of a tablesnap binary: --version, --help, then a short end-to-end
# run over HTTPS: watch a temp dir, upload to a local S3 server (moto_server
# with a certificate from a CA made for this run, which the binary is told to
# trust with AWS_CA_BUNDLE, as an operator would), check the object and the
# metrics, stop with SIGTERM and check the drain, then restore it with slurp.
#
#   scripts/smoke-binary.sh dist/tablesnap
#
# Needs deno (for a free port), openssl, curl and moto_server
# (pip install "moto[server]"). Used by .github/workflows/ci.yml, release.yml
# and tests/compile_test.ts. Set SMOKE_VERBOSE=1 to echo logs.
set -euo pipefail

binary=${1:?usage: scripts/smoke-binary.sh BINARY}
repo=$(cd "$(dirname "$0")/.." && pwd)
bucket=smoke-bucket
work=$(mktemp -d "${TMPDIR:-/tmp}/tablesnap-smoke.XXXXXX")
s3_pid=""
tablesnap_pid=""

cleanup() {
  if [ -n "$tablesnap_pid" ]; then kill -KILL "$tablesnap_pid" 2>/dev/null || true; fi
  if [ -n "$s3_pid" ]; then
    kill -TERM "$s3_pid" 2>/dev/null || true
    wait "$s3_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "smoke: FAIL: $*" >&2
  for log in "$work"/*.log; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }
  done
  exit 1
}

free_port() {
  deno eval 'const l = Deno.listen({ hostname: "127.0.0.1", port: 0 }); console.log(l.addr.port); l.close();'
}

# Polls a command until it succeeds, for at most $1 seconds.
wait_until() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# 1. --version prints "tablesnap <version from deno.json>".
want=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$repo/deno.json" | head -n 1)
got=$("$binary" --version) || fail "--version exited non-zero"
[ "$got" = "tablesnap $want" ] || fail "--version printed '$got', expected 'tablesnap $want'"
echo "smoke: --version ok ($got)"

# 2. --help exits 0 and shows the usage.
"$binary" --help >"$work/help.txt" || fail "--help exited non-zero"
grep -q "^Usage: tablesnap" "$work/help.txt" || fail "--help has no usage line"
echo "smoke: --help ok"

# 3. End to end over HTTPS against moto on 127.0.0.1, with a private CA.
mkdir -p "$work/data/ks/table-1" "$work/tls"
(
  cd "$work/tls"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=tablesnap smoke CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=tablesnap smoke"
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem
) >"$work/openssl.log" 2>&1 || fail "openssl could not make the test CA"
ca="$work/tls/ca.pem"
# moto refuses anonymous reads of private objects: curl signs its GETs.
signed=(--cacert "$ca" --aws-sigv4 "aws:amz:us-east-1:s3" --user SMOKE:SMOKE)
s3_port=$(free_port)
moto_server -H 127.0.0.1 -p "$s3_port" -c "$work/tls/server.pem" -k "$work/tls/server.key" \
  >"$work/moto.log" 2>&1 &
s3_pid=$!
endpoint="https://127.0.0.1:$s3_port"
wait_until 60 curl -sf --cacert "$ca" -X PUT "$endpoint/$bucket" || fail "moto_server did not start"

metrics_port=$(free_port)
AWS_ACCESS_KEY_ID=SMOKE AWS_SECRET_ACCESS_KEY=SMOKE AWS_REGION=us-east-1 AWS_CA_BUNDLE="$ca" \
  "$binary" --endpoint-url "$endpoint" -n smoke -r -a \
  --metrics-listen "127.0.0.1:$metrics_port" "$bucket" "$work/data" \
  >"$work/tablesnap.log" 2>&1 &
tablesnap_pid=$!
wait_until 30 grep -q "tablesnap started" "$work/tablesnap.log" || fail "tablesnap did not start"

file="$work/data/ks/table-1/nb-1-big-Data.db"
echo "smoke test $(date +%s)" >"$file.tmpwrite"
mv "$file.tmpwrite" "$file" # IN_MOVED_TO, like Cassandra's flush
object="$endpoint/$bucket/smoke:$file"
wait_until 30 curl -sf "${signed[@]}" -o "$work/downloaded" "$object" || fail "object 'smoke:$file' not uploaded"
cmp -s "$file" "$work/downloaded" || fail "uploaded object differs from the file"
wait_until 30 curl -sf "${signed[@]}" -o /dev/null "$object-listdir.json" || fail "index not written"
echo "smoke: upload and index over HTTPS ok"

curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" || fail "/metrics failed"
grep -q '^tablesnap_uploaded_files_total [1-9]' "$work/metrics.txt" ||
  fail "/metrics does not count the upload"
curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/healthz" || fail "/healthz is not 200"
echo "smoke: /metrics and /healthz ok"

kill -TERM "$tablesnap_pid"
status=0
wait "$tablesnap_pid" || status=$?
tablesnap_pid=""
[ "$status" -eq 0 ] || fail "tablesnap exited $status after SIGTERM"
grep -q "tablesnap stopped" "$work/tablesnap.log" || fail "no 'tablesnap stopped' line after SIGTERM"
if [ -n "${SMOKE_VERBOSE:-}" ]; then cat "$work/tablesnap.log" >&2; fi
echo "smoke: SIGTERM drain ok"

# slurp restores the directory; its MD5s are checked on the hashing thread, a
# worker module that the compile task must include in the binary.
AWS_ACCESS_KEY_ID=SMOKE AWS_SECRET_ACCESS_KEY=SMOKE AWS_REGION=us-east-1 AWS_CA_BUNDLE="$ca" \
  "$binary" slurp --endpoint-url "$endpoint" -n smoke "$bucket" "$work/data/ks/table-1" \
  "$work/restored" >"$work/slurp.log" 2>&1 || fail "slurp failed"
cmp -s "$file" "$work/restored/nb-1-big-Data.db" || fail "the restored file differs"
if grep -q "hashing on the main thread" "$work/slurp.log"; then
  fail "the hashing thread did not start"
fi
echo "smoke: slurp over HTTPS ok"
echo "smoke: PASS $binary"
