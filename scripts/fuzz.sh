#!/usr/bin/env bash
# Runs every fuzzer in fuzz/ for a bounded time: ./scripts/fuzz.sh [seconds-per-target] [target...]
# (default 30 s, every target). Debug build on the stable toolchain with `--sanitizer none`
# (DEPENDENCIES.md); the build goes to fuzz/target/ and is reused across runs. Each target starts
# from its seeds (fuzz/seeds/<target>/) and the corpus earlier runs grew (fuzz/corpus/<target>/).
# Exits non-zero on the first crash, naming the input that caused it (fuzz/artifacts/<target>/).
# docs/operations.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
shift || true
case "$secs" in '' | *[!0-9]*) echo "fuzz.sh: seconds-per-target must be a number, got '$secs'" >&2; exit 2 ;; esac
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
flags=(--dev --sanitizer none)
echo "==> cargo fuzz build (${targets[*]})"
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "==> fuzz $t for ${secs}s"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    before=$(find "artifacts/$t" -type f | wc -l)
    if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -close_fd_mask=3 2>"corpus/.$t.log"; then
        tail -n 40 "corpus/.$t.log" >&2
        crash=$(grep -o 'artifacts/[^ ]*' "corpus/.$t.log" | tail -n 1 || true)
        echo "fuzz.sh: $t FAILED; the input: fuzz/${crash:-artifacts/$t/ (see the log above)}" >&2
        echo "fuzz.sh: reproduce: cd fuzz && cargo fuzz run ${flags[*]} $t ${crash:-<the input>}" >&2
        exit 1
    fi
    after=$(find "artifacts/$t" -type f | wc -l)
    if [ "$after" -ne "$before" ]; then
        echo "fuzz.sh: $t wrote a new artifact to fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "corpus/.$t.log" | sed "s/^/    $t: /" || true
done
echo "==> fuzz: ${#targets[@]} targets, ${secs}s each, no crashes"
