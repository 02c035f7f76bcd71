"""`python -m emulator --host 127.0.0.1 --port 8080`"""

import argparse

from emulator.app import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Run the TabPFN cloud emulator (stand-in model, not TabPFN).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
