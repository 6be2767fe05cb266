"""`python -m vecdb ...`: the `vecdb` command without the console script on PATH."""

from vecdb.cli.main import main

if __name__ == "__main__":
    main()
