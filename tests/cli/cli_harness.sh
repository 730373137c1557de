# The command-line tests' harness, sourced after `bin` is set: a scratch folder
# ($tmp, removed at exit), pass/fail counts, and expect.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...: exit status CODE, stderr one line matching PATTERN
expect() {
  local code=$1 pat=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null; local rc=$?
  if [ "$rc" != "$code" ]; then bad "$* -> exit $rc, expected $code; stderr: $(head -c 300 "$tmp/err")"; return; fi
  if [ -n "$pat" ]; then
    local lines; lines=$(grep -c . "$tmp/err")
    if [ "$lines" != 1 ]; then bad "$* -> $lines stderr lines, expected 1: $(cat "$tmp/err")"; return; fi
    grep -qE -- "$pat" "$tmp/err" || { bad "$* -> stderr '$(cat "$tmp/err")' does not match '$pat'"; return; }
  fi
  ok
}
