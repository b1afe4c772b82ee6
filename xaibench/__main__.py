"""Allow ``python -m xaibench``."""

from xaibench.cli import main

if __name__ == "__main__":
    main()
