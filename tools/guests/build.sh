#!/bin/sh
# Builds the benchmark guests: Debian's clang, lld and wasi-libc (apt-get install clang lld
# wasi-libc). The .wasm files are committed, so nothing else needs clang.
set -eu
cd "$(dirname "$0")"
for c in *.c; do
    clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "${c%.c}.wasm" "$c"
done
