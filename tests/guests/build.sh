#!/bin/sh
# Builds the WASI test guests with Debian's clang, lld and wasi-libc
#   apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32
# The .wasm files are committed, so the tests need none of this; rebuild after editing a .c.
# Each NAME.stdout is what `wasmtime run` printed (tests/test_wasi_guests.py says how to run it
# and where pylucet knowingly differs).
set -eu
cd "$(dirname "$0")"
for c in *.c; do
    clang --target=wasm32-wasi --sysroot=/usr -O1 -Wall -Wno-pointer-sign -Wno-unused-result -s -o "${c%.c}.wasm" "$c"
    echo "built tests/guests/${c%.c}.wasm ($(wc -c < "${c%.c}.wasm") bytes)"
done
