"""The method's rules (shared/METHOD.md), as pure numpy functions, in data-path order."""
