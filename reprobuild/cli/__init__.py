"""The `reprobuild` command line: argument parsing, rich output, exit codes."""
