"""Run pylucet-wasi with the stand-in pylucet.wasi of wasi_stub.py: python3 THIS ARGS..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wasi_stub  # noqa: E402

wasi_stub.install()
from pylucet.cli.wasi import main  # noqa: E402

sys.exit(main())
