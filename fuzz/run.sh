#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (first argument) one after the other, then prints one
# line per target (execs, execs/s, corpus, findings) and fails if any target found a crash,
# a timeout or an out-of-memory. `make fuzz FUZZ_SECONDS=...` and `make fuzz-smoke` call it.
#
# New corpus entries go to target/fuzz/corpus/<target> (the committed seeds in
# fuzz/corpus/<target> are only read); findings go to target/fuzz/artifacts/<target>/,
# each reproducible with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` (or by
# running fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>).
# FUZZ_TARGETS narrows the set; FUZZ_SANITIZER (default none: the crates are safe Rust, and
# libFuzzer still catches panics, aborts, stack overflows, hangs and memory blow-ups)
# selects cargo-fuzz's sanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-config token condition jsonrpc documents otlp}"
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -C passes=sancov-module); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
out=target/fuzz
mkdir -p "$out"

# FUZZ_NO_BUILD=1 runs the binaries already built (a campaign after a source change that
# should not wait for a rebuild).
host=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  if [ "$sanitizer" = none ]; then
    # What `cargo fuzz build --sanitizer none` runs, spelled out so `make test` needs no
    # extra tool (installing cargo-fuzz costs CI minutes): SanitizerCoverage
    # instrumentation for libFuzzer, --cfg fuzzing, debug assertions.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Ccodegen-units=1" \
      cargo build --manifest-path fuzz/Cargo.toml --release --target "$host" --bins
  else
    # Sanitizers need cargo-fuzz's -Zsanitizer handling (`make fuzz-tools` installs it).
    cargo fuzz build --sanitizer "$sanitizer"
  fi
fi
bin=fuzz/target/$host/release

failed=0
summary=()
for t in $targets; do
  # findings of earlier runs are not this run's
  rm -rf "$out/artifacts/$t"
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t" fuzz/corpus/"$t"
  log="$out/$t.log"
  echo "fuzz: $t for ${seconds}s"
  status=0
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a memory blow-up.
  "$bin/$t" "$out/corpus/$t" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t/" >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "$out/corpus/$t" -type f | wc -l)
  findings=$(find "$out/artifacts/$t" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (exit $status); last lines of $log:"
    tail -n 30 "$log"
  fi
  summary+=("$(printf '%-10s execs=%-10s exec/s=%-7s corpus=%-6s findings=%s' \
    "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$findings")")
done

echo
printf '%s\n' "${summary[@]}"
n=$(wc -w <<<"$targets")
echo "fuzz: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
