"""x86-64 specifics: register numbers and the machine code encoder."""
