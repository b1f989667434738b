#!/bin/sh
# Build the C examples to WASI .wasm files with Debian's clang. The .wasm files are committed, so
# running the examples needs none of this; rebuild after editing a .c file.
#   apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32
# (libclang-rt-*-dev-wasm32 holds the compiler builtins wasm-ld links; match clang's version.)
# CC and SYSROOT override the compiler and the wasi-libc sysroot (Debian installs it in /usr).
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
SYSROOT=${SYSROOT:-/usr}
for src in hello.c wc.c cp.c; do
    out=${src%.c}.wasm
    "$CC" --target=wasm32-wasi --sysroot="$SYSROOT" -O2 -Wall -Wextra -Werror -s -o "$out" "$src"
    echo "built examples/$out ($(wc -c < "$out") bytes)"
done
