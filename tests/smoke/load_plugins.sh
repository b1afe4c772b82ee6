#!/usr/bin/env bash
# Smoke test of the plugin escape hatch: XAIBENCH_LOAD_PLUGINS= (empty) hides every third-party
# plugin from every command, while the built-ins stay. Run by tests/test_plugin_loading.py with
# PYTHON set to the test interpreter; needs at least one third-party plugin installed.
set -euo pipefail
py="${PYTHON:-python}"
third_party='import json, sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin) if not p["builtin"])))'
builtin='import json, sys; print(sum(1 for p in json.load(sys.stdin) if p["builtin"]))'

all=$("$py" -m xaibench plugins | "$py" -c "$third_party")
[ -n "$all" ] || { echo "FAIL: no third-party plugin is installed, nothing to hide" >&2; exit 1; }

none=$(XAIBENCH_LOAD_PLUGINS= "$py" -m xaibench plugins | "$py" -c "$third_party")
[ -z "$none" ] || { echo "FAIL: XAIBENCH_LOAD_PLUGINS= still loads: $none" >&2; exit 1; }
kept=$(XAIBENCH_LOAD_PLUGINS= "$py" -m xaibench plugins | "$py" -c "$builtin")
[ "$kept" -gt 0 ] || { echo "FAIL: the built-ins disappeared too" >&2; exit 1; }

# Their components are gone from listings and from runs (a run names the missing method).
# (grep reads everything, not -q: with pipefail, xaibench still writing when grep -q has quit
# fails the pipeline with a broken pipe.)
if XAIBENCH_LOAD_PLUGINS= "$py" -m xaibench ls saliency | grep '^example_method ' >/dev/null; then
    echo "FAIL: example_method is still listed" >&2; exit 1
fi
"$py" -m xaibench ls saliency | grep '^example_method ' >/dev/null \
    || { echo "FAIL: example_method is not listed without the variable" >&2; exit 1; }
out="$(mktemp -d)/never-written"
set +e
err=$(XAIBENCH_LOAD_PLUGINS= "$py" -m xaibench run osteoporosis --saliency example_method \
    --quiet --out "$out" 2>&1 >/dev/null)
code=$?
set -e
[ "$code" -eq 2 ] || { echo "FAIL: run exited $code, expected 2" >&2; exit 1; }
case "$err" in
    *"unknown saliency method 'example_method'"*) ;;
    *) echo "FAIL: unexpected error: $err" >&2; exit 1 ;;
esac
[ ! -e "$out" ] || { echo "FAIL: the refused run created $out" >&2; exit 1; }
rmdir "$(dirname "$out")"
echo "ok: XAIBENCH_LOAD_PLUGINS= hid: $all"
