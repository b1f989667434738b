"""pylucet: a WebAssembly ahead-of-time compiler and sandboxing runtime in pure Python."""
