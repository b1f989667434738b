"""The compiler: wasm function bodies to x86-64 machine code (see ``codegen``) and the driver
that assembles a whole module into an ELF shared object (``driver``)."""
