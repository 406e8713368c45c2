#!/usr/bin/env bash
# Runs watchstore's loom models and the negative control, and prints each
# model's wall time. Exits non-zero if a model fails, if the control passes,
# or if the control fails for another reason than a violated property.
#
# Usage: loom-tests/run.sh [--extended]
#   --extended  runs two_writers_and_reader at 2 preemptions instead of 1
#               (about 3 minutes more on two cores).
#
# RUSTFLAGS is replaced, not extended. Builds go to $WATCHSTORE_LOOM_TARGET_DIR
# (default: target/loom in the workspace) and, for the control, to the same
# path with a "-control" suffix, so neither rebuilds the normal target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

extended=0
case "${1:-}" in
    "") ;;
    --extended) extended=1 ;;
    *)
        echo "usage: $0 [--extended]" >&2
        exit 2
        ;;
esac

target_dir="${WATCHSTORE_LOOM_TARGET_DIR:-$PWD/target/loom}"
loom_flags="--cfg loom --cfg crossbeam_loom"
# A violated property panics with this prefix (loom-tests/src/lib.rs).
violation="model property violated"

# One model per line: test file, test name, preemption bound ("exhaustive"
# for none). Each model's doc comment states the same bound.
models=(
    "handoff handoff exhaustive"
    "ring ring_overwrite 5"
    "ring ring_reclaim 4"
    "wakeup wakeup 5"
    "writers two_writers 5"
    "close close_races_watch exhaustive"
    "close restore_races_starting_watch exhaustive"
    "close restore_wakes_blocked_watch 5"
)
if [[ $extended == 1 ]]; then
    models+=("writers two_writers_and_reader 2")
else
    models+=("writers two_writers_and_reader 1")
fi

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
unexpected=0

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

seconds_since() {
    local elapsed=$(($(now_ms) - $1))
    printf '%d.%01d s' $((elapsed / 1000)) $((elapsed % 1000 / 100))
}

# build FLAGS TARGET_DIR: compiles every model in release mode.
build() {
    local start
    start=$(now_ms)
    RUSTFLAGS="$1" CARGO_TARGET_DIR="$2" \
        cargo test --release -p watchstore-loom-tests --no-run --quiet
    echo "build ($1): $(seconds_since "$start")"
}

# run_model FLAGS TARGET_DIR FILE NAME BOUND EXPECT: runs one model and
# checks that it passes (EXPECT=pass) or fails on a property (EXPECT=fail).
run_model() {
    local flags=$1 dir=$2 file=$3 name=$4 bound=$5 expect=$6
    local log="$log_dir/$name-$expect.log"
    local bound_env=(-u LOOM_MAX_PREEMPTIONS)
    if [[ $bound != exhaustive ]]; then
        bound_env=(LOOM_MAX_PREEMPTIONS="$bound")
    fi

    local start status=0
    start=$(now_ms)
    env "${bound_env[@]}" RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
        cargo test --release --quiet -p watchstore-loom-tests --test "$file" -- \
        "$name" --exact --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
    local elapsed
    elapsed=$(seconds_since "$start")
    local executions
    executions=$(grep -o '[0-9]* executions checked' "$log" | head -n 1 || true)

    local result
    if [[ $expect == pass && $status == 0 ]]; then
        result="ok"
    elif [[ $expect == fail && $status != 0 ]] && grep -q "$violation" "$log"; then
        result="failed as expected: $(grep -m 1 "$violation" "$log")"
    else
        result="UNEXPECTED (exit status $status, expected to $expect)"
        unexpected=1
    fi
    printf '%-30s %-11s %9s  %s%s\n' "$name" "$bound" "$elapsed" "$result" \
        "${executions:+ ($executions)}"
    if [[ $result == UNEXPECTED* ]]; then
        tail -n 40 "$log"
    fi
}

echo "loom models (RUSTFLAGS=\"$loom_flags\", target dir $target_dir)"
build "$loom_flags" "$target_dir"
for model in "${models[@]}"; do
    # shellcheck disable=SC2086 # split the line into its three fields
    run_model "$loom_flags" "$target_dir" $model pass
done

control_flags="$loom_flags --cfg watchstore_consul_order"
echo "negative control: the handoff in Consul's order must fail model handoff"
build "$control_flags" "$target_dir-control"
run_model "$control_flags" "$target_dir-control" handoff handoff exhaustive fail

if [[ $unexpected != 0 ]]; then
    echo "loom-tests/run.sh: unexpected results above" >&2
    exit 1
fi
echo "loom-tests/run.sh: all models passed and the control failed as expected"
