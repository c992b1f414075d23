"""Files and reports: what the pipeline reads and writes, and how it tells the user.

Images and masks read with one-line errors (``io``), files written atomically (``writing``) into folders a command
may own (``outputs``), the proposal file format (``proposal_files``), the per-image failure policy (``failures``), the
kill tests' crash points (``faults``), progress bars (``progress``), the overlay legend (``legend``) and the Markdown
report (``report_text``). It depends on the contract only.
"""
